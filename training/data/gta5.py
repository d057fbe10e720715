"""GTA5 (source domain): `<root>/images/*.png` and `<root>/labels/*.png` with the same names.

The label PNGs are palette ('P') images whose pixel INDICES are Cityscapes label ids; the palette
colours are ignored. Label ids become the 19 train ids (everything else -> 255).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.data.base import SegmentationDataset, discover_by_filename, require_dir, select_names
from training.data.io import read_index_label
from training.data.labels import cityscapes_label_lut


class GTA5Dataset(SegmentationDataset):
    """GTA5 image/label pairs; sample name = file stem (e.g. `00001`); items as in `base.Example`.

    Args:
        root: folder containing `images/` and `labels/`.
        names: optional subset of sample names.
        resize: optional (H, W), e.g. (760, 1280); captions_file: optional JSON {name: caption}.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        names: Sequence[str] | None = None,
        resize: tuple[int, int] | None = None,
        captions_file: str | Path | None = None,
        cache: bool = False,
    ) -> None:
        root = require_dir(Path(root), "GTA5 root")
        samples = select_names(discover_by_filename(root / "images", root / "labels"), names)
        super().__init__(
            samples,
            cityscapes_label_lut(19),
            label_reader=read_index_label,
            resize=resize,
            captions_file=captions_file,
            cache=cache,
        )
