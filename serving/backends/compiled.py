"""`torch.compile` of the segmentation graph (Inductor), fp32 or under bf16 autocast.

Compilation is lazy: the first call for a batch size traces and compiles (`dynamic=False`, so each
shape gets its own specialised kernels). To bound the number of compiles, batches are padded up to
the next bucket (1, 2, 4, ..., max_batch) and the padding is cut from the output. First-call times
per bucket are recorded in `compile_seconds`. Measured for semidavil-tiny at 128x256 on the shared
2-core dev CPU: tens of seconds for the first bucket with a cold Inductor cache, less when its on-disk
cache is warm, more for ViT-B/16 at 512x1024 (BENCHMARKS.md records the build times).
Not thread-safe while compiling: the predictor serialises calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.fast import inference_copy
from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, ShapeProfile
from serving.backends.eager import PRECISIONS, autocast_context


def batch_buckets(max_batch: int) -> list[int]:
    """Powers of two below max_batch, then max_batch itself: 8 -> [1, 2, 4, 8], 6 -> [1, 2, 4, 6]."""
    buckets = [1]
    while buckets[-1] * 2 < max_batch:
        buckets.append(buckets[-1] * 2)
    if buckets[-1] != max_batch:
        buckets.append(max_batch)
    return buckets


def pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad dim 0 up to `size` (zeros are valid inputs: an all-False mask means no caption)."""
    extra = size - tensor.shape[0]
    if extra <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((extra, *tensor.shape[1:]))])


class TorchCompileBackend(Backend):
    """torch.compile(graph, dynamic=False[, mode]) for one shape profile (fixed H, W, L, K)."""

    thread_safe = False

    @classmethod
    def create(
        cls,
        graph: SegmentationGraph,
        profile: ShapeProfile | None,
        precision: str,
        device: torch.device,
        artifact: Path | None,
    ) -> TorchCompileBackend:
        assert profile is not None  # create_backend refuses None for fixed-shape backends
        return cls(graph, profile, precision, device)

    def __init__(
        self,
        graph: SegmentationGraph,
        profile: ShapeProfile,
        precision: str = "bf16",
        device: str | torch.device = "cpu",
        mode: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"compile precision must be one of {PRECISIONS}, got {precision!r}")
        super().__init__(torch.device(device), profile.max_batch, profile)
        graph = graph.eval().to(self.device)
        self.graph = inference_copy(graph) if precision == "bf16" else graph
        self.precision = precision
        self.mode = mode
        self.name = f"compile-{precision}"
        self.buckets = batch_buckets(profile.max_batch)
        self.compile_seconds: dict[int, float] = {}
        self._lock = threading.Lock()
        # freezing: weights become constants, so Inductor pre-packs them for oneDNN (and folds
        # the bf16 casts); valid because serving never updates weights (inference_mode only).
        options = {**(torch._inductor.list_mode_options(mode) if mode else {}), "freezing": True}
        self._compiled: Callable[..., torch.Tensor] = torch.compile(self._run, dynamic=False, options=options)

    def _run(
        self, images: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor, embeds: torch.Tensor
    ) -> torch.Tensor:
        with autocast_context(self.device, self.precision):
            return self.graph(images, feats, mask, embeds).float()

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        b = images.shape[0]
        bucket = next(size for size in self.buckets if size >= b)
        padded = [pad_batch(t, bucket) for t in (images, caption_feats, caption_mask)]
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            logits = self._compiled(*padded, class_embeds)
            if bucket not in self.compile_seconds:
                self.compile_seconds[bucket] = time.perf_counter() - start
        return logits[:b]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "kind": "torch.compile",
            "mode": self.mode or "default",
            "batch_buckets": self.buckets,
            "first_call_seconds": {str(k): round(v, 2) for k, v in self.compile_seconds.items()},
        }
