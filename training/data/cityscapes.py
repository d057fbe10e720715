"""Cityscapes (target domain): the official leftImg8bit/gtFine layout, or explicit file pairs.

Layout: `<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` and
`<root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`; the sample name is `<stem>`
(e.g. `aachen_000000_000019`). Label ids become train ids via `model.class_sets.label_id_lut`;
with `num_classes=16` (SYNTHIA protocol) they become 16-class indices, terrain/truck/train -> 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.data.base import SampleFiles, SegmentationDataset, require_dir, select_names
from training.data.errors import DatasetError
from training.data.labels import cityscapes_label_lut

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SPLITS = ("train", "val")


def sample_name(image_path: Path) -> str:
    """`aachen_000000_000019_leftImg8bit.png` -> `aachen_000000_000019`; other files: the stem."""
    name = image_path.name
    return name[: -len(IMAGE_SUFFIX)] if name.endswith(IMAGE_SUFFIX) else image_path.stem


def discover_cityscapes(root: Path, split: str, labeled: bool = True) -> list[SampleFiles]:
    """List the samples of one split in sorted order, checking each image has its labelIds file.

    Raises DatasetError for a missing root/split folder, no images, an image without its label
    and (when labeled) a labelIds file without its image.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    require_dir(root, "Cityscapes root")
    image_dir = require_dir(root / "leftImg8bit" / split, "Cityscapes image")
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DatasetError(f"{image_dir}: no *{IMAGE_SUFFIX} images found")
    if not labeled:
        return [SampleFiles(sample_name(p), p, None) for p in images]
    label_dir = require_dir(root / "gtFine" / split, "Cityscapes label")
    samples = []
    for image in images:
        name = sample_name(image)
        label = label_dir / image.parent.name / f"{name}{LABEL_SUFFIX}"
        if not label.is_file():
            raise DatasetError(f"{image}: label file {label} not found")
        samples.append(SampleFiles(name, image, label))
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
        resize: optional (H, W); captions_file: optional JSON {name: caption}.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        num_classes: int = 19,
        *,
        labeled: bool = True,
        names: Sequence[str] | None = None,
        resize: tuple[int, int] | None = None,
        captions_file: str | Path | None = None,
    ) -> None:
        lut = cityscapes_label_lut(num_classes)
        samples = select_names(discover_cityscapes(Path(root), split, labeled), names)
        super().__init__(samples, lut, resize=resize, captions_file=captions_file)
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
