"""Image normalisation shared by training, evaluation and serving (docs/method.md 1.2)."""

from __future__ import annotations

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_model_input(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images [B, 3, H, W] (or [B, H, W, 3]) in 0..255 -> CLIP-normalised float [B, 3, H, W]."""
    if images.ndim != 4:
        raise ValueError(f"expected a 4-D image batch, got shape {tuple(images.shape)}")
    if images.shape[1] != 3 and images.shape[-1] == 3:
        images = images.permute(0, 3, 1, 2)
    mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return (images.to(dtype) - mean) / std


def numpy_to_model_input(images: list[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """A list of equal-size uint8 HxWx3 RGB arrays -> CLIP-normalised float [B, 3, H, W]."""
    batch = torch.from_numpy(np.stack(images)).to(device)
    return to_model_input(batch)
