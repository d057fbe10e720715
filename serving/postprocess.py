"""Logits at the working size -> label map and confidence at the input size; per-class statistics.

Reference behaviour (the one evaluation uses, `reference_labels_and_confidence`): upsample the
logits bilinearly to the input size (half-pixel centres), then argmax; confidence is the max
softmax probability of the upsampled logits.

The served path (`labels_and_confidence`) gives the same labels without upsampling every class
at every pixel. Bilinear interpolation makes each output pixel a convex combination of the four
low-resolution pixels around it (its *cell*); when one class is the argmax at all four corners,
every logit difference z_c - z_k is >= 0 at the corners and so at every point between them: the
whole cell takes that class. Only the pixels of the other cells (class boundaries, typically a
few per cent of the image) are upsampled in full, each from its four corners. Tolerances, both
tested:
- labels: identical to the reference except where the reference's two best upsampled logits are
  within float rounding of each other (a corner margin below `_MARGIN_REL` x max |logit| sends a
  cell to the full path, so rounding cannot flip a unanimous cell); 0 of 2.3 M pixels differ on the
  real fixture frames;
- confidence: exact in the boundary cells; inside unanimous cells the low-resolution max softmax
  is upsampled bilinearly instead (a convex combination of the corners' confidences), off by
  <= 0.01 per pixel and <= 0.001 in a class's mean confidence on the fixture frames. Confidence
  only feeds the per-class mean confidence of the response.
The boundary cells are handled all at once (in chunks), not band by band: each cell's output
pixels are a run along each axis, so its four corners are gathered once and its pixels are found
from the runs (no search over the full-size label map). The confidence is computed only when first
asked for (`Upsampled.confidence`): a label PNG never needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model.class_sets import ClassSet

# A corner whose best logit leads the second by less than this share of the largest |logit| is
# treated as a tie: its cell takes the full path (float32 rounding of the interpolation is ~1e-7).
_MARGIN_REL = 1e-4
# The cell path pays off once the output has several pixels per logit pixel; below this ratio
# the reference's one cv2.resize is as fast.
_MIN_UPSCALE_AREA = 4.0
_UNSURE = 255  # cell label of a cell that takes the full path (class indices stay below it)
# Boundary cells go through the full path in chunks of about this many output pixels (bounds the
# memory of their bilinear logits: K floats a pixel, a few temporaries).
_FULL_PATH_PIXELS = 1 << 16


class Upsampled:
    """Labels at the input size, and their confidence computed on first use (then kept).

    labels: uint8 [H, W]; confidence: float16 [H, W], the max softmax probability. A caller that
    only needs labels (a label PNG) never pays for the confidence.
    """

    def __init__(self, labels: np.ndarray, confidence: Callable[[], np.ndarray]) -> None:
        self.labels = labels
        self._compute = confidence
        self._confidence: np.ndarray | None = None
        # per instance: functools.cached_property's lock (Python 3.11) is shared by all instances,
        # so one Upsampled computing through another (the predictor's compute thread) deadlocked
        self._lock = threading.Lock()

    @property
    def confidence(self) -> np.ndarray:
        with self._lock:
            if self._confidence is None:
                self._confidence = self._compute()
            return self._confidence

    @property
    def confidence_computed(self) -> bool:
        return self._confidence is not None


@torch.inference_mode()
def upsample(logits: torch.Tensor, size: tuple[int, int]) -> Upsampled:
    """logits [K, h, w] -> Upsampled (labels uint8 [H, W], confidence float16 [H, W]) at size (H, W).

    The labels of `reference_labels_and_confidence` by the cell method on CPU for upscaling of
    >= 4x in area and K < 255 (module docstring: what is exact and what is within a tolerance);
    otherwise the reference itself.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected logits [K, h, w], got {tuple(logits.shape)}")
    k, h, w = logits.shape
    big = size[0] * size[1] >= _MIN_UPSCALE_AREA * h * w
    if logits.device.type == "cpu" and k < _UNSURE and big:
        cells = _CellUpsample(logits.float().numpy(), size)
        return Upsampled(cells.labels(), cells.confidence)
    labels, confidence = reference_labels_and_confidence(logits, size)
    return Upsampled(labels, lambda: confidence)


