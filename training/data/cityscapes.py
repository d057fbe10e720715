"""Cityscapes (target domain): the official leftImg8bit/gtFine layout, or explicit file pairs.

Layout: `<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` (or `.jpg`) and
`<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`; the sample name is `<stem>`
(e.g. `aachen_000000_000019`). Unlabeled frames may also come from the other image folders of the
official layout (`leftImg8bit_sequence`, `leftImg8bit_unlabeled`, ...: `extra_dirs`). Frames may
have any size; a label must have its image's size (checked from the file headers when the dataset
is built, so a wrong file is named before training starts). Label ids become train ids via
`model.class_sets.label_id_lut`;
with `num_classes=16` (SYNTHIA protocol) they become 16-class indices, terrain/truck/train -> 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from training.data.base import SampleFiles, SegmentationDataset, require_dir, select_names
from training.data.errors import DatasetError
from training.data.labels import cityscapes_label_lut

IMAGE_SUFFIXES = ("_leftImg8bit.png", "_leftImg8bit.jpg")
LABEL_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val")
LABELED_DIR = "leftImg8bit"


def sample_name(image_path: Path) -> str:
    """`aachen_000000_000019_leftImg8bit.png` (or `.jpg`) -> `aachen_000000_000019`; else the stem."""
    name = image_path.name
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return image_path.stem


def _find_images(image_dir: Path) -> list[Path]:
    """Every `<city>/*_leftImg8bit.{png,jpg}` under `image_dir`, sorted by path."""
    return sorted(p for suffix in IMAGE_SUFFIXES for p in image_dir.glob(f"*/*{suffix}"))


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot read image header ({exc})") from exc


def check_label_size(sample: SampleFiles) -> None:
    """Raise DatasetError naming both files if the label's size is not the image's."""
    if sample.label is None:
        return
    image, label = _header_size(sample.image), _header_size(sample.label)
    if image != label:
        raise DatasetError(
            f"{sample.label}: label size {label[0]}x{label[1]} differs from image "
            f"{sample.image} size {image[0]}x{image[1]}"
        )


def discover_images(root: Path, split: str, image_dir: str = LABELED_DIR) -> list[SampleFiles]:
    """The unlabeled samples of `<root>/<image_dir>/<split>/<city>/`, sorted; DatasetError if none."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    require_dir(root, "Cityscapes root")
    folder = require_dir(root / image_dir / split, "Cityscapes image")
    images = _find_images(folder)
    if not images:
        raise DatasetError(f"{folder}: no *{'/'.join(IMAGE_SUFFIXES)} images found")
    return [SampleFiles(sample_name(p), p, None) for p in images]


def discover_cityscapes(root: Path, split: str, labeled: bool = True) -> list[SampleFiles]:
    """List the samples of one split in sorted order, checking each image has its labelIds file.

    Raises DatasetError for a missing root/split folder, no images, an image without its label,
    a label whose size is not its image's, and (when labeled) a labelIds file without its image.
    """
    unlabeled = discover_images(root, split)
    if not labeled:
        return unlabeled
    images = [s.image for s in unlabeled]
    label_dir = require_dir(root / "gtFine" / split, "Cityscapes label")
    samples = []
    for image in images:
        name = sample_name(image)
        label = label_dir / image.parent.name / f"{name}{LABEL_SUFFIX}"
        if not label.is_file():
            raise DatasetError(f"{image}: label file {label} not found")
        samples.append(SampleFiles(name, image, label))
        check_label_size(samples[-1])
    expected = {s.label for s in samples}
    orphans = [p for p in sorted(label_dir.glob(f"*/*{LABEL_SUFFIX}")) if p not in expected]
    if orphans:
        raise DatasetError(f"{orphans[0]}: label without its image ({len(orphans)} such file(s))")
    return samples


class CityscapesDataset(SegmentationDataset):
    """Cityscapes `train`/`val` in the official layout; items as described in `base.Example`.

    Args:
        root: folder containing `leftImg8bit/` and `gtFine/`.
        split: "train" or "val".
        num_classes: 19 (train ids) or 16 (SYNTHIA protocol indices).
        labeled: False returns images only (no `label` key; gtFine is not needed).
        names: optional subset of sample names (e.g. one side of a labeled/unlabeled split).
        extra_dirs: unlabeled only: more image folders of the layout (e.g. `leftImg8bit_sequence`,
            `leftImg8bit_unlabeled`) whose every frame of `split` is added after the named ones.
        resize: optional (H, W); captions_file: optional JSON {name: caption}; cache: keep decoded
            (resized) frames in memory (small sets read many times).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_classes: int = 19,
        *,
        labeled: bool = True,
        names: Sequence[str] | None = None,
        extra_dirs: Sequence[str] = (),
        resize: tuple[int, int] | None = None,
        captions_file: str | Path | None = None,
        cache: bool = False,
    ) -> None:
        if extra_dirs and labeled:
            raise ValueError("extra_dirs hold unlabeled frames: use them with labeled=False")
        lut = cityscapes_label_lut(num_classes)
        samples = select_names(discover_cityscapes(Path(root), split, labeled), names)
        for folder in extra_dirs:
            samples += discover_images(Path(root), split, folder)
        super().__init__(samples, lut, resize=resize, captions_file=captions_file, cache=cache)
        self.split = split
        self.num_classes = num_classes


def cityscapes_from_pairs(
    pairs: Sequence[tuple[str | Path, str | Path | None]],
    num_classes: int = 19,
    *,
    resize: tuple[int, int] | None = None,
    captions_file: str | Path | None = None,
) -> SegmentationDataset:
    """A Cityscapes-format dataset from explicit (image_path, labelIds_path) pairs, kept in order.

    Use `None` as every label path for an unlabeled set of photos. Names come from the image file
    name (`sample_name`) and must be unique. Missing files raise DatasetError.
    """
    samples = [
        SampleFiles(sample_name(Path(img)), Path(img), None if lbl is None else Path(lbl))
        for img, lbl in pairs
    ]
    return SegmentationDataset(
        samples, cityscapes_label_lut(num_classes), resize=resize, captions_file=captions_file
    )
