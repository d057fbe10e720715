"""The language-guided decoder: SemiVL's VLG head (docs/method.md 1.6), K classes at run time.

Per class k the cosine map S_k = cos(F_M, T_k) goes through spatial reasoning (conv + ASPP),
semantic reasoning (a transformer across the K class tokens at each pooled cell, with projected
text), and an up-sampling path with skip features; a 1-channel head gives that class's logit map.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

# 16 MiB: per-chunk tensors well under glibc's 32 MB mmap threshold (bench/changes.py: class-chunks).
CLASS_CHUNK_BYTES = 16 << 20


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


def _conv_gn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = 0 if kernel == 1 else dilation * (kernel // 2)
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False)
    return nn.Sequential(conv, _gn(cout), nn.ReLU(inplace=True))


def _conv_of(block: nn.Module) -> nn.Conv2d:
    """The conv of a `_conv_gn_relu` block (indexing an nn.Sequential types as nn.Module)."""
    return cast(nn.Conv2d, cast(nn.Sequential, block)[0])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling with a residual: [N, C, h, w] -> [N, C, h, w]."""

    def __init__(self, channels: int, rates: tuple[int, ...] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_gn_relu(channels, channels, 1)])
        self.branches.extend(_conv_gn_relu(channels, channels, 3, r) for r in rates)
        self.image_pool = _conv_gn_relu(channels, channels, 1)
        self.project = _conv_gn_relu(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # project(cat(branches, broadcast pooled)) with the 1x1 projection split by input channels
        # (conv is linear, no bias): the pooled branch's share is a [N, C, 1, 1] vector added by
        # broadcasting, so no [N, C, h, w] copy of it is made and the concat stays channels-last.
        _, norm, relu = self.project
        weight = _conv_of(self.project).weight
        pooled = self.image_pool(x.mean(dim=(2, 3), keepdim=True))  # [N, C, 1, 1]
        feats = torch.cat([branch(x) for branch in self.branches], dim=1)
        split = feats.shape[1]
        y = F.conv2d(feats, weight[:, :split]) + F.conv2d(pooled, weight[:, split:])
        return x + relu(norm(y))


class TransformerLayer(nn.Module):
    """Pre-LN transformer encoder layer with fused attention: [N, S, D] -> [N, S, D]."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, d)
        x = x + self.proj(attn)
        return x + self.ffn(self.norm2(x))


class SemanticReasoning(nn.Module):
    """Attention across the K class maps at each pooled cell, text features appended.

    x [B*K, C, h, w] (class maps of one image adjacent), text [1, K, Ct] -> [B*K, C, h, w] (residual).
    """

    def __init__(self, channels: int, text_channels: int, heads: int, pool: int) -> None:
        super().__init__()
        self.pool = pool
        self.layer = TransformerLayer(channels + text_channels, heads, 4 * channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        bk, c, h, w = x.shape
        k = text.shape[1]
        b = bk // k
        pooled = F.avg_pool2d(x, self.pool)  # [B*K, C, hp, wp]
        hp, wp = pooled.shape[-2:]
        seq = pooled.view(b, k, c, hp * wp).permute(0, 3, 1, 2)  # [B, cells, K, C]
        text = text.to(seq.dtype)[:, None].expand(b, hp * wp, k, text.shape[-1])
        seq = torch.cat([seq, text], dim=-1).reshape(b * hp * wp, k, -1)
        seq = self.layer(seq)[..., :c]
        # [B, cells, K, C] -> NHWC [B*K, hp, wp, C] viewed as NCHW: a channels-last tensor like x, so
        # the upsample writes channels-last and the residual add needs no layout conversion
        out = seq.reshape(b, hp, wp, k, c).permute(0, 3, 1, 2, 4).reshape(bk, hp, wp, c)
        out = out.contiguous().permute(0, 3, 1, 2)  # a dense NHWC copy (reshape may return a view)
        return x + F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)


class Up(nn.Module):
    """x2 transposed conv, concat the skip, two conv-GN-ReLU.

    x [B*K, Cin, h, w], skip [B, Cs, hs, ws] -> [B*K, Cout, 2h, 2w]. The skip is the same for the K
    class maps of an image, so the first conv is split by input channels (conv is linear): the
    skip's share is computed once per image and broadcast over classes, with no repeated copies.
    Same weights and result as concatenating the repeated skip.
    """

    def __init__(self, cin: int, cout: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin - skip_channels, kernel_size=2, stride=2)
        self.conv = nn.Sequential(_conv_gn_relu(cin, cout), _conv_gn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        _, cx, h, w = x.shape
        skip = F.interpolate(skip, size=(h, w), mode="bilinear", align_corners=True)
        first = cast(nn.Sequential, self.conv[0])
        weight = _conv_of(first).weight
        y = F.conv2d(x, weight[:, :cx], padding=1)
        y_skip = F.conv2d(skip, weight[:, cx:], padding=1)
        y = _add_per_image(y, y_skip)
        y = first[2](first[1](y))
        return self.conv[1](y)


def _tracing() -> bool:
    """True while torch.compile / torch.export / TorchScript (incl. the ONNX fallback) trace."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()


def _add_per_image(x: torch.Tensor, per_image: torch.Tensor) -> torch.Tensor:
    """x [B*K, C, h, w] + per_image [B, C, h, w] broadcast over the K maps of each image.

    Added in NHWC order: for channels-last tensors (the decoder's layout) both views are dense, so
    the broadcast is a plain contiguous add; the result is channels-last. Any layout gives the
    same values.
    """
    bk, c, h, w = x.shape
    b = per_image.shape[0]
    out = x.permute(0, 2, 3, 1).reshape(b, bk // b, h, w, c) + per_image.permute(0, 2, 3, 1)[:, None]
    return out.view(bk, h, w, c).permute(0, 3, 1, 2)


class VLGDecoder(nn.Module):
    """forward(feats [B, c, h, w], class_embeds [K, c], skips: 2 x [B, Cs_i, *, *]) -> [B, K, 4h, 4w].

    `skip_in` are the channel counts of the two raw skip features (deepest first).
    """

    def __init__(
        self,
        embed_dim: int,
        skip_in: tuple[int, int],
        channels: int = 128,
        text_channels: int = 128,
        up_channels: tuple[int, int] = (64, 32),
        skip_channels: tuple[int, int] = (32, 16),
        num_layers: int = 2,
        num_heads: int = 4,
        pool_size: int = 4,
        conv1_ksize: int = 7,
        aspp_rates: tuple[int, ...] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, conv1_ksize, padding=conv1_ksize // 2)
        self.aspp = ASPP(channels, aspp_rates)
        self.text_proj = nn.Sequential(nn.Linear(embed_dim, text_channels), nn.ReLU())
        self.layers = nn.ModuleList(
            SemanticReasoning(channels, text_channels, num_heads, pool_size) for _ in range(num_layers)
        )
        self.skip_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
            for cin, cout in zip(skip_in, skip_channels)
        )
        self.up1 = Up(channels, up_channels[0], skip_channels[0])
        self.up2 = Up(up_channels[0], up_channels[1], skip_channels[1])
        self.head = nn.Conv2d(up_channels[1], 1, 3, padding=1)
        # Up-sampling path run over class chunks of at most this many bytes per image (0: all K at
        # once); see classes_per_chunk. A run-time setting, not a weight: no checkpoint change.
        self.class_chunk_bytes = CLASS_CHUNK_BYTES
        # Channels-last conv weights make every conv here run on NHWC activations without layout
        # reorders (oneDNN on CPU, tensor cores on GPU): 0.95 s -> 0.66 s for vitb16 at 512x1024 on
        # the 2-core dev CPU (bench/model_profile.py). Loading a state dict keeps this layout.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stubs omit memory_format

    def forward(
        self, feats: torch.Tensor, class_embeds: torch.Tensor, skips: list[torch.Tensor]
    ) -> torch.Tensor:
        b, _, h, w = feats.shape
        k = class_embeds.shape[0]
        text = F.normalize(class_embeds.to(feats.dtype), dim=-1)
        sim = torch.einsum("bchw,kc->bkhw", F.normalize(feats, dim=1), text)  # cosine maps
        x = self.aspp(self.conv1(sim.reshape(b * k, 1, h, w)))  # [B*K, C, h, w]
        text_feats = self.text_proj(text)[None]  # [1, K, Ct]
        for layer in self.layers:
            x = layer(x, text_feats)
        projected = [proj(s) for proj, s in zip(self.skip_proj, skips)]
        maps = [self._class_maps(chunk, projected, b) for chunk in self._class_chunks(x, b, k)]
        return maps[0] if len(maps) == 1 else torch.cat(maps, dim=1)

    def _class_maps(self, x: torch.Tensor, projected: list[torch.Tensor], b: int) -> torch.Tensor:
        """Up-sampling path and head for some class maps: x [B*k, C, h, w] -> logits [B, k, 4h, 4w]."""
        x = self.up2(self.up1(x, projected[0]), projected[1])
        return self.head(x).view(b, -1, x.shape[-2], x.shape[-1])

    def classes_per_chunk(self, k: int, h: int, w: int, itemsize: int, images: int = 1) -> int:
        """How many class maps per image go through the up-sampling path at once (1..k).

        The up path's largest per-class activation is about 64 x 4h x 4w values; run over all K
        classes at once these tensors are tens of MB at 512x1024 (above glibc's 32 MB mmap
        threshold, so every forward page-faults them in anew, and far beyond the caches). Chunks of
        at most `class_chunk_bytes` for all `images` of the batch stay in the allocator's heap and
        nearer the caches. Classes are independent in this path: the result is the same (up to
        rounding).
        """
        if self.class_chunk_bytes <= 0:
            return k
        widest = max(
            max(self.up1.up.out_channels, _conv_of(self.up1.conv[0]).out_channels) * 4 * h * w,
            max(self.up2.up.out_channels, _conv_of(self.up2.conv[0]).out_channels) * 16 * h * w,
        )
        return max(1, min(k, self.class_chunk_bytes // (widest * itemsize * images)))

    def _class_chunks(self, x: torch.Tensor, b: int, k: int) -> list[torch.Tensor]:
        """x [B*K, C, h, w] -> chunks [B*k_i, C, h, w] over the class axis (each image's maps kept).

        Eager: chunks sized for the whole batch. Traced (torch.compile, torch.export, ONNX): sized
        per image, so the graph does not depend on the batch size (dynamic batch stays dynamic).
        """
        images = 1 if _tracing() else b
        step = self.classes_per_chunk(k, x.shape[-2], x.shape[-1], x.element_size(), images)
        if step >= k:
            return [x]
        per_image = x.view(b, k, *x.shape[1:])
        return [per_image[:, i : i + step].flatten(0, 1) for i in range(0, k, step)]