def labels_and_confidence(logits: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """logits [K, h, w] -> (labels uint8 [H, W], confidence float16 [H, W] in (0, 1]): `upsample`,
    both computed."""
    result = upsample(logits, size)
    return result.labels, result.confidence


@torch.inference_mode()
def reference_labels_and_confidence(
    logits: torch.Tensor, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """logits [K, h, w] -> (labels uint8 [H, W], confidence float16 [H, W]): full upsample, argmax.

    Bilinear upsampling (half-pixel centres, as F.interpolate with align_corners=False), then
    argmax and max softmax, computed in place on the upsampled logits (exp of logits minus their
    max, summed; confidence = 1 / sum). CPU: cv2.resize on the channels-last logits; CUDA: torch.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected logits [K, h, w], got {tuple(logits.shape)}")
    if logits.device.type == "cpu" and logits.shape[0] <= 512:
        up = _upsample_channels_last(logits.float(), size)
        top, labels = up.max(dim=-1, keepdim=True)
        confidence = up.sub_(top).exp_().sum(dim=-1).reciprocal_()
        return labels[..., 0].to(torch.uint8).numpy(), confidence.to(torch.float16).numpy()
    up = F.interpolate(logits.float()[None], size=size, mode="bilinear", align_corners=False)[0]
    top, labels = up.max(dim=0)
    confidence = up.sub_(top).exp_().sum(dim=0).reciprocal_()
    return labels.to(torch.uint8).cpu().numpy(), confidence.to(torch.float16).cpu().numpy()


def _upsample_channels_last(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[K, h, w] fp32 CPU -> [H, W, K] fp32 by cv2 bilinear (half-pixel centres)."""
    hwk = np.ascontiguousarray(logits.permute(1, 2, 0).numpy())
    if hwk.shape[:2] == tuple(size):
        return torch.from_numpy(hwk.copy())
    up = cv2.resize(hwk, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(up.reshape(size[0], size[1], -1))


def _axis_cells(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Output coordinate -> (cell index in the edge-padded grid [0, n_in], weight of the cell's
    second corner), as cv2's INTER_LINEAR maps it (half-pixel centres, clamped at the borders)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(src)
    weight = (src - first).astype(np.float32)
    first = first.astype(np.int64)
    weight[(first < 0) | (first >= n_in - 1)] = 0.0  # clamped: both corners are the edge pixel
    return np.clip(first, -1, n_in - 1) + 1, weight


class _Axis:
    """One axis of the cell grid: output coordinate -> cell and weight, and per cell its run of
    output coordinates (the map is monotone, so each cell's outputs are contiguous)."""

    def __init__(self, n_out: int, n_in: int) -> None:
        self.n_in = n_in
        self.cell, self.weight = _axis_cells(n_out, n_in)
        edges = np.searchsorted(self.cell, np.arange(n_in + 2))
        self.start, self.count = edges[:-1], np.diff(edges)  # per cell index 0..n_in

    def runs(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices [n] of cells with at least one output -> (output coordinates [n, m], valid
        [n, m]), m the longest run; coordinates past a cell's run repeat its last one (masked out
        by `valid`)."""
        steps = np.arange(int(self.count.max()))
        count = self.count[cells][:, None]
        return self.start[cells][:, None] + np.minimum(steps, count - 1), steps < count

    def corners(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell index i of the edge-padded grid has the corners i - 1 and i, clamped to the image."""
        return np.maximum(cells - 1, 0), np.minimum(cells, self.n_in - 1)


class _CellUpsample:
    """The cell method (module docstring) for float32 logits [K, h, w] and an output size (H, W)."""

    def __init__(self, logits: np.ndarray, size: tuple[int, int]) -> None:
        _, h, w = logits.shape
        self.logits, self.size = logits, size
        self.ys, self.xs = _Axis(size[0], h), _Axis(size[1], w)
        self.top, best, clear = _corner_stats(torch.from_numpy(logits))
        self.cells = _cell_labels(best, clear)
        unsure_y, unsure_x = np.nonzero(self.cells == _UNSURE)
        # cells with no output pixel (along a downscaled axis) need nothing
        keep = (self.ys.count[unsure_y] > 0) & (self.xs.count[unsure_x] > 0)
        self.unsure = unsure_y[keep], unsure_x[keep]

    def labels(self) -> np.ndarray:
        """uint8 [H, W]: the unanimous cells' class, the boundary cells' pixels in full."""
        labels = self.cells[self.ys.cell][:, self.xs.cell]
        for y, x, valid, values in self._boundary():
            labels[y, x] = values.argmax(dim=-1).to(torch.uint8).numpy()[valid]
        return labels

    def confidence(self) -> np.ndarray:
        """float16 [H, W]: exact in boundary cells, bilinear of the corners' max softmax elsewhere."""
        low = (torch.from_numpy(self.logits) - self.top).exp_().sum(dim=0).reciprocal_().numpy()
        confidence = cv2.resize(low, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        for y, x, valid, values in self._boundary():
            top = values.amax(dim=-1, keepdim=True)
            confidence[y, x] = values.sub_(top).exp_().sum(dim=-1).reciprocal_().numpy()[valid]
        return confidence.astype(np.float16)

    def _boundary(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]]:
        """Per chunk of boundary cells: the output pixels' (y, x) [n] (valid ones), the valid mask
        [c, my, mx], and the bilinear logits [c, my, mx, K] of every cell's output pixels."""
        unsure_y, unsure_x = self.unsure
        # a cell has up to run_y x run_x output pixels (the upscale factors, rounded up)
        run_y, run_x = int(self.ys.count.max()), int(self.xs.count.max())
        chunk = max(1, _FULL_PATH_PIXELS // max(1, run_y * run_x))
        for lo in range(0, unsure_y.size, chunk):
            cy, cx = unsure_y[lo : lo + chunk], unsure_x[lo : lo + chunk]
            (y, valid_y), (x, valid_x) = self.ys.runs(cy), self.xs.runs(cx)
            (y0, y1), (x0, x1) = self.ys.corners(cy), self.xs.corners(cx)
            tl, tr, bl, br = (
                self.logits[:, a, b].T[:, None, :] for a, b in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))
            )
            values = _interpolate(
                tl, tr, bl, br, self.xs.weight[x][:, :, None], self.ys.weight[y][:, :, None, None]
            )
            valid = valid_y[:, :, None] & valid_x[:, None, :]
            yy, xx = np.broadcast_arrays(y[:, :, None], x[:, None, :])
            yield yy[valid], xx[valid], valid, values


def _corner_stats(logits: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """fp32 [K, h, w] -> (max logit [h, w], argmax uint8 [h, w], clear-lead bool [h, w])."""
    top, best = logits.max(dim=0)
    second = logits.scatter(0, best[None], float("-inf")).amax(dim=0)
    clear = (top - second) >= _MARGIN_REL * max(1.0, float(logits.abs().amax()))
    return top, best.to(torch.uint8).numpy(), clear.numpy()


def _cell_labels(best: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Per-pixel argmax and clear lead [h, w] -> uint8 [h+1, w+1] over the edge-padded grid: the
    class that is the clear argmax at all four corners of a cell, or _UNSURE."""
    best, clear = np.pad(best, 1, mode="edge"), np.pad(clear, 1, mode="edge")
    a, b, c, d = best[:-1, :-1], best[1:, :-1], best[:-1, 1:], best[1:, 1:]
    same = (a == b) & (a == c) & (a == d)
    sure = same & clear[:-1, :-1] & clear[1:, :-1] & clear[:-1, 1:] & clear[1:, 1:]
    return np.where(sure, a, _UNSURE).astype(np.uint8)


def _interpolate(
    top_left: np.ndarray,
    top_right: np.ndarray,
    bottom_left: np.ndarray,
    bottom_right: np.ndarray,
    weight_x: np.ndarray,
    weight_y: np.ndarray,
) -> torch.Tensor:
    """Corner logits [c, 1, K] of c cells and weights [c, mx, 1], [c, my, 1, 1] of their output
    pixels -> bilinear logits [c, my, mx, K]: horizontal then vertical, the order (and float32
    rounding) of cv2's INTER_LINEAR."""
    left = 1.0 - weight_x
    upper = top_left * left + top_right * weight_x
    lower = bottom_left * left + bottom_right * weight_x
    return torch.from_numpy(upper[:, None] * (1.0 - weight_y) + lower[:, None] * weight_y)


def class_stats(
    labels: np.ndarray, confidence: np.ndarray, class_set: ClassSet, include_absent: bool = False
) -> list[dict[str, Any]]:
    """[{class, index, pixel_fraction, mean_confidence}] in class order; fractions sum to 1.

    Classes with no pixel are left out unless `include_absent` (then mean_confidence is None).
    """
    k = len(class_set)
    flat = labels.reshape(-1)
    counts = np.bincount(flat, minlength=k)[:k]
    conf_sums = np.bincount(flat, weights=confidence.reshape(-1).astype(np.float64), minlength=k)[:k]
    total = max(int(flat.size), 1)
    stats = []
    for index, name in enumerate(class_set.names):
        count = int(counts[index])
        if count == 0 and not include_absent:
            continue
        stats.append(
            {
                "class": name,
                "index": index,
                "pixel_fraction": count / total,
                "mean_confidence": float(conf_sums[index] / count) if count else None,
            }
        )
    return stats
