"""AdamW with per-module learning-rate multipliers and the poly schedule (docs/method.md 2.5)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.schema import OptimSection

# token_embedding: a trained text tower sees a few dozen of its 49408 tokens; decaying the rest
# would shrink every word the class prompts do not use
NO_DECAY_HINTS = (
    "norm",
    "ln_",
    "bias",
    "positional_embedding",
    "class_embedding",
    "gamma",
    "token_embedding",
)


def _group_of(name: str) -> str:
    if name.startswith("seg.visual."):
        return "backbone"
    if name.startswith("seg.conv_skip."):
        return "conv_skip"
    if name.startswith("text."):
        return "text"  # only with model.text_finetune=full
    return "head"  # DLG + decoder


def _decays(name: str, param: torch.Tensor) -> bool:
    return param.ndim > 1 and not any(h in name for h in NO_DECAY_HINTS)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, lr_mult: dict[str, float]
) -> list[dict[str, Any]]:
    """Trainable parameters grouped by (module group, decay); each group carries its `lr_mult`."""
    groups: dict[tuple[str, bool], list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((_group_of(name), _decays(name, param)), []).append(param)
    return [
        {
            "params": params,
            "name": f"{group}{'' if decay else '_no_decay'}",
            "lr_mult": lr_mult[group],
            "lr": lr * lr_mult[group],
            "weight_decay": weight_decay if decay else 0.0,
        }
        for (group, decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with the config's multipliers."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.lr_mult)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def poly_lr(step: int, base_lr: float, total: int, power: float, warmup: int = 0) -> float:
    """Linear warm-up then base_lr * (1 - step/total)^power."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * max(0.0, 1.0 - step / total) ** power


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply a base learning rate to every group (times its multiplier)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"]
