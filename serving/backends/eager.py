"""Eager PyTorch: the reference (fp32) and bf16 autocast.

bf16 uses `torch.autocast(device_type, dtype=torch.bfloat16)` over fp32 weights: on the AVX-512/AMX
CPUs measured in docs/stack.md section 8 that is 4.3x faster than fp32 and ~2x faster than casting
the weights to bf16 (autocast keeps reductions and softmax in fp32 and picks the fast kernels).
"""

from __future__ import annotations

from typing import Any

import torch

from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, ShapeProfile

PRECISIONS = ("fp32", "bf16")
DEFAULT_MAX_BATCH = 64


def autocast_context(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for "bf16", a disabled autocast (a no-op) for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class EagerBackend(Backend):
    """The graph run as is, under `torch.inference_mode()` (and bf16 autocast for "bf16").

    Shape-agnostic: any H, W, L, K; a profile only sets `max_batch`. Thread-safe (no state).
    """

    thread_safe = True

    def __init__(
        self,
        graph: SegmentationGraph,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        profile: ShapeProfile | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"eager precision must be one of {PRECISIONS}, got {precision!r}")
        max_batch = profile.max_batch if profile else DEFAULT_MAX_BATCH
        super().__init__(torch.device(device), max_batch, None)
        self.graph = graph.eval().to(self.device)
        self.precision = precision
        self.name = f"eager-{precision}"

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return self.graph(images, caption_feats, caption_mask, class_embeds).float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "kind": "eager"}
