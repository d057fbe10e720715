"""The segmentation graph and the whole SemiDAViL model.

`SegmentationGraph.forward(images, caption_feats, caption_mask, class_embeds) -> logits` is the
compiled unit (torch.export, ONNX, Torch-TensorRT): tensors only, no tokenizer, no I/O.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.backbone import DenseClipVisual
from model.backbone_conv import DenseClipConv
from model.config import ModelConfig
from model.conv_skip import build_conv_skip
from model.decoder import VLGDecoder
from model.dlg import DenseLanguageGuidance
from model.text import ClipTextEncoder


class SegmentationGraph(nn.Module):
    """Backbone -> DLG -> VLG decoder -> logits at input resolution.

    forward(images [B, 3, H, W] float, CLIP-normalised, H and W multiples of 16;
            caption_feats [B, L, c]; caption_mask [B, L] bool (True = real token; L >= 1);
            class_embeds [K, c] L2-normalised) -> logits [B, K, H, W] (fp32 under autocast too).
    """

    def __init__(self, visual: DenseClipVisual | DenseClipConv, cfg: ModelConfig) -> None:
        super().__init__()
        self.visual = visual
        self.conv_skip = build_conv_skip(cfg.conv_skip) if cfg.conv_skip else None
        c = cfg.embed_dim
        # The DLG's initialisation draws from a forked RNG, so that for one seed every DLG mode
        # ("off" included: no parameters) leaves the decoder with the same initial weights and
        # an ablation's gap is not init noise.
        with torch.random.fork_rng(devices=[]):
            self.dlg = DenseLanguageGuidance(c, cfg.dlg.mode, cfg.dlg.heads, cfg.dlg.max_tokens)
        skip_in = visual.skip_channels + ([self.conv_skip.out_channels] if self.conv_skip else [])
        dc = cfg.decoder
        self.decoder = VLGDecoder(
            c,
            (skip_in[0], skip_in[1]),
            dc.channels,
            dc.text_channels,
            dc.up_channels,
            dc.skip_channels,
            dc.num_layers,
            dc.num_heads,
            dc.pool_size,
            dc.conv1_ksize,
            dc.aspp_rates,
        )

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Dense CLIP features [B, c, h, w] and the decoder's two skip features."""
        dense, skips = self.visual(images)
        if self.conv_skip is not None:
            skips = [*skips, self.conv_skip(images)]
        return dense, skips

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        dense, skips = self.features(images)
        fused = self.dlg(dense, caption_feats, caption_mask)
        logits = self.decoder(fused, class_embeds, skips)
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class SemiDAViL(nn.Module):
    """The model: `seg` (the segmentation graph) plus the frozen CLIP text tower `text`.

    Calling the model runs `seg`; class embeddings and caption features come from
    `model.text.TextEmbedder(model.text)` and are computed outside the graph.
    """

    def __init__(self, cfg: ModelConfig, seg: SegmentationGraph, text: ClipTextEncoder) -> None:
        super().__init__()
        self.config = cfg
        self.seg = seg
        self.text = text

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        return self.seg(images, caption_feats, caption_mask, class_embeds)
