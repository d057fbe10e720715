"""Label propagation along sequences (training.data.propagate) and its views in the labelled stream."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.class_sets import IGNORE_INDEX
from training.data import DatasetError
from training.data.base import SampleFiles, SegmentationDataset
from training.data.labels import cityscapes_label_lut, train_id_lut
from training.data.propagate import (
    propagate_root,
    propagate_step,
    split_frame,
)
from training.data.views import MANIFEST, ViewsDataset, load_views

H, W = 96, 192
SHIFT = 5  # pixels per frame, to the right


def textured(seed: int = 0) -> np.ndarray:
    """A smooth random texture (flow needs structure), uint8 (H, W + margin, 3)."""
    noise = np.random.default_rng(seed).integers(0, 256, (H // 4, (W + 64) // 4, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (W + 64, H), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def frame(world: np.ndarray, t: int) -> np.ndarray:
    """The camera pans left by SHIFT px a frame: the scene moves right by SHIFT px a frame."""
    start = 32 - SHIFT * t
    return np.ascontiguousarray(world[:, start : start + W])


def world_label() -> np.ndarray:
    """Label ids on the world: three vertical bands (road 7, building 11, car 26)."""
    label = np.full((H, W + 64), 7, np.uint8)
    label[:, 80:150] = 11
    label[:, 150:] = 26
    return label


def test_a_known_motion_is_followed() -> None:
    world = textured()
    train = cityscapes_label_lut(19)[world_label()]
    out = propagate_step(frame(train, 0), frame(world, 0), frame(world, 1))
    expected = frame(train, 1)
    kept = out != IGNORE_INDEX
    assert kept.mean() > 0.8
    assert (out[kept] == expected[kept]).mean() > 0.99
    # the columns entering at the left edge have no source pixels: ignore, never a guess
    assert (out[:, : SHIFT - 1] == IGNORE_INDEX).all()


def write_layout(root: Path, frames: range, seq: str = "aachen_000000") -> None:
    """A labelled frame 19 and its sequence `frames` (19 excluded) in the official layout."""
    world = textured()
    for t in frames:
        image = cv2.cvtColor(frame(world, t - 19), cv2.COLOR_RGB2BGR)
        folder = "leftImg8bit" if t == 19 else "leftImg8bit_sequence"
        path = root / folder / "train" / "aachen" / f"{seq}_{t:06d}_leftImg8bit.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
    label = root / "gtFine" / "train" / "aachen" / f"{seq}_000019_gtFine_labelIds.png"
    label.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(label), frame(world_label(), 0))


def test_root_is_propagated_both_ways_and_the_manifest_loads(tmp_path: Path) -> None:
    root, out = tmp_path / "cs", tmp_path / "prop"
    write_layout(root, range(16, 22))  # 16, 17, 18 | 19 | 20, 21
    views = propagate_root(root, out, radius=2)
    offsets = sorted(v.offset for v in views["aachen_000000_000019"])
    assert offsets == [-2, -1, 1, 2]
    loaded = load_views(out, radius=1)
    assert sorted(v.offset for v in loaded["aachen_000000_000019"]) == [-1, 1]
    one = next(v for v in loaded["aachen_000000_000019"] if v.offset == 1)
    label = cv2.imread(str(one.label), cv2.IMREAD_UNCHANGED)
    assert label.shape == (H, W) and set(np.unique(label)) <= {0, 2, 13, IGNORE_INDEX}
    with pytest.raises(DatasetError, match="radius 2, asked for 3"):
        load_views(out, radius=3)


def test_a_broken_or_missing_manifest_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"{MANIFEST}: no propagated labels"):
        load_views(tmp_path, 1)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(DatasetError, match="not a propagation manifest"):
        load_views(tmp_path, 1)
    gone = {
        "name": "a_000000_000018",
        "image": str(tmp_path / "x.png"),
        "label": str(tmp_path / "y.png"),
        "offset": -1,
        "kept": 1.0,
    }
    (tmp_path / MANIFEST).write_text(
        json.dumps({"root": "r", "radius": 1, "views": {"a_000000_000019": [gone]}})
    )
    with pytest.raises(DatasetError, match="x.png, which does not exist"):
        load_views(tmp_path, 1)


def _dataset(tmp_path: Path, names: list[str], value: int) -> SegmentationDataset:
    samples = []
    for name in names:
        image, label = tmp_path / f"{name}.png", tmp_path / f"{name}_l.png"
        cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(label), np.full((8, 8), value, np.uint8))
        samples.append(SampleFiles(name, image, label))
    return SegmentationDataset(samples, train_id_lut(19))


def test_views_keep_every_frame_equally_likely(tmp_path: Path) -> None:
    from training.data.views import View

    base = _dataset(tmp_path, ["a_000000_000019", "b_000000_000001"], 1)
    extra = _dataset(tmp_path, ["a_000000_000018", "a_000000_000020"], 2)
    views = {
        "a_000000_000019": [
            View(s.name, s.image, s.label, o, 1.0) for s, o in zip(extra.samples, (-1, 1), strict=True)
        ],
        "z_000000_000019": [
            View("z", tmp_path / "none.png", tmp_path / "none.png", 1, 1.0)
        ],  # not in base: unused
    }
    data = ViewsDataset(base, views, 19)
    assert data.slots == 3 and len(data) == 6 and data.num_views == 2
    names = [data[k]["name"] for k in range(len(data))]
    assert names == ["a_000000_000019", "a_000000_000018", "a_000000_000020", *["b_000000_000001"] * 3]
    assert data[1]["label"].max() == 2 and data[0]["label"].max() == 1  # views read as train ids


def test_split_frame() -> None:
    assert split_frame("aachen_000001_000019") == ("aachen_000001", 19)
    assert split_frame("unknown") is None


def test_the_real_sequences_propagate(fixtures_dir: Path, tmp_path: Path) -> None:
    root = fixtures_dir / "real" / "cityscapes"
    if not (root / "leftImg8bit_sequence").is_dir():
        pytest.skip(f"real-frames fixtures not found at {root}")
    from training.data.cityscapes import discover_cityscapes
    from training.data.propagate import _chain, _sequence_frames

    sample = next(s for s in discover_cityscapes(root, "train") if s.name == "aachen_000003_000019")
    frames = _sequence_frames(root)["aachen_000003"]
    forward = _chain(sample, frames, 19, 1, 1)
    assert [o for o, _ in forward] == [1]
    label = forward[0][1]
    original = cityscapes_label_lut(19)[cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)]
    kept = (label != IGNORE_INDEX) & (original != IGNORE_INDEX)
    # one frame later most of the scene keeps a label, and it is mostly the one at the same spot
    assert kept.mean() > 0.6
    assert (label[kept] == original[kept]).mean() > 0.85


def test_held_out_frames_bring_no_views_into_training(tmp_path: Path) -> None:
    from training.config import config_from_dict
    from training.data.build import build_target_train, build_val_dataset, target_split

    root, out = tmp_path / "cs", tmp_path / "prop"
    for seq in ("aachen_000000", "aachen_000001"):
        write_layout(root, range(18, 21), seq)
    propagate_root(root, out, radius=1)
    target = {"type": "cityscapes", "root": str(root), "propagated": str(out), "propagated_radius": 1}
    data = {"num_classes": 19, "num_labeled": 1, "holdout": 1, "split_seed": 0, "use_captions": False}
    config = config_from_dict({"data": {**data, "target": target}})
    labeled, _ = target_split(config)
    held = build_val_dataset(config)[0]["name"]
    stream = build_target_train(config, labeled, labeled=True)
    names = {stream[k]["name"] for k in range(len(stream))}
    seq = labeled[0].rsplit("_", 1)[0]
    assert len(names) == 3 and all(n.startswith(seq) for n in names)
    assert not held.startswith(seq)


def test_the_summary_line_says_how_many_frames_carry_propagated_labels() -> None:
    from training.data_card import summary_line

    line = summary_line(None, {"labeled": 6, "propagated": 30, "unlabeled": 170})
    assert (
        line
        == "6 labelled (+ 30 sequence frames with labels propagated from them) + 170 unlabelled target frames"
    )
    assert summary_line(None, {"labeled": 8, "unlabeled": 170}) == "8 labelled + 170 unlabelled target frames"
