"""Mean teacher: the EMA of all student parameters (docs/method.md 2.4)."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def make_teacher(student: M) -> M:
    """A frozen copy of the student in eval mode (teacher = student at step 0)."""
    teacher = copy.deepcopy(student).eval()
    teacher.requires_grad_(False)
    return teacher


def ema_decay(step: int, alpha: float) -> float:
    """min(1 - 1/(step + 1), alpha): the standard mean-teacher ramp (Tarvainen & Valpola), so the
    teacher follows the student closely in the first steps and with `alpha` after ~1/(1-alpha)."""
    return min(1.0 - 1.0 / (step + 1), alpha)


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """theta_T <- decay * theta_T + (1 - decay) * theta_S for every parameter; buffers copied."""
    t_params: list[torch.Tensor] = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_lerp_(t_params, s_params, 1.0 - decay)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        t_buf.copy_(s_buf)
