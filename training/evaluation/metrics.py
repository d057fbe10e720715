"""Streaming semantic-segmentation metrics over a whole evaluation set.

One int64 K x K confusion matrix `M[gt, pred]` is accumulated over all images (not a mean of
per-image scores). Pixels whose target is `ignore_index` are skipped. Per class:
IoU_c = M[c,c] / (row_c + col_c - M[c,c]), NaN when that union is 0; mIoU is the mean over the
non-NaN classes, in %. With predictions in [0, K) this equals the official Cityscapes script
(cityscapesscripts evalPixelLevelSemanticLabeling) on the same label maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _flat_int(values: ArrayLike, what: str) -> np.ndarray | torch.Tensor:
    """Flatten to int64 (numpy or torch, same library); float or bool inputs are a TypeError."""
    if isinstance(values, torch.Tensor):
        if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
            raise TypeError(f"{what} must be an integer tensor, got {values.dtype}")
        return values.reshape(-1).long()
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what} must be an integer array, got {array.dtype}")
    return array.reshape(-1).astype(np.int64, copy=False)


class ConfusionMatrix:
    """Whole-set confusion matrix with IoU / mIoU read-outs.

    Args:
        num_classes: K; valid class ids are 0..K-1.
        ignore_index: target value of pixels to skip (default 255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Zero all counts."""
        self.matrix[:] = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one batch: `pred` and `target` are integer arrays/tensors of the same shape (any).

        Pixels with `target == ignore_index` are skipped (their prediction is not checked, so a
        prediction of 255 there is allowed). Raises ValueError for a shape mismatch, a target id
        outside [0, K) other than ignore_index, or a prediction outside [0, K) on a counted pixel.
        Torch tensors are counted on their own device; only the K x K result is copied to host.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            device = pred.device if isinstance(pred, torch.Tensor) else target.device
            pred, target = torch.as_tensor(pred, device=device), torch.as_tensor(target, device=device)
        p = _flat_int(pred, "pred")
        t = _flat_int(target, "target")
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        k = self.num_classes
        if p.shape[0] == 0:
            return
        if int(t.min()) < 0 or int(t.max()) >= k:
            raise ValueError(f"target ids must be in [0, {k}) or {self.ignore_index}")
        if int(p.min()) < 0 or int(p.max()) >= k:
            raise ValueError(f"predictions must be in [0, {k}), got range [{int(p.min())}, {int(p.max())}]")
        index = t * k + p
        if isinstance(index, torch.Tensor):
            counts = torch.bincount(index, minlength=k * k).cpu().numpy()
        else:
            counts = np.bincount(index, minlength=k * k)
        self.matrix += counts.reshape(k, k).astype(np.int64, copy=False)

    def iou(self) -> np.ndarray:
        """float64 [K] per-class IoU in [0, 1]; NaN where the union is 0 (class never seen)."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - np.diag(self.matrix)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self, classes: Sequence[int] | None = None) -> float:
        """Mean IoU in % over the non-NaN classes (optionally only `classes`); NaN if none."""
        ious = self.iou()
        if classes is not None:
            ious = ious[list(classes)]
        present = ious[~np.isnan(ious)]
        return float(present.mean() * 100.0) if present.size else float("nan")

    def _names(self, class_names: Sequence[str] | None) -> list[str]:
        if class_names is None:
            return [str(i) for i in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        return list(class_names)

    def to_markdown(self, class_names: Sequence[str] | None = None) -> str:
        """A Markdown table `| class | IoU (%) |` with one row per class (n/a for NaN) and the mIoU."""
        lines = ["| class | IoU (%) |", "|---|---:|"]
        for name, value in zip(self._names(class_names), self.iou()):
            lines.append(f"| {name} | {'n/a' if np.isnan(value) else f'{value * 100:.2f}'} |")
        miou = self.miou()
        lines.append(f"| **mIoU** | **{'n/a' if np.isnan(miou) else f'{miou:.2f}'}** |")
        return "\n".join(lines)

    def to_json(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-serialisable dict: per-class IoU in % (None for NaN), mIoU in %, matrix, counts."""
        miou = self.miou()
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "miou": None if np.isnan(miou) else miou,
            "iou": {
                name: None if np.isnan(v) else float(v * 100.0)
                for name, v in zip(self._names(class_names), self.iou())
            },
            "num_pixels": int(self.matrix.sum()),
            "confusion_matrix": self.matrix.tolist(),
        }
