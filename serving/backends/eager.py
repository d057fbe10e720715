"""Eager PyTorch: the reference (fp32) and bf16 autocast.

bf16 uses `torch.autocast(device_type, dtype=torch.bfloat16)` (autocast keeps reductions, norms and
softmax in fp32 and picks the fast kernels; it ran faster than a graph cast wholly to bf16) over `model.fast.inference_copy` of the graph: matmul/conv weights
pre-cast to bf16 (no per-call weight casts) and QuickGELU folded into SiLU. Before/after figures:
BENCHMARKS.md, "Speed changes: before / after" (bench/changes.py, row precast+silu).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.fast import inference_copy
from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, ShapeProfile

PRECISIONS = ("fp32", "bf16")
DEFAULT_MAX_BATCH = 64


def autocast_context(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast for "bf16", a disabled autocast (a no-op) for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


class EagerBackend(Backend):
    """The graph under `torch.inference_mode()`: as is for "fp32", its bf16 inference copy under
    bf16 autocast for "bf16" (the caller's graph is not modified).

    Shape-agnostic: any H, W, L, K; a profile only sets `max_batch`. Thread-safe (no state).
    """

    thread_safe = True
    torch_threads = True
    fixed_shapes = False

    @classmethod
    def create(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile | None,
        precision: str,
        device: torch.device,
        artifact: Path | None,
    ) -> EagerBackend:
        return cls(graph, precision, device, profile)

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
        graph = graph.eval().to(self.device)
        self.graph = inference_copy(graph) if precision == "bf16" else graph
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
