"""Model configs as data: one JSON per variant in `model/configs/`, resolved by name.

Architecture lives here; pretrained weights are a separate tag (`create_model(..., pretrained=...)`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"

DLG_MODES = ("residual", "literal", "repo", "off")
FINETUNE_MODES = ("spatial", "full", "frozen")
CONV_SKIPS = (None, "resnet101", "resnet18", "stem")


@dataclass(frozen=True)
class VisionConfig:
    """CLIP ViT tower: `layers` blocks of `width` channels on `patch_size` patches.

    `timm_model_name`: a convolutional tower instead (a timm model through open_clip's timm adapter,
    average pooling and a linear projection; `model.backbone_conv`); the ViT fields are then unused
    and `patch_size` is the trunk's last stride (inputs are multiples of it).

    `imagenet_layout`: the timm/ImageNet ViT's layout instead of CLIP's (no pre-LayerNorm, LayerNorm
    eps 1e-6, exact GELU), so an ImageNet ViT's weights load exactly (`model.imagenet`).
    """

    layers: int = 12
    width: int = 768
    patch_size: int = 16
    head_width: int = 64
    mlp_ratio: float = 4.0
    imagenet_layout: bool = False
    timm_model_name: str | None = None


@dataclass(frozen=True)
class TextConfig:
    """CLIP text transformer (frozen)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12


@dataclass(frozen=True)
class ClipConfig:
    """The CLIP model the backbone and text tower come from; `embed_dim` is the joint space c."""

    open_clip_name: str | None = "ViT-B-16"
    embed_dim: int = 512
    quick_gelu: bool = True
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)


@dataclass(frozen=True)
class DLGConfig:
    """Dense Language Guidance: `residual` (DLG-R, default), `literal` (M3Att product), `repo`, `off`."""

    mode: str = "residual"
    heads: int = 1
    max_tokens: int = 77


@dataclass(frozen=True)
class DecoderConfig:
    """SemiVL's VLG head widths (docs/method.md 1.6)."""

    channels: int = 128
    text_channels: int = 128
    up_channels: tuple[int, int] = (64, 32)
    skip_channels: tuple[int, int] = (32, 16)
    num_layers: int = 2
    num_heads: int = 4
    pool_size: int = 4
    conv1_ksize: int = 7
    aspp_rates: tuple[int, ...] = (6, 12, 18)


@dataclass(frozen=True)
class ModelConfig:
    """A whole SemiDAViL variant.

    `image_size` is the square working resolution the positional embedding is stored at (other
    sizes interpolate it). `skip_layers` are the ViT blocks whose value-path features feed the
    decoder's skips (deepest first); `conv_skip` replaces the last one by a ResNet stem
    (`resnet101`, `resnet18`) or a light conv stem (`stem`). `vlp`
    False means the visual tower is not initialised from CLIP (the paper's "w/o VLP" ablation).
    """

    name: str
    image_size: int = 512
    clip: ClipConfig = field(default_factory=ClipConfig)
    vlp: bool = True
    finetune: str = "spatial"
    skip_layers: tuple[int, ...] = (4, 0)
    conv_skip: str | None = None
    dlg: DLGConfig = field(default_factory=DLGConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    description: str = ""

    def __post_init__(self) -> None:
        _check(self.dlg.mode in DLG_MODES, f"dlg.mode must be one of {DLG_MODES}, got {self.dlg.mode!r}")
        _check(self.finetune in FINETUNE_MODES, f"finetune must be one of {FINETUNE_MODES}")
        _check(self.conv_skip in CONV_SKIPS, f"conv_skip must be one of {CONV_SKIPS}")
        n_skips = len(self.skip_layers) + (self.conv_skip is not None)
        _check(n_skips == 2, f"the decoder takes 2 skips, config gives {n_skips}")
        if self.clip.vision.timm_model_name:
            # the trunk's stages are known once it is built: DenseClipConv checks the range
            _check(
                self.finetune in ("full", "frozen"), "a conv tower has no spatial fine-tuning: full or frozen"
            )
            _check(self.conv_skip is None, "a conv tower gives its own stride-4 skip: conv_skip must be null")
        else:
            _check(
                all(0 <= i < self.clip.vision.layers for i in self.skip_layers), "skip_layers out of range"
            )
        _check(
            self.image_size % self.clip.vision.patch_size == 0, "image_size must be a multiple of patch_size"
        )

    @property
    def embed_dim(self) -> int:
        return self.clip.embed_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a plain dict (JSON); unknown keys are an error."""
        clip = dict(data.get("clip", {}))
        clip["vision"] = VisionConfig(**clip.get("vision", {}))
        clip["text"] = TextConfig(**clip.get("text", {}))
        dec = dict(data.get("decoder", {}))
        for key in ("up_channels", "skip_channels", "aspp_rates"):
            if key in dec:
                dec[key] = tuple(dec[key])
        rest = {k: v for k, v in data.items() if k not in ("clip", "dlg", "decoder")}
        if "skip_layers" in rest:
            rest["skip_layers"] = tuple(rest["skip_layers"])
        return cls(
            clip=ClipConfig(**clip),
            dlg=DLGConfig(**data.get("dlg", {})),
            decoder=DecoderConfig(**dec),
            **rest,
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"invalid model config: {message}")


def list_models() -> list[str]:
    """Names of the registered model configs."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """Load a registered config by name; `overrides` replace top-level fields (e.g. dlg=DLGConfig(...))."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"unknown model config {name!r}; known: {list_models()}")
    cfg = ModelConfig.from_dict(json.loads(path.read_text()))
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
