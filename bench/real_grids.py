"""Picture grids of a trained run on real frames: input | prediction | ground truth.

`write_grids(run_dir, real_root)` writes `<run_dir>/grid_val.png` (the labelled val frames, with
their ground truth) and `<run_dir>/grid_other.png` (the photos of other cameras in `other/`,
input | prediction). Run folders are not committed: the frames are research-only data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from model import load_model
from model.class_sets import CITYSCAPES_PALETTE, get_class_set
from model.text import TextEmbedder
from serving.encode import color_array
from training.config import config_from_dict
from training.data import CityscapesDataset
from training.data.io import read_image
from training.evaluation.evaluate import predict_logits

PANEL_WIDTH = 512


def colorize(labels: np.ndarray) -> np.ndarray:
    """uint8 (H, W) train ids (255 = ignore, black) -> uint8 (H, W, 3) Cityscapes colours."""
    return color_array(labels, CITYSCAPES_PALETTE)


def _panel(image: np.ndarray, nearest: bool) -> np.ndarray:
    h, w = image.shape[:2]
    size = (PANEL_WIDTH, max(1, round(h * PANEL_WIDTH / w)))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def grid(rows: list[list[np.ndarray]]) -> np.ndarray:
    """Rows of panels (RGB uint8; first an image, then label colour maps) -> one RGB image."""
    lines = [np.concatenate([_panel(p, nearest=i > 0) for i, p in enumerate(row)], axis=1) for row in rows]
    width = max(line.shape[1] for line in lines)
    padded = [
        np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255) for line in lines
    ]
    return np.concatenate(padded, axis=0)


class RunPredictor:
    """A finished run's model with the run's own evaluation settings: image -> train ids."""

    def __init__(self, run_dir: Path) -> None:
        self.model, _ = load_model(run_dir / "model.safetensors")
        stored: dict[str, Any] = yaml.safe_load((run_dir / "config.yaml").read_text())
        self.eval_cfg = config_from_dict(stored).eval
        self.embedder = TextEmbedder(self.model.text)
        self.class_embeds = self.embedder.class_embeddings(get_class_set("cityscapes").prompts())

    def labels(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> uint8 (H, W) train ids at the image's own size."""
        with torch.inference_mode():
            logits = predict_logits(self.model, self.embedder, self.class_embeds, image, "", self.eval_cfg)
        return logits.argmax(0).to(torch.uint8).numpy()


def write_grids(run_dir: Path, real_root: Path) -> list[Path]:
    """Write grid_val.png and grid_other.png into `run_dir`; returns the paths written."""
    predictor = RunPredictor(run_dir)
    val = CityscapesDataset(real_root / "cityscapes", "val")
    rows = []
    for i in range(len(val)):
        ex = val[i]
        rows.append([ex["image"], colorize(predictor.labels(ex["image"])), colorize(ex["label"])])
    out = [run_dir / "grid_val.png"]
    cv2.imwrite(str(out[0]), cv2.cvtColor(grid(rows), cv2.COLOR_RGB2BGR))
    photos = sorted(p for p in (real_root / "other").rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    photos = [p for p in photos if not p.stem.endswith("_eval")]  # the Taipei label map is not a photo
    if photos:
        others = [[img, colorize(predictor.labels(img))] for img in (read_image(p) for p in photos)]
        out.append(run_dir / "grid_other.png")
        cv2.imwrite(str(out[1]), cv2.cvtColor(grid(others), cv2.COLOR_RGB2BGR))
    return out
