"""Dense zero-shot segmentation from CLIP towers alone (MaskCLIP; no segmentation training).

`ZeroShotGraph` has the segmentation graph's signature, so every backend, the service and the demo
run it unchanged: dense features [B, c, h, w] scored against the class-prompt embeddings,
upsampled to the input size. The last block's dense path is ClearCLIP's by default (value
projection without residual and FFN): on the mini-VLP towers it gave 4.5 mIoU against the
MaskCLIP value path's 1.0 on the synthetic target *train* split (chosen there, not on val). Captions are accepted and ignored (there is no DLG).
`zero_shot_model(weights)` builds a SemiDAViL whose `seg` is this graph, from a CLIP weights file
(the mini-VLP's `clip.safetensors`, or OpenAI's weights on a connected machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from model.backbone import DENSE_PATHS, DenseClipVisual
from model.backbone_conv import DenseClipConv
from model.config import ModelConfig, get_model_config, list_models
from model.factory import create_model
from model.segmentor import SemiDAViL

# CLIP's logit scale at the end of training (open_clip clamps it there): turns cosines into logits
# whose softmax is a usable confidence, as zero-shot CLIP classification does.
LOGIT_SCALE = 100.0
PRETRAIN_KEY = "semidavil_pretrain"
DEFAULT_DENSE_PATH = "clearclip"


class ZeroShotGraph(nn.Module):
    """forward(images [B, 3, H, W], caption_feats [B, L, c] (unused), caption_mask [B, L] (unused),
    class_embeds [K, c] L2-normalised) -> logits [B, K, H, W] fp32 = scale * cos(dense, class).

    dense_path: "clearclip" (default) or "maskclip", set on a ViT `visual` (see DenseClipVisual); a
    conv tower (DenseClipConv) has one dense reading and ignores it."""

    def __init__(
        self,
        visual: DenseClipVisual | DenseClipConv,
        scale: float = LOGIT_SCALE,
        dense_path: str = DEFAULT_DENSE_PATH,
    ) -> None:
        super().__init__()
        if dense_path not in DENSE_PATHS:
            raise ValueError(f"dense_path must be one of {sorted(DENSE_PATHS)}, got {dense_path!r}")
        if isinstance(visual, DenseClipVisual):
            visual.dense_path = dense_path  # the graph owns this visual (its SegmentationGraph is dropped)
        self.visual = visual
        self.scale = scale

    def forward(
        self,
        images: torch.Tensor,
        caption_feats: torch.Tensor,
        caption_mask: torch.Tensor,
        class_embeds: torch.Tensor,
    ) -> torch.Tensor:
        dense, _ = self.visual(images)
        logits = torch.einsum("bchw,kc->bkhw", dense.float(), class_embeds.float()) * self.scale
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def is_clip_weights(path: str | Path) -> bool:
    """True for a safetensors file holding an open_clip CLIP state dict (both towers)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    except (SafetensorError, OSError, ValueError):
        return False
    return "visual.conv1.weight" in keys and "token_embedding.weight" in keys


def infer_config(path: str | Path) -> ModelConfig:
    """The registered config of a CLIP weights file: its mini-VLP metadata, else matching shapes."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if PRETRAIN_KEY in meta:
            return get_model_config(json.loads(meta[PRETRAIN_KEY])["config"]["model"])
        shapes = {
            k: tuple(f.get_slice(k).get_shape())
            for k in ("visual.conv1.weight", "token_embedding.weight", "text_projection")
        }
        names = list(f.keys())
    layers = sum(
        1 for k in names if k.startswith("visual.transformer.resblocks.") and k.endswith(".ln_1.weight")
    )
    for name in list_models():
        cfg = get_model_config(name)
        v = cfg.clip.vision
        if (
            not v.imagenet_layout
            and shapes["visual.conv1.weight"] == (v.width, 3, v.patch_size, v.patch_size)
            and shapes["token_embedding.weight"] == (cfg.clip.text.vocab_size, cfg.clip.text.width)
            and shapes["text_projection"] == (cfg.clip.text.width, cfg.clip.embed_dim)
            and layers == v.layers
        ):
            return cfg
    raise ValueError(f"{path}: CLIP weights of no registered model config ({', '.join(list_models())})")


def zero_shot_model(path: str | Path) -> SemiDAViL:
    """A SemiDAViL whose `seg` is the zero-shot graph over the towers of a CLIP weights file (eval)."""
    model = create_model(infer_config(path), pretrained=path)
    # the same call signature as SegmentationGraph's (all a served model's callers use)
    model.seg = ZeroShotGraph(model.seg.visual)  # type: ignore[assignment]
    return model.eval()
