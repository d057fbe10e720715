"""Resumable training state in safetensors + JSON (no pickle), written atomically.

One file holds student and teacher weights, the optimizer moments and a JSON header (step,
resolved config, optimizer param groups). Writes go to a temp file that is fsynced and renamed
over the old one, so a crash or a full disk mid-write leaves the previous state intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from model.atomic import atomic_path
from model.checkpoint import standard_layout

STATE_KEY = "semidavil_train_state"


class StateError(ValueError):
    """A training state file cannot be used; the message names the file and the problem."""


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {
        f"optim.{idx}.{key}": standard_layout(value)
        for idx, per_param in sd["state"].items()
        for key, value in per_param.items()
    }
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """save_file to a temp file in the same folder, fsync, rename over `path`."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def save_modules(
    path: str | Path,
    step: int,
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    header: dict[str, Any],
) -> None:
    """Write `modules` (tensor names prefixed with their key), the optimizer and a JSON header
    (`header` plus `step` and the optimizer's param groups) atomically."""
    tensors = {
        f"{name}.{k}": standard_layout(v) for name, m in modules.items() for k, v in m.state_dict().items()
    }
    optim_tensors, groups = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    full = {**header, "step": step, "param_groups": groups}
    atomic_save(tensors, {STATE_KEY: json.dumps(full)}, Path(path))


def save_state(
    path: str | Path,
    step: int,
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the state after `step` completed optimizer steps."""
    header = {"config": config, "extra": extra or {}}
    save_modules(path, step, {"student": student, "teacher": teacher}, optimizer, header)


def read_state(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (header, tensors); StateError for a missing, truncated or foreign file.

    The file is read in one open: safe_open opens the path more than once, so a reader that
    races a save's rename (a progress poller, publish during training) could pair one file's
    header with the other's data and see a "truncated" file that is not.
    """
    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: training state not found")
    try:
        data = path.read_bytes()
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
        tensors = load(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StateError(f"{path}: unreadable training state (truncated or corrupt): {err}") from err
    if STATE_KEY not in meta:
        raise StateError(f"{path}: not a SemiDAViL training state")
    return json.loads(meta[STATE_KEY]), tensors


def _sub(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_modules(
    path: str | Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore what `save_modules` wrote, in place (strict keys); returns the header (with `step`)."""
    header, tensors = read_state(path)
    apply_state(header, tensors, modules, optimizer)
    return header


def apply_state(
    header: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    modules: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
) -> None:
    """`load_modules` on an already read state (`read_state`), for callers that check its header first."""
    device = next(next(iter(modules.values())).parameters()).device
    for name, module in modules.items():
        module.load_state_dict(_sub(tensors, f"{name}."), strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _sub(tensors, "optim.").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})


def load_state(
    path: str | Path, student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore models and optimizer in place; returns the header (with `step`)."""
    return load_modules(path, {"student": student, "teacher": teacher}, optimizer)
