"""Optional convolutional skip encoders for the decoder's stride-4 skip.

`resnet101` / `resnet18`: SemiVL's Cityscapes variant, a ResNet stem + layer1. The graph input is
CLIP-normalised; the ResNet sees ImageNet statistics (docs/method.md 1.2), so the input is re-normalised
inside the module.

`stem`: a light three-conv stem (about 0.2 GFLOP at 256x512) for small CPU models, where a ViT
with 16-pixel patches alone cannot draw pole- or sign-sized objects and a ResNet's layer1 would
cost more than the whole rest of the network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.preprocess import CLIP_MEAN, CLIP_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetSkip(nn.Module):
    """forward(images [B, 3, H, W] CLIP-normalised) -> [B, C, H/4, W/4] (C = 256 for resnet101)."""

    scale: torch.Tensor  # buffers: typed here, not as nn.Module.__getattr__'s `Tensor | Module`
    shift: torch.Tensor

    def __init__(self, arch: str = "resnet101") -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        self.arch = arch
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1 = net.layer1
        self.out_channels: int = 64 * type(net.layer1[-1]).expansion
        scale = torch.tensor(CLIP_STD) / torch.tensor(IMAGENET_STD)
        shift = (torch.tensor(CLIP_MEAN) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        return self.layer1(self.stem(x))

    def load_imagenet(self, spec: str) -> None:
        """ImageNet weights for the stem and layer1 from a torchvision ResNet state dict (strict on
        those keys; layer2-4 and fc are not used): `spec` is a file (.pth/.pt/.safetensors) or
        `torchvision[:<weights enum name>]` (torchvision's resolver; offline it fails at once)."""
        state = _resnet_state(self.arch, spec)
        mapping = {"conv1.": "stem.0.", "bn1.": "stem.1.", "layer1.": "layer1."}
        ours = {mapping[p] + k[len(p) :]: v for k, v in state.items() for p in mapping if k.startswith(p)}
        try:
            self.load_state_dict(ours, strict=True)
        except RuntimeError as err:
            raise RuntimeError(f"{spec}: not {self.arch} ImageNet weights ({err})") from err


class ConvStemSkip(nn.Module):
    """forward(images [B, 3, H, W] CLIP-normalised) -> [B, C, H/4, W/4].

    conv3x3/2 -> conv3x3/2 -> conv3x3, each with GroupNorm and ReLU (GroupNorm, not BatchNorm:
    training batches are small and mix domains).
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        half = channels // 2

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            return nn.Sequential(conv, nn.GroupNorm(max(1, cout // 8), cout), nn.ReLU(inplace=True))

        self.layers = nn.Sequential(block(3, half, 2), block(half, channels, 2), block(channels, channels, 1))
        self.out_channels: int = channels
        # the decoder runs NHWC (torch's stubs omit Module.to's memory_format)
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def _resnet_state(arch: str, spec: str) -> dict[str, torch.Tensor]:
    from model.factory import PretrainedWeightsUnavailable

    if spec.startswith("torchvision"):
        import torchvision

        tag = spec.partition(":")[2] or "IMAGENET1K_V1"
        weights = torchvision.models.get_weight(
            f"{torchvision.models.get_model_weights(arch).__name__}.{tag}"
        )
        try:
            return weights.get_state_dict(progress=False)
        except Exception as err:  # offline: URLError and friends
            raise PretrainedWeightsUnavailable(
                f"torchvision {arch} {tag} weights are not in the torch hub cache and cannot be downloaded "
                f"({type(err).__name__}); fetch {weights.url} on a connected machine and pass its path "
                "as model.conv_skip_weights"
            ) from err
    if not Path(spec).is_file():
        raise PretrainedWeightsUnavailable(f"conv skip weights file not found: {spec}")
    if spec.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(spec)
    return torch.load(spec, map_location="cpu", weights_only=True)


def build_conv_skip(name: str) -> ConvStemSkip | ResNetSkip:
    """The conv skip encoder named by `ModelConfig.conv_skip` ("resnet101", "resnet18", "stem")."""
    return ConvStemSkip() if name == "stem" else ResNetSkip(name)
