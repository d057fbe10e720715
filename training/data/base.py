"""The shared dataset core: a validated list of (image, label) files decoded on access.

Subclasses only discover files and choose the label reader and lookup table. Construction checks
pairing and file existence (cheap); decoding errors and image/label size mismatches surface in
`__getitem__`. Nothing is ever dropped silently: every problem raises `DatasetError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
from torch.utils.data import Dataset

from training.data.captions import check_coverage, load_captions
from training.data.errors import DatasetError
from training.data.io import check_resize, read_image, read_index_label, resize_image, resize_label

LabelReader = Callable[[Path], np.ndarray]


class Example(TypedDict):
    """One item: `image` uint8 (H, W, 3) RGB; `label` uint8 (H, W) train ids, 255 = ignore
    (absent for unlabeled data); `name` the sample id; `caption` ("" without a captions file)."""

    image: np.ndarray
    label: NotRequired[np.ndarray]
    name: str
    caption: str


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample; `label` is None for unlabeled data."""

    name: str
    image: Path
    label: Path | None


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a directory, else raise DatasetError naming it."""
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} directory not found")
    return path


def select_names(samples: list[SampleFiles], names: Sequence[str] | None) -> list[SampleFiles]:
    """Keep the samples named in `names` (in `names` order); an unknown name is a DatasetError."""
    if names is None:
        return samples
    by_name = {s.name: s for s in samples}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DatasetError(f"{len(unknown)} requested name(s) not in the dataset, e.g. {unknown[:5]}")
    return [by_name[n] for n in names]


def validate_samples(samples: Sequence[SampleFiles]) -> None:
    """Check non-emptiness, unique names, all-or-none labels and that every file exists."""
    if not samples:
        raise DatasetError("no images found")
    seen: set[str] = set()
    for s in samples:
        if s.name in seen:
            raise DatasetError(f"{s.image}: duplicate sample name {s.name!r}")
        seen.add(s.name)
        if not s.image.is_file():
            raise DatasetError(f"{s.image}: image file not found")
        if s.label is not None and not s.label.is_file():
            raise DatasetError(f"{s.image}: label file {s.label} not found")
    labeled = {s.label is not None for s in samples}
    if len(labeled) > 1:
        raise DatasetError("samples mix labeled and unlabeled images; build two datasets instead")


class SegmentationDataset(Dataset):
    """A list of image (+ label) files returning `Example` dicts; see the module docstring.

    Args:
        samples: the files; all labeled or all unlabeled.
        label_lut: lookup table from raw label values to train ids (uint8, 255 = ignore);
            required for labeled samples.
        label_reader: decodes a label file to raw (H, W) values (default: 'L'/'P' indices).
        resize: optional (H, W); images bilinear, labels nearest (cv2).
        captions_file: optional JSON {name: caption} that must cover every sample.
        cache: keep every decoded (and resized) item in memory after its first read; for small
            sets read thousands of times (the real target frames), where decoding a 2048x1024
            PNG would cost more than the training step. Each loader worker keeps its own cache.
    """

    def __init__(
        self,
        samples: Sequence[SampleFiles],
        label_lut: np.ndarray | None = None,
        label_reader: LabelReader = read_index_label,
        resize: tuple[int, int] | None = None,
        captions_file: str | Path | None = None,
        cache: bool = False,
    ) -> None:
        self.samples = list(samples)
        self._cache: dict[int, Example] | None = {} if cache else None
        validate_samples(self.samples)
        if self.samples[0].label is not None and label_lut is None:
            raise ValueError("label_lut is required for labeled samples")
        self.label_lut = label_lut
        self.label_reader = label_reader
        self.resize = check_resize(resize)
        self.captions: dict[str, str] = {}
        if captions_file is not None:
            self.captions = load_captions(Path(captions_file))
            check_coverage(self.captions, self.names, Path(captions_file))

    @property
    def names(self) -> list[str]:
        """Sample names in dataset order."""
        return [s.name for s in self.samples]

    @property
    def labeled(self) -> bool:
        """True if items carry a `label`."""
        return self.samples[0].label is not None

    def __len__(self) -> int:
        return len(self.samples)

    def load_label(self, path: Path) -> np.ndarray:
        """Decode a label file to uint8 (H, W) train ids (255 = ignore)."""
        if self.label_lut is None:
            raise DatasetError(f"{path}: this dataset has no label lookup table")
        return self.label_lut[self.label_reader(path)]

    def __getitem__(self, index: int) -> Example:
        if self._cache is None:
            return self._read(index)
        if index not in self._cache:
            self._cache[index] = self._read(index)
        return dict(self._cache[index])  # type: ignore[return-value]  # callers may add keys

    def _read(self, index: int) -> Example:
        sample = self.samples[index]
        image = read_image(sample.image)
        example: Example = {
            "image": image,
            "name": sample.name,
            "caption": self.captions.get(sample.name, ""),
        }
        if sample.label is not None:
            label = self.load_label(sample.label)
            if label.shape != image.shape[:2]:
                raise DatasetError(
                    f"{sample.label}: label size {label.shape[1]}x{label.shape[0]} differs from image "
                    f"{sample.image} size {image.shape[1]}x{image.shape[0]}"
                )
            example["label"] = resize_label(label, self.resize) if self.resize else label
        if self.resize:
            example["image"] = resize_image(image, self.resize)
        return example


def discover_by_filename(image_dir: Path, label_dir: Path, pattern: str = "*.png") -> list[SampleFiles]:
    """Pair `image_dir/<f>` with `label_dir/<f>` (same file name), sorted; name = file stem.

    Raises DatasetError for a missing folder, no images, an image without its label or a label
    without its image.
    """
    require_dir(image_dir, "image")
    require_dir(label_dir, "label")
    images = sorted(image_dir.glob(pattern))
    if not images:
        raise DatasetError(f"{image_dir}: no {pattern} images found")
    samples = []
    for image in images:
        label = label_dir / image.name
        if not label.is_file():
            raise DatasetError(f"{image}: label file {label} not found")
        samples.append(SampleFiles(image.stem, image, label))
    image_names = {p.name for p in images}
    orphans = [p for p in sorted(label_dir.glob(pattern)) if p.name not in image_names]
    if orphans:
        raise DatasetError(f"{orphans[0]}: label without its image ({len(orphans)} such file(s))")
    return samples
