"""SYNTHIA-RAND-CITYSCAPES (source domain): `<root>/RGB/*.png` and `<root>/GT/LABELS/*.png`.

Labels are 16-bit multi-channel PNGs with the class id in the R channel (read with OpenCV, see
`io.read_synthia_label`), mapped by `model.class_sets.synthia_id_lut` to the 16-class indices
(default) or the 19 Cityscapes train ids; unmapped ids (void, parking-slot, road-work,
lanemarking) -> 255.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.data.base import SegmentationDataset, discover_by_filename, require_dir, select_names
from training.data.io import read_synthia_label
from training.data.labels import synthia_label_lut


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA image/label pairs; sample name = file stem (e.g. `0000000`); items as in `base.Example`.

    Args:
        root: folder containing `RGB/` and `GT/LABELS/`.
        num_classes: 16 (SYNTHIA protocol indices, default) or 19 (Cityscapes train ids).
        names: optional subset of sample names.
        resize: optional (H, W); captions_file: optional JSON {name: caption}.
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int = 16,
        *,
        names: Sequence[str] | None = None,
        resize: tuple[int, int] | None = None,
        captions_file: str | Path | None = None,
        cache: bool = False,
    ) -> None:
        lut = synthia_label_lut(num_classes)
        root = require_dir(Path(root), "SYNTHIA root")
        samples = select_names(discover_by_filename(root / "RGB", root / "GT" / "LABELS"), names)
        super().__init__(
            samples,
            lut,
            label_reader=read_synthia_label,
            resize=resize,
            captions_file=captions_file,
            cache=cache,
        )
        self.num_classes = num_classes
