"""`create_model(name, pretrained=None | "openai" | path)`: the one place that builds and loads models.

Pretrained tags are apart from architectures. `"openai"` goes through open_clip's own resolver
(HF hub `timm/vit_base_patch16_clip_224.openai`), a path goes through `open_clip.load_checkpoint`
(which resizes the 14x14 positional embedding to the working grid). Both need QuickGELU, which
every config here sets.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from model.backbone import DenseClipVisual, set_finetune
from model.backbone_conv import DenseClipConv
from model.config import ModelConfig, get_model_config
from model.conv_skip import ResNetSkip
from model.segmentor import SegmentationGraph, SemiDAViL
from model.text import ClipTextEncoder

if TYPE_CHECKING:  # open_clip ships no type information: these names type as Any
    from open_clip.model import CLIP
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer


class PretrainedWeightsUnavailable(RuntimeError):
    """The requested pretrained CLIP weights cannot be found (offline, missing file)."""


def build_clip(cfg: ModelConfig) -> nn.Module:
    """An open_clip `CLIP` with random weights for this config, pos-embed at the working size."""
    import open_clip

    vision = cfg.clip.vision
    vision_cfg: dict[str, object] = {"image_size": cfg.image_size}
    if vision.timm_model_name:
        vision_cfg.update(timm_model_name=vision.timm_model_name, timm_pool="avg", timm_proj="linear")
    else:
        vision_cfg.update(
            layers=vision.layers,
            width=vision.width,
            patch_size=vision.patch_size,
            head_width=vision.head_width,
            mlp_ratio=vision.mlp_ratio,
            no_ln_pre=vision.imagenet_layout,
        )
    text = cfg.clip.text
    text_cfg = {
        "context_length": text.context_length,
        "vocab_size": text.vocab_size,
        "width": text.width,
        "heads": text.heads,
        "layers": text.layers,
    }
    clip = open_clip.CLIP(cfg.clip.embed_dim, vision_cfg, text_cfg, quick_gelu=cfg.clip.quick_gelu)
    if vision.imagenet_layout:
        to_imagenet_layout(clip.visual)
    return clip


def to_imagenet_layout(visual: VisionTransformer) -> None:
    """timm's ViT numerics in an open_clip visual tower: LayerNorm eps 1e-6 and exact GELU (the
    pre-LayerNorm is already left out by `no_ln_pre`)."""
    for module in visual.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = 1e-6
    for block in visual.transformer.resblocks:
        block.mlp.gelu = nn.GELU()


def resolve_pretrained(cfg: ModelConfig, pretrained: str) -> str:
    """Turn a pretrained tag or path into a local weights file, or raise PretrainedWeightsUnavailable."""
    if os.path.exists(pretrained):
        return str(pretrained)
    if os.sep in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors")):
        raise PretrainedWeightsUnavailable(f"pretrained weights file not found: {pretrained}")
    import open_clip

    name = cfg.clip.open_clip_name
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if name else {}
    if not tag_cfg:
        raise PretrainedWeightsUnavailable(
            f"no pretrained tag {pretrained!r} for {cfg.name} (open_clip model {name}); pass a weights file path"
        )
    try:
        return open_clip.download_pretrained(tag_cfg)
    except Exception as err:  # hub libraries raise many types when offline
        raise PretrainedWeightsUnavailable(
            f"CLIP weights {name}/{pretrained} are not in the local cache and the hub is offline "
            f"({type(err).__name__}). Download them on a connected machine "
            f"(SEMIDAVIL_ONLINE=1, or open_clip.create_model('{name}', pretrained='{pretrained}')) "
            "or pass the weights file path as pretrained=."
        ) from err


def load_clip_weights(clip: CLIP, cfg: ModelConfig, pretrained: str) -> None:
    """Load CLIP weights (tag or path) into `clip`; with `vlp=False` only the text tower is kept."""
    import open_clip

    path = resolve_pretrained(cfg, pretrained)
    if cfg.vlp:
        open_clip.load_checkpoint(clip, path, strict=True)
        return
    if cfg.clip.vision.timm_model_name:  # "w/o VLP" on a conv tower: the file's text side only
        from open_clip.factory import load_state_dict

        _load_text_side(clip, load_state_dict(path), path)
        return
    if not cfg.clip.vision.imagenet_layout:  # "w/o VLP": only the text side comes from CLIP
        visual_state = {k: v.clone() for k, v in clip.visual.state_dict().items()}
        open_clip.load_checkpoint(clip, path, strict=True)
        clip.visual.load_state_dict(visual_state)
        return
    # A visual tower in the ImageNet layout cannot take CLIP's visual keys: the file is read into a
    # CLIP of the standard layout (strict keys), and its text side is copied over.
    vision = dataclasses.replace(cfg.clip.vision, imagenet_layout=False)
    donor = build_clip(dataclasses.replace(cfg, clip=dataclasses.replace(cfg.clip, vision=vision)))
    open_clip.load_checkpoint(donor, path, strict=True)
    _load_text_side(clip, donor.state_dict(), path)


def _load_text_side(clip: CLIP, state: dict[str, Any], path: str) -> None:
    """Load the non-visual keys of a CLIP state dict into `clip` (strict on those keys)."""
    text_state = {k: v for k, v in state.items() if not k.startswith("visual.")}
    result = clip.load_state_dict(text_state, strict=False)
    if result.unexpected_keys or any(not k.startswith("visual.") for k in result.missing_keys):
        raise RuntimeError(f"{path}: text weights do not fit ({result})")


def load_visual_weights(clip: CLIP, path: str | Path) -> None:
    """Load only the visual tower (`visual.*` keys, strict) from an open_clip weights file.

    For "w/o VLP" rows whose visual tower comes from a vision-only pre-training (e.g.
    `python -m training.pretrain --objective vision`) while the text tower comes from CLIP.
    The positional embedding is resized to the working grid as open_clip does.
    """
    from open_clip.factory import load_state_dict
    from open_clip.model import resize_pos_embed

    if not os.path.exists(path):
        raise PretrainedWeightsUnavailable(f"visual weights file not found: {path}")
    state = load_state_dict(str(path))
    resize_pos_embed(state, clip)
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise RuntimeError(f"{path}: no visual.* weights in this file (not an open_clip CLIP state dict)")
    clip.visual.load_state_dict(visual, strict=True)


def dense_visual(
    visual: VisionTransformer | TimmModel, cfg: ModelConfig, *, skip_layers: Sequence[int] | None = None
) -> DenseClipVisual | DenseClipConv:
    """The dense-feature wrapper of an open_clip visual tower: MaskCLIP's value path for a ViT, the
    per-location projection for a conv tower. `skip_layers` replaces the config's (e.g. () for
    dense features only)."""
    skips = cfg.skip_layers if skip_layers is None else tuple(skip_layers)
    if cfg.clip.vision.timm_model_name:
        return DenseClipConv(visual, skips)
    return DenseClipVisual(visual, skips)


def create_model(
    name: str | ModelConfig,
    pretrained: str | Path | None = None,
    finetune: str | None = None,
    visual_pretrained: str | Path | None = None,
    conv_skip_weights: str | Path | None = None,
) -> SemiDAViL:
    """Build a SemiDAViL model.

    name: a registered config name (`model.config.list_models()`) or a ModelConfig.
    pretrained: None (random CLIP), "openai" (open_clip's tag), or a path to a CLIP weights file
        (.bin/.pt/.safetensors, open_clip or OpenAI layout). SemiDAViL checkpoints are loaded with
        `model.checkpoint.load_model` instead.
    finetune: override the config's ViT fine-tuning rule ("spatial", "full", "frozen").
    visual_pretrained: with `vlp=False` only, the visual tower's weights instead of random ones:
        an open_clip weights file (a vision-only pre-training, `training.pretrain --objective
        vision`) or `timm:<name>` / `timm:<name>=<file>`, an ImageNet ViT through timm
        (`model.imagenet`; the config needs `clip.vision.imagenet_layout`): the paper's "w/o VLP".
    conv_skip_weights: ImageNet weights of a ResNet conv skip (`conv_skip: resnet101`): a torchvision
        state-dict file or `torchvision[:IMAGENET1K_V2]`.
    """
    cfg = name if isinstance(name, ModelConfig) else get_model_config(name)
    clip = build_clip(cfg)
    if pretrained is not None:
        load_clip_weights(clip, cfg, str(pretrained))
    if visual_pretrained is not None:
        if cfg.vlp:
            raise ValueError(
                "visual_pretrained is for vlp=False models (w/o VLP); with VLP the visual tower is CLIP's"
            )
        if str(visual_pretrained).startswith("timm:"):
            from model.imagenet import load_timm_visual

            load_timm_visual(clip, str(visual_pretrained))
        else:
            load_visual_weights(clip, visual_pretrained)
    visual = dense_visual(clip.visual, cfg)
    model = SemiDAViL(cfg, SegmentationGraph(visual, cfg), ClipTextEncoder(clip))
    if conv_skip_weights is not None:
        skip = model.seg.conv_skip
        if not isinstance(skip, ResNetSkip):
            raise ValueError(
                f"conv_skip_weights needs a ResNet conv skip; {cfg.name} has conv_skip {cfg.conv_skip!r}"
            )
        skip.load_imagenet(str(conv_skip_weights))
    set_finetune(model.seg.visual, finetune or (cfg.finetune if cfg.vlp else "full"))
    return model
