"""Counting a graph's FLOPs and parameters per stage: a library for the benchmark scripts.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, reported as 2 x MACs (its convention).
It counts matrix products and convolutions only; `attention_flop_mapping` adds a formula for
`scaled_dot_product_attention` where the installed torch has none for the op that runs on CPU, and
`count_flops` lists the ops that ran without being counted. Stages of `SemiDAViL.seg`: backbone
(`seg.features`), DLG, decoder and the final upsample (`stage_fns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import model

STAGES = ("backbone", "dlg", "decoder", "upsample")

# Ops that only move or re-view memory: not "uncounted compute" worth listing.
_NO_COMPUTE_OPS = {
    "view",
    "_unsafe_view",
    "reshape",
    "transpose",
    "permute",
    "expand",
    "t",
    "unsqueeze",
    "squeeze",
    "slice",
    "select",
    "split",
    "split_with_sizes",
    "unbind",
    "detach",
    "alias",
    "clone",
    "contiguous",
    "_to_copy",
    "to",
    "copy_",
    "empty",
    "empty_like",
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "new_empty",
    "new_zeros",
    "full",
    "scalar_tensor",
    "lift_fresh",
    "cat",
    "stack",
    "constant_pad_nd",
    "as_strided",
    "arange",
    "expand_as",
    "flatten",
    "index",
    "_reshape_alias",
}


# ------------------------------------------------------------------------------------------------ FLOPs


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2 x MACs) of softmax(Q K^T) V: 2*B*H*Sq*Sk*Dq + 2*B*H*Sq*Sk*Dv (GQA broadcast allowed).

    Same formula as torch's own `sdpa_flop_count` for the CUDA kernels; masks and causality are
    ignored (the model uses neither), softmax and scaling are not counted.
    """
    *batch, s_q, d_q = query_shape
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    bh = 1
    for dim in batch:
        bh *= dim
    return 2 * bh * s_q * s_k * d_q + 2 * bh * s_q * s_k * d_v


def attention_flop_mapping() -> dict[Any, Any]:
    """FlopCounterMode `custom_mapping` giving the CPU attention ops their FLOP formula."""
    return {op: _attention_flops for op in attention_ops()}


def attention_ops() -> list[Any]:
    """The CPU attention ops that FlopCounterMode has no formula for in this torch version."""
    aten = torch.ops.aten
    names = ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu")
    ops = [getattr(aten, n) for n in names if hasattr(aten, n)]
    return [op for op in ops if op not in flop_registry]


def op_name(op: Any) -> str:
    return str(op).removeprefix("aten.").split(".")[0]


def _is_attention(op: Any) -> bool:
    return "attention" in op_name(op)


class _OpRecorder(TorchDispatchMode):
    """Records the ops that run without a FLOP formula, decomposing as FlopCounterMode does.

    FlopCounterMode decomposes composite ops it has no formula for (`linear` -> `addmm`) before
    counting. A composite whose decomposition reaches no counted op is recorded under its own name
    (`upsample_bilinear2d`, not its `_unsafe_index`/`mul`/`add` pieces).
    """

    def __init__(self, counted: set[Any]) -> None:
        super().__init__()
        self.counted = counted
        self.n_counted = 0
        self.events: list[Any] = []

    @property
    def ops(self) -> set[Any]:
        return set(self.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in self.counted:
            self.n_counted += 1
            return func(*args, **kwargs)
        n_counted, n_events = self.n_counted, len(self.events)
        with self:
            out = func.decompose(*args, **kwargs)
        if out is NotImplemented:
            self.events.append(packet)
            return func(*args, **kwargs)
        if self.n_counted == n_counted:  # nothing counted inside: name the composite itself
            del self.events[n_events:]
            self.events.append(packet)
        return out


def count_flops(fn, custom: dict[Any, Any]) -> dict[str, Any]:
    """Run `fn()` under FlopCounterMode; FLOPs by op name, attention FLOPs and the uncounted ops."""
    counted = set(flop_registry) | set(custom)
    with FlopCounterMode(display=False, custom_mapping=custom) as counter, _OpRecorder(counted) as recorder:
        fn()
    by_op = {op_name(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    uncounted = sorted(
        {op_name(op) for op in recorder.ops if op not in counted} - _NO_COMPUTE_OPS,
    )
    attention_names = [n for n in by_op if "attention" in n]
    if len([n for n in attention_names if by_op[n]]) > 1:  # a composite and its kernel both counted
        raise RuntimeError(f"attention counted twice: {attention_names}")
    return {
        "flops": sum(by_op.values()),
        "attention_flops": sum(by_op[n] for n in attention_names),
        "by_op": by_op,
        "uncounted_ops": uncounted,
    }


def expected_backbone_attention_flops(cfg: model.ModelConfig, height: int, width: int, batch: int = 1) -> int:
    """Analytic ViT self-attention FLOPs: the last block takes the value path (no q-k attention)."""
    v = cfg.clip.vision
    tokens = 1 + (height // v.patch_size) * (width // v.patch_size)
    return (v.layers - 1) * 2 * 2 * batch * tokens * tokens * v.width


# ----------------------------------------------------------------------------------------------- params


def _count(modules: Sequence[nn.Module | None], seen: set[int]) -> dict[str, int]:
    total = trainable = 0
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return {"all": total, "trainable": trainable}


def count_parameters(net: model.SemiDAViL) -> dict[str, dict[str, int]]:
    """Parameters (all / requires_grad) per stage, the text tower, the graph and the whole model.

    A parameter shared between stages is counted once, in the first stage that has it.
    """
    seg = net.seg
    seen: set[int] = set()
    out = {
        "backbone": _count([seg.visual, seg.conv_skip], seen),
        "dlg": _count([seg.dlg], seen),
        "decoder": _count([seg.decoder], seen),
        "upsample": {"all": 0, "trainable": 0},
    }
    out["seg_other"] = _count([seg], seen)  # anything in the graph outside the named stages
    out["seg"] = {k: sum(out[s][k] for s in (*STAGES, "seg_other")) for k in ("all", "trainable")}
    out["text"] = _count([net.text], seen)
    out["model_other"] = _count([net], seen)
    out["model"] = {k: out["seg"][k] + out["text"][k] + out["model_other"][k] for k in ("all", "trainable")}
    return out


# ------------------------------------------------------------------------------------------------ runs


def stage_fns(seg, images, caption_feats, caption_mask, class_embeds):
    """Stage callables on fixed inputs (each stage's input computed once), plus the whole graph."""
    dense, skips = seg.features(images)
    fused = seg.dlg(dense, caption_feats, caption_mask)
    logits = seg.decoder(fused, class_embeds, skips)
    size = images.shape[-2:]
    fns = {
        "backbone": lambda: seg.features(images),
        "dlg": lambda: seg.dlg(dense, caption_feats, caption_mask),
        "decoder": lambda: seg.decoder(fused, class_embeds, skips),
        "upsample": lambda: F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False),
    }
    whole = lambda: seg(images, caption_feats, caption_mask, class_embeds)  # noqa: E731
    return fns, whole
