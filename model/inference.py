"""Whole-image and sliding-window inference on tensors (docs/method.md 3), shared by evaluation and serving."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis: 0, stride, 2*stride, ..., the last aligned to the border.

    e.g. size 1024, window 512, stride 341 -> [0, 341, 512].
    """
    if size <= window:
        return [0]
    starts = list(range(0, size - window, stride))
    return [*starts, size - window]


@torch.inference_mode()
def slide_inference(
    fn: LogitsFn,
    images: torch.Tensor,
    num_classes: int,
    window: tuple[int, int] = (512, 512),
    stride: tuple[int, int] = (341, 341),
    batch_windows: int = 4,
) -> torch.Tensor:
    """Average logits of overlapping windows: images [B, 3, H, W] -> logits [B, K, H, W] fp32.

    `fn` maps a crop batch [b, 3, wh, ww] to logits [b, K, wh, ww] (captions and class embeddings
    bound by the caller; the caption of the full image is shared by all windows). Images smaller
    than the window are padded at the bottom/right and the padding is cropped from the output.
    """
    b, _, h, w = images.shape
    wh, ww = window
    pad_h, pad_w = max(wh - h, 0), max(ww - w, 0)
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    ph, pw = images.shape[-2:]
    boxes = [(y, x) for y in window_starts(ph, wh, stride[0]) for x in window_starts(pw, ww, stride[1])]
    logits = images.new_zeros(b, num_classes, ph, pw, dtype=torch.float32)
    counts = images.new_zeros(1, 1, ph, pw, dtype=torch.float32)
    for i in range(0, len(boxes), batch_windows):
        chunk = boxes[i : i + batch_windows]
        crops = torch.cat([images[:, :, y : y + wh, x : x + ww] for y, x in chunk])
        out = fn(crops).float().view(len(chunk), b, num_classes, wh, ww)
        for (y, x), o in zip(chunk, out):
            logits[:, :, y : y + wh, x : x + ww] += o
            counts[:, :, y : y + wh, x : x + ww] += 1
    return (logits / counts)[:, :, :h, :w]


@torch.inference_mode()
def whole_inference(fn: LogitsFn, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Run `fn` on the whole image, optionally resized to `size` (H, W), logits back at input size."""
    h, w = images.shape[-2:]
    x = images if size is None else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    logits = fn(x).float()
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits
