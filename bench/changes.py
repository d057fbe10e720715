"""Before/after figures of each speed change, measured side by side (interleaved) in one process.

Each change keeps its previous implementation here (or a switch) so that the two are timed in
alternating rounds on the same inputs; a slower or noisier machine moves both columns alike.

  precast+silu   `model.fast.inference_copy`: bf16 matmul/conv weights, QuickGELU folded into SiLU
                 (the eager-bf16 backend's graph) vs autocast over the fp32 graph
  aspp-split     ASPP's 1x1 projection split by input channels (no broadcast pooled copy, the
                 concat stays channels-last) vs concatenating the expanded pooled branch
  decoder-layout the semantic-reasoning residual and Up's per-image skip add kept channels-last
                 (no NCHW <-> NHWC conversion before the adds) vs the earlier NCHW-ordered code
  class-chunks   the decoder's up path over class chunks of <= 16 MiB for the batch vs all K at
                 once (batch 1, and batch 8 in full mode)
  eager-bf16     the whole graph before (autocast over fp32 weights, concatenating ASPP) vs now
  freezing       torch.compile(bf16) with Inductor freezing (weights as constants, oneDNN
                 pre-packing) vs without (full mode only: two compiles of the target model)
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from bench.common import interleaved, synthetic_inputs
from model.decoder import ASPP, SemanticReasoning, Up, VLGDecoder
from model.fast import inference_copy
from serving.loading import random_model


def legacy_aspp_forward(self: ASPP, x: torch.Tensor) -> torch.Tensor:
    """ASPP as it was before the split projection: the pooled branch expanded and concatenated."""
    pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True)).expand_as(x)
    feats = [branch(x) for branch in self.branches] + [pooled]
    return x + self.project(torch.cat(feats, dim=1))


def legacy_semantic_forward(self: SemanticReasoning, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """SemanticReasoning before decoder-layout: the residual came back NCHW-ordered."""
    bk, c, h, w = x.shape
    k = text.shape[1]
    b = bk // k
    pooled = F.avg_pool2d(x, self.pool)
    hp, wp = pooled.shape[-2:]
    seq = pooled.view(b, k, c, hp * wp).permute(0, 3, 1, 2)
    text = text.to(seq.dtype)[:, None].expand(b, hp * wp, k, text.shape[-1])
    seq = torch.cat([seq, text], dim=-1).reshape(b * hp * wp, k, -1)
    seq = self.layer(seq)[..., :c]
    out = seq.reshape(b, hp, wp, k, c).permute(0, 3, 4, 1, 2).reshape(bk, c, hp, wp)
    return x + F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)


def legacy_up_forward(self: Up, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Up before decoder-layout: the per-image skip term added through a 5-D NCHW view."""
    x = self.up(x)
    bk, cx, h, w = x.shape
    b = skip.shape[0]
    skip = F.interpolate(skip, size=(h, w), mode="bilinear", align_corners=True)
    weight = self.conv[0][0].weight
    y = F.conv2d(x, weight[:, :cx], padding=1)
    y_skip = F.conv2d(skip, weight[:, cx:], padding=1)
    y = (y.view(b, bk // b, -1, h, w) + y_skip[:, None]).view(bk, -1, h, w)
    y = self.conv[0][2](self.conv[0][1](y))
    return self.conv[1](y)


def legacy_classes_per_chunk(self: VLGDecoder, k: int, h: int, w: int, itemsize: int, images: int = 1) -> int:
    """Before class-chunks: the up path ran over all K class maps at once."""
    return k


LEGACY: dict[str, list[tuple[type, str, Callable[..., Any]]]] = {
    "aspp": [(ASPP, "forward", legacy_aspp_forward)],
    "layout": [(SemanticReasoning, "forward", legacy_semantic_forward), (Up, "forward", legacy_up_forward)],
    "chunks": [(VLGDecoder, "classes_per_chunk", legacy_classes_per_chunk)],
}


@contextlib.contextmanager
def legacy(*changes: str) -> Iterator[None]:
    """Run the earlier implementation of each named change (keys of LEGACY) inside the block."""
    patches = [patch for name in changes for patch in LEGACY[name]]
    saved = [(cls, attr, getattr(cls, attr)) for cls, attr, _ in patches]
    try:
        for cls, attr, fn in patches:
            setattr(cls, attr, fn)
        yield
    finally:
        for cls, attr, fn in reversed(saved):
            setattr(cls, attr, fn)


def _call(fn: Callable[[], Any], bf16: bool, *earlier: str) -> Callable[[], Any]:
    """`fn` under inference mode, bf16 autocast if `bf16`, and the `earlier` implementations."""

    def run() -> Any:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16), legacy(*earlier):
            return fn()

    return run


def eager_changes(
    config: str, size: tuple[int, int], repeats: int, warmup: int, caption_length: int, num_classes: int
) -> list[dict[str, Any]]:
    """precast+silu (backbone), aspp-split (decoder, fp32 and bf16), eager-bf16 (whole graph)."""
    net = random_model(config, 0)
    graph, fast = net.seg.eval(), inference_copy(net.seg)
    images, feats, mask, embeds = synthetic_inputs(
        1, *size, num_classes, caption_length, net.config.embed_dim
    )
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        dense, skips = fast.features(images)
        fused = fast.dlg(dense, feats, mask)
    fused32, skips32 = fused.float(), [s.float() for s in skips]
    rows = []
    pairs = {
        "precast+silu": ("backbone, bf16", _call(lambda: graph.visual(images), True),
                         _call(lambda: fast.visual(images), True)),
        "aspp-split (fp32)": ("decoder, fp32", _call(lambda: graph.decoder(fused32, embeds, skips32), False, "aspp"),
                              _call(lambda: graph.decoder(fused32, embeds, skips32), False)),
        "aspp-split (bf16)": ("decoder, bf16", _call(lambda: fast.decoder(fused, embeds, skips), True, "aspp"),
                              _call(lambda: fast.decoder(fused, embeds, skips), True)),
        "decoder-layout (bf16)": ("decoder, bf16", _call(lambda: fast.decoder(fused, embeds, skips), True, "layout"),
                                  _call(lambda: fast.decoder(fused, embeds, skips), True)),
        "class-chunks (fp32)": ("decoder, fp32", _call(lambda: graph.decoder(fused32, embeds, skips32), False, "chunks"),
                                _call(lambda: graph.decoder(fused32, embeds, skips32), False)),
        "class-chunks (bf16)": ("decoder, bf16", _call(lambda: fast.decoder(fused, embeds, skips), True, "chunks"),
                                _call(lambda: fast.decoder(fused, embeds, skips), True)),
        "eager-bf16 (all eager changes)": (
            "whole graph, bf16",
            _call(lambda: graph(images, feats, mask, embeds), True, "aspp", "layout", "chunks"),
            _call(lambda: fast(images, feats, mask, embeds), True),
        ),
    }  # fmt: skip
    for change, (what, before, after) in pairs.items():
        print(f"[changes] {change} ...", file=sys.stderr, flush=True)
        stats = interleaved({"before": before, "after": after}, repeats, warmup)
        rows.append({"change": change, "what": what, **stats})
    return rows


def batch_chunks_change(
    config: str,
    size: tuple[int, int],
    batch: int,
    repeats: int,
    warmup: int,
    caption_length: int,
    num_classes: int,
) -> dict[str, Any]:
    """class-chunks at batch `batch` (bf16 decoder): all K class maps at once vs chunks sized for the batch."""
    net = random_model(config, 0)
    fast = inference_copy(net.seg)
    images, feats, mask, embeds = synthetic_inputs(
        batch, *size, num_classes, caption_length, net.config.embed_dim
    )
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        dense, skips = fast.features(images)
        fused = fast.dlg(dense, feats, mask)
    del images, dense
    print(f"[changes] class-chunks (bf16, batch {batch}) ...", file=sys.stderr, flush=True)
    fns = {
        "before": _call(lambda: fast.decoder(fused, embeds, skips), True, "chunks"),
        "after": _call(lambda: fast.decoder(fused, embeds, skips), True),
    }
    stats = interleaved(fns, repeats, warmup)
    return {"change": f"class-chunks (bf16, batch {batch})", "what": f"decoder, bf16, batch {batch}", **stats}


def freezing_change(
    config: str, size: tuple[int, int], repeats: int, warmup: int, caption_length: int, num_classes: int
) -> dict[str, Any]:
    """compile-bf16 batch 1 without vs with Inductor freezing (first-call seconds recorded too)."""
    net = random_model(config, 0)
    fast = inference_copy(net.seg)
    inputs = synthetic_inputs(1, *size, num_classes, caption_length, net.config.embed_dim)

    def forward(*args: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return fast(*args).float()

    fns, first = {}, {}
    for name, options in (("before", {"freezing": False}), ("after", {"freezing": True})):
        print(f"[changes] freezing: compiling ({name}) ...", file=sys.stderr, flush=True)
        torch._dynamo.reset()
        compiled = torch.compile(forward, dynamic=False, options=options)
        fn = _call(lambda c=compiled: c(*inputs), bf16=False)  # autocast is inside `forward`
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
        fns[name] = fn
    stats = interleaved(fns, repeats, warmup)
    return {"change": "freezing", "what": "compile-bf16 whole graph", **stats, "first_call_s": first}


def run(
    config: str,
    size: tuple[int, int],
    repeats: int,
    warmup: int,
    compile_freezing: bool = True,
    caption_length: int = 20,
    num_classes: int = 19,
) -> dict[str, Any]:
    """Every before/after pair at `config` and `size`, batch 1; times in seconds."""
    rows = eager_changes(config, size, repeats, warmup, caption_length, num_classes)
    if compile_freezing:  # full mode: the batch-8 decoder and two compiles of the target model
        rows.append(batch_chunks_change(config, size, 8, repeats, warmup, caption_length, num_classes))
        rows.append(freezing_change(config, size, repeats, warmup, caption_length, num_classes))
    return {"config": config, "size": list(size), "batch": 1, "rows": rows}
