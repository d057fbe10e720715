"""Small builders shared by tests (not fixtures, so they can be called with arguments)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_inputs(
    batch: int, height: int, width: int, num_classes: int, length: int, dim: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, caption_feats, caption_mask, class_embeds) with per-image caption lengths <= length."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=g)
    feats = F.normalize(torch.randn(batch, length, dim, generator=g), dim=-1)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None] < lengths[:, None]
    feats = feats * mask[..., None]
    class_embeds = F.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)
    return images, feats, mask, class_embeds
