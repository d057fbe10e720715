"""Propagated labelled views (`training.data.propagate` makes them) in the labelled stream.

`load_views` reads and checks the manifest `<folder>/propagated.json`; `ViewsDataset` draws each
labelled frame together with its views, every frame as often as another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from training.data.base import Example, SampleFiles, SegmentationDataset
from training.data.errors import DatasetError
from training.data.labels import train_id_lut

MANIFEST = "propagated.json"


@dataclass(frozen=True)
class View:
    """One propagated view: the neighbour frame's image, its propagated label, its frame offset
    from the labelled frame, and the fraction of its pixels that kept a label."""

    name: str
    image: Path
    label: Path
    offset: int
    kept: float


def load_views(folder: str | Path, radius: int) -> dict[str, list[View]]:
    """The views of `<folder>/propagated.json` within `radius` frames, by labelled frame name.

    Raises DatasetError naming the file when the manifest is missing or malformed, was made with
    a smaller radius than asked, or names a file that does not exist.
    """
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        made, entries = int(data["radius"]), data["views"]
        views = {
            name: [
                View(v["name"], Path(v["image"]), Path(v["label"]), int(v["offset"]), float(v["kept"]))
                for v in vs
            ]
            for name, vs in entries.items()
        }
    except FileNotFoundError as exc:
        raise DatasetError(
            f"{path}: no propagated labels; run `python -m training.data.propagate --out {folder}`"
        ) from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: not a propagation manifest ({exc})") from exc
    if radius > made:
        raise DatasetError(
            f"{path}: made with radius {made}, asked for {radius}; re-run with --radius {radius}"
        )
    for view in (v for vs in views.values() for v in vs):
        for file in (view.image, view.label):
            if not file.is_file():
                raise DatasetError(f"{path}: names {file}, which does not exist")
    return {name: [v for v in vs if abs(v.offset) <= radius] for name, vs in views.items()}


class ViewsDataset(Dataset):
    """A labelled dataset whose every frame is drawn with its propagated views, one frame as often
    as another: item `k` is view `k % slots` (cycling) of frame `k // slots`, where `slots` is the
    most views any frame has plus one (the frame itself). A frame without a sequence is its own
    every view, so the propagated frames add viewpoints, not weight, to the sequences' cities.

    Args:
        base: the labelled frames (`SegmentationDataset` items).
        views: {frame name: its views} (`load_views`); names not in `base` are ignored.
        num_classes, resize, cache: as `base`'s (the views' labels are train ids).
    """

    def __init__(
        self,
        base: SegmentationDataset,
        views: dict[str, list[View]],
        num_classes: int,
        *,
        resize: tuple[int, int] | None = None,
        cache: bool = False,
    ) -> None:
        chosen = [list(views.get(name, [])) for name in base.names]
        files = [SampleFiles(v.name, v.image, v.label) for vs in chosen for v in vs]
        self.num_views = len(files)  # propagated views in use (the base's frames not counted)
        extra = (
            SegmentationDataset(files, train_id_lut(num_classes), resize=resize, cache=cache)
            if files
            else base
        )
        # per frame: (dataset, index) of the frame itself, then of each of its views (`extra` is
        # only read when some frame has views)
        self.rows: list[list[tuple[SegmentationDataset, int]]] = []
        first = 0
        for index, vs in enumerate(chosen):
            self.rows.append([(base, index)] + [(extra, first + j) for j in range(len(vs))])
            first += len(vs)
        self.slots = max(len(row) for row in self.rows)

    def __len__(self) -> int:
        return len(self.rows) * self.slots

    def __getitem__(self, index: int) -> Example:
        frame, slot = divmod(index, self.slots)
        row = self.rows[frame]
        dataset, item = row[slot % len(row)]
        return dataset[item]
