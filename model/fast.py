"""An inference copy of the segmentation graph for bf16 autocast on CPU (and GPU) backends.

Two rewrites, both exact in real arithmetic and both measured in BENCHMARKS.md:

- matmul and conv weights stored in bf16: autocast would otherwise cast every fp32 weight to bf16
  on every call (85 M ViT-B/16 weights read and written per forward); norms stay fp32;
- QuickGELU folded into SiLU: x * sigmoid(1.702 x) = silu(1.702 x) / 1.702, so c_fc's weight and
  bias are scaled by 1.702, c_proj's weight by 1 / 1.702, and the three element-wise kernels
  (mul, sigmoid, mul over [B, N, 4D]) become one.

The training graph and checkpoints are untouched: this is a copy with its own parameters.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from open_clip.transformer import QuickGELU
from torch import nn

from model.segmentor import SegmentationGraph

QUICK_GELU_ALPHA = 1.702
MATMUL_MODULES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.MultiheadAttention)


def fold_quick_gelu(mlp: nn.Module) -> bool:
    """Rewrite an open_clip MLP (c_fc, gelu, c_proj) from QuickGELU to SiLU in place.

    Returns False (and changes nothing) when its activation is not QuickGELU.
    """
    if not isinstance(getattr(mlp, "gelu", None), QuickGELU):
        return False
    c_fc, c_proj = cast(nn.Linear, mlp.c_fc), cast(nn.Linear, mlp.c_proj)
    with torch.no_grad():
        c_fc.weight.mul_(QUICK_GELU_ALPHA)
        c_fc.bias.mul_(QUICK_GELU_ALPHA)
        c_proj.weight.div_(QUICK_GELU_ALPHA)
    mlp.gelu = nn.SiLU(inplace=True)  # in place: c_fc output is a temporary; saves a [B, N, 4D] alloc
    return True


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype) -> int:
    """Store the parameters of linear, conv and attention layers (and ViT `proj`) in `dtype`.

    Norm layers and other parameters keep their dtype. Returns the number of tensors cast.
    """
    cast = 0
    for sub in module.modules():
        if isinstance(sub, MATMUL_MODULES):
            for param in sub.parameters(recurse=False):
                param.data = param.data.to(dtype)
                cast += 1
    proj = getattr(getattr(module, "visual", None), "proj", None)
    if isinstance(proj, nn.Parameter):
        proj.data = proj.data.to(dtype)
        cast += 1
    return cast


def inference_copy(graph: SegmentationGraph, dtype: torch.dtype = torch.bfloat16) -> SegmentationGraph:
    """A copy of `graph` in eval mode for autocast(`dtype`) inference; `graph` is not modified.

    Same forward signature and outputs as `graph` under autocast(`dtype`), up to rounding.
    The copy holds the weights in `dtype` (about half the memory of the fp32 graph).
    """
    fast = copy.deepcopy(graph).eval()
    for param in fast.parameters():
        param.requires_grad_(False)
    for block in getattr(fast.visual, "blocks", ()):  # ViT towers; a conv tower has none
        fold_quick_gelu(cast(nn.Module, block.mlp))
    cast_matmul_weights(fast, dtype)
    return fast
