"""Dense CLIP visual features by the MaskCLIP value path (docs/method.md 1.3).

Wraps an open_clip `VisionTransformer` without copying its weights, so open_clip's checkpoint
loading (pos-embed resizing, QuickGELU) applies unchanged and parameter names stay open_clip's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # open_clip ships no type information: these names type as Any
    from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer


def interpolate_pos_embed(
    pos_embed: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """Resize a ViT positional embedding [1 + gh*gw, D] to [1 + nh*nw, D] (bicubic, cls kept)."""
    if grid == new_grid:
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    dim = patch_pos.shape[-1]
    patch_pos = patch_pos.reshape(1, grid[0], grid[1], dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=new_grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], dim)
    return torch.cat([cls_pos, patch_pos], dim=0)


def block_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """Self-attention of an `nn.MultiheadAttention` (batch first) through fused SDPA.

    x: [B, N, D] -> [B, N, D]. Same result as `attn(x, x, x)`, but always the fused kernel and a
    plain graph for `torch.export` (no fast-path branches).
    """
    b, n, d = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(b, n, d)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def block_forward(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """One pre-LN open_clip residual block: x + attn(ln1 x), then + mlp(ln2 x). [B, N, D]."""
    x = x + block.ls_1(block_attention(block.attn, block.ln_1(x)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def value_path(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP value path of a block: q-k attention skipped, residual and FFN kept.

    v = x + O(V(LN1 x)); v = v + MLP(LN2 v). Per token, so x may omit the cls token. [B, N, D].
    """
    attn = block.attn
    d = x.shape[-1]
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
    v = x + block.ls_1(F.linear(v, attn.out_proj.weight, attn.out_proj.bias))
    return v + block.ls_2(block.mlp(block.ln_2(v)))


def clear_path(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """ClearCLIP's last-block path: the value projection alone, O(V(LN1 x)), with neither the
    residual nor the FFN (Lan et al., ECCV 2024: both carry the global, not the local, signal).
    Per token. [B, N, D]."""
    attn = block.attn
    d = x.shape[-1]
    v = F.linear(block.ln_1(x), attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
    return F.linear(v, attn.out_proj.weight, attn.out_proj.bias)


DENSE_PATHS = {"maskclip": value_path, "clearclip": clear_path}


class DenseClipVisual(nn.Module):
    """CLIP ViT returning dense joint-space features and value-path skip features.

    forward(images [B, 3, H, W], CLIP-normalised, H and W multiples of the patch size) ->
    (dense [B, c, H/p, W/p] L2-normalised over c, skips: list of [B, D, H/p, W/p], one per
    `skip_layers` entry, in that order).

    `dense_path` picks the last block's per-token path: "maskclip" (the method's value path, what
    the segmentation model trains on) or "clearclip" (`clear_path`, for zero-shot use).
    """

    # open_clip's modules, named here so that they type as themselves, not as nn.Module.__getattr__'s
    # `Tensor | Module`
    conv1: nn.Conv2d
    class_embedding: nn.Parameter
    positional_embedding: nn.Parameter
    ln_pre: nn.Module
    transformer: Transformer
    ln_post: nn.Module
    proj: nn.Parameter

    def __init__(
        self, visual: VisionTransformer, skip_layers: tuple[int, ...], dense_path: str = "maskclip"
    ) -> None:
        super().__init__()
        if dense_path not in DENSE_PATHS:
            raise ValueError(f"dense_path must be one of {sorted(DENSE_PATHS)}, got {dense_path!r}")
        self.dense_path = dense_path
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.transformer = visual.transformer
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.patch_size = int(visual.patch_size[0])
        self.grid_size = (int(visual.grid_size[0]), int(visual.grid_size[1]))
        self.width = int(visual.conv1.out_channels)
        self.embed_dim = int(visual.proj.shape[1])
        self.skip_layers = tuple(skip_layers)

    @property
    def skip_channels(self) -> list[int]:
        """Channels of each skip feature (`skip_layers` order)."""
        return [self.width] * len(self.skip_layers)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patchify, prepend cls, add (interpolated) pos-embed, ln_pre: -> [B, 1 + h*w, D], (h, w)."""
        b, _, height, width = images.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {p}")
        grid = (height // p, width // p)
        x = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(self.positional_embedding, self.grid_size, grid).to(x.dtype)
        return self.ln_pre(x), grid

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x, (h, w) = self.tokens(images)
        last = len(self.blocks) - 1
        skips: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            if i in self.skip_layers:
                skips[i] = value_path(block, x[:, 1:])
            if i == last:
                break
            x = block_forward(block, x)
        dense = DENSE_PATHS[self.dense_path](self.blocks[last], x[:, 1:])
        dense = self.ln_post(dense) @ self.proj
        dense = F.normalize(dense, dim=-1)
        # [B, h*w, C] -> [B, C, h, w] as a channels-last view (no copy; the decoder runs NHWC)
        to_map = lambda t: t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)  # noqa: E731
        return to_map(dense), [to_map(skips[i]) for i in self.skip_layers]


def set_finetune(visual: nn.Module, mode: str) -> None:
    """Choose which ViT parameters train (docs/method.md 1.3).

    `spatial` (SemiVL's spatial fine-tuning): only attention projections (`attn` in the name) and
    the positional embedding; LayerNorms, MLPs, patch embedding, cls token, ln_post and proj stay
    frozen, which keeps the dense features in CLIP's joint space. `full`: everything. `frozen`: none.
    """
    if mode == "spatial" and not isinstance(visual, DenseClipVisual):
        raise ValueError("spatial fine-tuning is defined for a ViT tower only; use full or frozen")
    for name, param in visual.named_parameters():
        if mode == "full":
            param.requires_grad_(True)
        elif mode == "frozen":
            param.requires_grad_(False)
        else:
            param.requires_grad_(".attn." in f".{name}" or name == "positional_embedding")
