"""An ImageNet ViT from timm as the visual tower of the "w/o VLP" rows (docs/method.md: VLP off =
ImageNet-initialised encoder; SemiVL's equivalent ablation uses timm's ViT-B/16 IN-1k).

`load_timm_visual(clip, "timm:<name>[=<file>]")` builds the timm model with its own checkpoint
loading (`pretrained_cfg_overlay=dict(file=...)` for a local file, else timm's hub resolver, which
fails at once offline) and maps its weights onto the open_clip visual tower of a config with
`clip.vision.imagenet_layout` (no pre-LayerNorm, eps 1e-6, exact GELU):

    patch_embed.proj -> conv1      timm's conv bias and its input normalisation (the model is fed
                                   CLIP-normalised images) are folded exactly into conv1 and the
                                   patch rows of the positional embedding
    cls_token, pos_embed           -> class_embedding, positional_embedding (resized to the grid)
    blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}
                                   -> transformer.resblocks.i.{ln_1, attn.in_proj, attn.out_proj,
                                      ln_2, mlp.c_fc, mlp.c_proj}
    norm                           -> ln_post
    (head)                         dropped; `proj` (to the joint space) keeps its random init

so that the tower's token features equal timm's `forward_features` on the same image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model.preprocess import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:  # open_clip ships no type information: CLIP types as Any
    from open_clip.model import CLIP

BLOCK_KEYS = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.weight": "attn.out_proj.weight", "attn.proj.bias": "attn.out_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight", "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight", "mlp.fc2.bias": "mlp.c_proj.bias",
}  # fmt: skip


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'timm:<name>' or 'timm:<name>=<file>' -> (name, file or None)."""
    body = spec.removeprefix("timm:")
    name, _, file = body.partition("=")
    if not name:
        raise ValueError(f"visual_pretrained {spec!r}: expected timm:<model name>[=<weights file>]")
    return name, file or None


def create_timm_vit(spec: str) -> nn.Module:
    """The pre-trained timm model of `spec`; PretrainedWeightsUnavailable when it cannot be loaded."""
    import timm

    from model.factory import PretrainedWeightsUnavailable

    name, file = parse_spec(spec)
    overlay = {"file": file} if file else None
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except Exception as err:  # hub, file and key errors come in many types
        where = f"the file {file}" if file else f"timm's hub tag {name} (offline here)"
        raise PretrainedWeightsUnavailable(
            f"ImageNet weights for {name} could not be loaded from {where}: {type(err).__name__}: {err}. "
            f"On a connected machine: timm.create_model('{name}', pretrained=True), or download "
            f"model.safetensors of timm/{name} from the Hugging Face hub and pass timm:{name}=<that file>."
        ) from err


def fold_input_normalisation(
    weight: torch.Tensor, bias: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch-embedding (weight [D, 3, p, p], bias [D]) for timm's normalisation -> the same maps for
    CLIP-normalised input: x_timm = x_clip * s_clip / s_timm + (m_clip - m_timm) / s_timm, folded
    in (exact: the patch convolution has no padding)."""
    m_t, s_t = torch.tensor(mean), torch.tensor(std)
    m_c, s_c = torch.tensor(CLIP_MEAN), torch.tensor(CLIP_STD)
    scale = (s_c / s_t).view(1, 3, 1, 1)
    shift = ((m_c - m_t) / s_t).view(1, 3, 1, 1)
    return weight * scale, bias + (weight * shift).sum(dim=(1, 2, 3))


def timm_to_open_clip(net: Any, layers: int) -> dict[str, torch.Tensor]:
    """timm ViT state -> open_clip visual state (prefix `visual.`), everything but `proj`.

    `net` is a timm `VisionTransformer` (Any: its `pretrained_cfg` is set at run time)."""
    sd = net.state_dict()
    cfg = net.pretrained_cfg
    weight, bias = fold_input_normalisation(
        sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], tuple(cfg["mean"]), tuple(cfg["std"])
    )
    pos = sd["pos_embed"][0].clone()
    pos[1:] += bias  # the conv bias, per patch token; the cls token has none
    out = {
        "visual.conv1.weight": weight,
        "visual.class_embedding": sd["cls_token"].reshape(-1),
        "visual.positional_embedding": pos,
        "visual.ln_post.weight": sd["norm.weight"],
        "visual.ln_post.bias": sd["norm.bias"],
    }
    for i in range(layers):
        for src, dst in BLOCK_KEYS.items():
            out[f"visual.transformer.resblocks.{i}.{dst}"] = sd[f"blocks.{i}.{src}"]
    return out


def load_timm_visual(clip: CLIP, spec: str) -> None:
    """Load an ImageNet timm ViT into `clip.visual` (strict but for `proj`); see the module doc."""
    from open_clip.model import resize_pos_embed

    if not isinstance(clip.visual.ln_pre, nn.Identity):
        raise ValueError("timm ViT weights need a config with clip.vision.imagenet_layout: true")
    net: Any = create_timm_vit(spec)  # a timm VisionTransformer
    if (
        len(net.blocks) != len(clip.visual.transformer.resblocks)
        or net.embed_dim != clip.visual.conv1.out_channels
    ):
        raise ValueError(
            f"{spec}: {len(net.blocks)} blocks of width {net.embed_dim} do not fit the config's visual tower"
        )
    state = timm_to_open_clip(net, len(net.blocks))
    resize_pos_embed(state, clip)
    result = clip.visual.load_state_dict({k[len("visual.") :]: v for k, v in state.items()}, strict=False)
    if result.unexpected_keys or set(result.missing_keys) != {"proj"}:
        raise RuntimeError(f"{spec}: timm weights do not map onto the visual tower ({result})")
