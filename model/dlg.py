"""Dense Language Guidance (docs/method.md 1.5): fuse per-token caption features into dense features.

Modes: `residual` (DLG-R, the default: F_M = F_V + gamma * W_o[F^A_L || G], gamma zero-initialised
so F_M = F_V at initialisation), `literal` (the M3Att-style pixel x token product), `repo` (the
official repository's final form) and `off` (F_M = F_V). Padded caption tokens are masked; a
caption with no real token leaves F_V unchanged in `residual` mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` that gives exact zeros where `valid` is False and all-zero rows when a
    slice has no valid entry (instead of NaN). `valid` broadcasts against `scores`.

    The fill is a finite -1e4 (not the dtype minimum, which becomes -inf once a compiler casts
    the graph constant to fp16 and turns an empty caption into NaN)."""
    scores = scores.masked_fill(~valid, -1.0e4)
    return torch.softmax(scores, dim=dim) * valid


class DenseLanguageGuidance(nn.Module):
    """forward(visual [B, c, h, w], text [B, L, c], mask [B, L] bool) -> [B, c, h, w]."""

    def __init__(self, dim: int, mode: str = "residual", heads: int = 1, max_tokens: int = 77) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.mode, self.heads, self.max_tokens = mode, heads, max_tokens
        if mode == "off":
            return
        self.key_v, self.value_v = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.key_l, self.value_l = nn.Linear(dim, dim), nn.Linear(dim, dim)
        if mode == "residual":
            self.out = nn.Linear(2 * dim, dim, bias=False)  # no bias: no tokens -> no change
            self.gamma = nn.Parameter(torch.zeros(dim))
        elif mode == "literal":
            self.out = nn.Linear(max_tokens, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # [B, heads, n, d_h]

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, dh = x.shape
        return x.transpose(1, 2).reshape(b, n, self.heads * dh)

    def forward(self, visual: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return visual
        b, c, h, w = visual.shape
        f_v = visual.flatten(2).transpose(1, 2)  # [B, N, c]
        text = text.to(f_v.dtype)
        k_v, v_v = self._split(self.key_v(f_v)), self._split(self.value_v(f_v))
        k_l, v_l = self._split(self.key_l(text)), self._split(self.value_l(text))
        scores = k_l @ k_v.transpose(-1, -2) / math.sqrt(k_l.shape[-1])  # A: [B, heads, L, N]
        valid = mask[:, None, :, None]  # [B, 1, L, 1]
        attn_pix = masked_softmax(scores, valid, dim=2)  # each pixel -> distribution over tokens
        if self.mode == "repo":
            fused = attn_pix.transpose(-1, -2) @ v_l + attn_pix.transpose(-1, -2) @ (attn_pix @ v_v)
            return self._merge(fused).transpose(1, 2).reshape(b, c, h, w)
        attn_tok = torch.softmax(scores, dim=-1) * valid  # each token -> distribution over pixels
        lang_att_vis = attn_tok @ v_v  # F^A_V: [B, heads, L, d_h]
        vis_att_lang = attn_pix.transpose(-1, -2) @ v_l  # F^A_L: [B, heads, N, d_h]
        if self.mode == "literal":
            return self._literal(vis_att_lang, lang_att_vis, b, h, w)
        redistributed = attn_pix.transpose(-1, -2) @ lang_att_vis  # G: [B, heads, N, d_h]
        delta = self.out(torch.cat([self._merge(vis_att_lang), self._merge(redistributed)], dim=-1))
        fused = f_v + self.gamma * delta
        return fused.transpose(1, 2).reshape(b, c, h, w)

    def _literal(self, f_al: torch.Tensor, f_av: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        f_al, f_av = self._merge(f_al), self._merge(f_av)  # [B, N, c], [B, L, c]
        length = f_av.shape[1]
        if length > self.max_tokens:
            raise ValueError(f"caption has {length} tokens; literal DLG supports at most {self.max_tokens}")
        product = f_al @ f_av.transpose(1, 2) / math.sqrt(f_al.shape[-1])  # M: [B, N, L]
        product = F.pad(product, (0, self.max_tokens - length))
        fused = self.out(product)  # [B, N, c]
        return fused.transpose(1, 2).reshape(b, -1, h, w)
