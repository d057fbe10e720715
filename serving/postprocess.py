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
The boundary pixels are gathered all at once (in chunks), not band by band: with logits at the
full working size (256x512 -> 2048x1024) a Python loop over bands was most of the cost.
"""

from __future__ import annotations

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
# Boundary pixels go through the full path in chunks of this many (bounds its memory: ~5 KB each).
_FULL_PATH_CHUNK = 1 << 16


@torch.inference_mode()
def labels_and_confidence(logits: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """logits [K, h, w] -> (labels uint8 [H, W], confidence float16 [H, W] in (0, 1]) at size (H, W).

    The labels of `reference_labels_and_confidence` by the cell method on CPU for upscaling of
    >= 4x in area and K < 255 (module docstring: what is exact and what is within a tolerance);
    otherwise the reference itself.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected logits [K, h, w], got {tuple(logits.shape)}")
    k, h, w = logits.shape
    big = size[0] * size[1] >= _MIN_UPSCALE_AREA * h * w
    if logits.device.type == "cpu" and k < _UNSURE and big:
        return _cell_labels_and_confidence(logits.float().numpy(), size)
    return reference_labels_and_confidence(logits, size)


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


def _corner_stats(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fp32 [K, h, w] -> (argmax uint8 [h, w], clear-lead bool [h, w], max softmax float32 [h, w]).

    torch, not numpy: the max over the class axis is one threaded pass (np.partition was slower).
    """
    top, best = logits.max(dim=0)
    second = logits.scatter(0, best[None], float("-inf")).amax(dim=0)
    clear = (top - second) >= _MARGIN_REL * max(1.0, float(logits.abs().amax()))
    confidence = (logits - top).exp_().sum(dim=0).reciprocal_()
    return best.to(torch.uint8).numpy(), clear.numpy(), confidence.numpy()


def _cell_labels(best: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """Per-pixel argmax and clear lead [h, w] -> uint8 [h+1, w+1] over the edge-padded grid: the
    class that is the clear argmax at all four corners of a cell, or _UNSURE."""
    best, clear = np.pad(best, 1, mode="edge"), np.pad(clear, 1, mode="edge")
    a, b, c, d = best[:-1, :-1], best[1:, :-1], best[:-1, 1:], best[1:, 1:]
    same = (a == b) & (a == c) & (a == d)
    sure = same & clear[:-1, :-1] & clear[1:, :-1] & clear[:-1, 1:] & clear[1:, 1:]
    return np.where(sure, a, _UNSURE).astype(np.uint8)


def _cell_labels_and_confidence(logits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float32 [K, h, w] -> (uint8 [H, W], float16 [H, W]) by the cell method (module docstring)."""
    _, h, w = logits.shape
    out_h, out_w = size
    best, clear, low_conf = _corner_stats(torch.from_numpy(logits))
    cell_y, weight_y = _axis_cells(out_h, h)
    cell_x, weight_x = _axis_cells(out_w, w)
    labels = _cell_labels(best, clear)[cell_y][:, cell_x]
    confidence = cv2.resize(low_conf, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    flat = np.flatnonzero(labels == _UNSURE)  # 1-D: cheaper than np.nonzero's two arrays
    if flat.size:
        hwk = np.ascontiguousarray(logits.transpose(1, 2, 0))  # one pixel's K logits are one row
        for lo in range(0, flat.size, _FULL_PATH_CHUNK):
            y, x = np.divmod(flat[lo : lo + _FULL_PATH_CHUNK], out_w)
            # cell index i of the edge-padded grid has the corners i - 1 and i, clamped to the image
            y0, x0 = np.maximum(cell_y[y] - 1, 0), np.maximum(cell_x[x] - 1, 0)
            y1, x1 = np.minimum(cell_y[y], h - 1), np.minimum(cell_x[x], w - 1)
            corners = hwk[y0, x0], hwk[y0, x1], hwk[y1, x0], hwk[y1, x1]
            lab, conf = _full_path(*corners, weight_x[x][:, None], weight_y[y][:, None])
            labels[y, x], confidence[y, x] = lab, conf
    return labels, confidence.astype(np.float16)


def _full_path(
    top_left: np.ndarray,
    top_right: np.ndarray,
    bottom_left: np.ndarray,
    bottom_right: np.ndarray,
    weight_x: np.ndarray,
    weight_y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Corner logits [n, K] and weights [n, 1] of n output pixels -> (argmax uint8 [n], max softmax
    float32 [n]) of their bilinear interpolation: horizontal then vertical, the order cv2 uses."""
    left = 1.0 - weight_x
    upper = top_left * left + top_right * weight_x
    lower = bottom_left * left + bottom_right * weight_x
    values = torch.from_numpy(upper * (1.0 - weight_y) + lower * weight_y)
    # torch for the reductions: threaded, and max gives the argmax in the same pass
    top, labels = values.max(dim=1, keepdim=True)
    confidence = values.sub_(top).exp_().sum(dim=1).reciprocal_()
    return labels[:, 0].to(torch.uint8).numpy(), confidence.numpy()


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
