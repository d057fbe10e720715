"""Small builders shared by tests (not fixtures, so they can be called with arguments)."""

from __future__ import annotations

from typing import Any

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


def fixed_batch_losses(trainer: Any, steps: int) -> tuple[list[float], dict[str, float]]:
    """Trainer optimizer steps on one fixed batch: -> (supervised loss per step, last step's logs)."""
    trainer.student.train()
    batch = {k: next(v) for k, v in trainer._loaders(0, 1).items()}
    losses, logs = [], {}
    for step in range(steps):
        loss, logs = trainer.step_loss(batch, step)
        loss.backward()
        trainer._optimizer_step(step)
        losses.append(logs["sup"])
    return losses, logs
