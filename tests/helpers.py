"""Small builders shared by tests (not fixtures, so they can be called with arguments)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

from testkit.tiny_data import tiny_run_config

ROOT = Path(__file__).resolve().parents[1]
STRAIGHT_ITERS = 24  # conftest.py's straight_run: the kill-9 test's reference and the published run


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


def tiny_config(bench: Path, out: Path, **overrides: Any) -> Path:
    """A training config for the tiny benchmark at `bench` (dotted-key overrides) written to out/config.yaml."""
    cfg = tiny_run_config(bench, out)
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = out / "config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_training(
    config: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`training/run.py --config <config> --no-progress <extra>` in a subprocess, output captured."""
    cmd = [
        sys.executable,
        str(ROOT / "training" / "run.py"),
        "--config",
        str(config),
        "--no-progress",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
