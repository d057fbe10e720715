"""Write a tiny source (GTA5 layout) + target (Cityscapes layout) dataset with captions, for trainer tests.

Images are blocks of class colours with per-domain tints, so a model can learn something in a few
steps; this is a test fixture, not the synthetic benchmark (training/synthetic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model.class_sets import CITYSCAPES_PALETTE, TRAIN_ID_TO_LABEL_ID


def _scene(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    train_ids = np.zeros((h, w), dtype=np.uint8)  # road
    train_ids[: h // 3] = 10  # sky
    train_ids[h // 3 : h // 2] = 2  # building
    for _ in range(3):
        y, x = int(rng.integers(h // 2, h - 8)), int(rng.integers(0, w - 12))
        train_ids[y : y + 8, x : x + 12] = rng.choice([13, 11, 8])
    return train_ids


def _render(train_ids: np.ndarray, tint: int, rng: np.random.Generator) -> np.ndarray:
    palette = np.array(CITYSCAPES_PALETTE, dtype=np.int16)
    image = palette[train_ids] + tint + rng.integers(-10, 10, size=(*train_ids.shape, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _caption(train_ids: np.ndarray) -> str:
    names = {13: "cars", 11: "people", 8: "trees"}
    present = [n for k, n in names.items() if (train_ids == k).any()]
    return "a street with " + " and ".join(present) if present else "an empty street"


def write_tiny_benchmark(
    root: Path, n_source: int = 6, n_train: int = 6, n_val: int = 2, size=(64, 128)
) -> Path:
    """Create `root/source` and `root/target`; returns root."""
    rng = np.random.default_rng(0)
    label_ids = np.array([*TRAIN_ID_TO_LABEL_ID, *[0] * (256 - 19)], dtype=np.uint8)
    src = root / "source"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    captions = {}
    for i in range(n_source):
        t = _scene(rng, *size)
        Image.fromarray(_render(t, 0, rng)).save(src / "images" / f"{i:05d}.png")
        lbl = Image.fromarray(label_ids[t], mode="L").convert("P")
        lbl.save(src / "labels" / f"{i:05d}.png")
        captions[f"{i:05d}"] = _caption(t)
    (src / "captions.json").write_text(json.dumps(captions))
    tgt = root / "target"
    for split, n in (("train", n_train), ("val", n_val)):
        caps = {}
        for i in range(n):
            name = f"town_{i:06d}_000019"
            t = _scene(rng, *size)
            for sub, arr, suffix in (
                ("leftImg8bit", _render(t, 40, rng), "leftImg8bit"),
                ("gtFine", label_ids[t], "gtFine_labelIds"),
            ):
                d = tgt / sub / split / "town"
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(d / f"{name}_{suffix}.png")
            caps[name] = _caption(t)
        (tgt / f"captions_{split}.json").write_text(json.dumps(caps))
    return root


def tiny_run_config(
    root: Path,
    out: Path,
    *,
    model: str = "semidavil-tiny",
    num_labeled: int = 2,
    crop: list[int] | None = None,
    batch: dict[str, int] | None = None,
    eval_size: list[int] | None = None,
    experiment: str = "t",
) -> dict[str, Any]:
    """A training config (a plain dict, as YAML holds it) on the tiny benchmark written at `root`:
    random towers, no resizing, no workers, fp32, no periodic evaluation; runs go to `out`."""
    return {
        "experiment": experiment,
        "output_dir": str(out),
        "model": {"name": model, "pretrained": None},
        "data": {
            "source": {
                "type": "gta5",
                "root": str(root / "source"),
                "resize": None,
                "captions": "captions.json",
            },
            "target": {"type": "cityscapes", "root": str(root / "target"), "resize": None},
            "num_labeled": num_labeled,
            "crop": crop or [64, 64],
            "batch": batch or {"source": 2, "labeled": 1, "unlabeled": 2},
            "workers": 0,
        },
        "optim": {"iters": 6, "amp": "off"},
        "eval": {"every": 0, "mode": "whole", "size": eval_size or [64, 128]},
        "log": {"every": 1, "checkpoint_every": 2},
    }
