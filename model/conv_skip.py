"""Optional convolutional skip encoders for the decoder's stride-4 skip.

`resnet101` / `resnet18`: SemiVL's Cityscapes variant, a ResNet stem + layer1. The graph input is
CLIP-normalised; the ResNet sees ImageNet statistics (method.md 1.2), so the input is re-normalised
inside the module.

`stem`: a light three-conv stem (about 0.2 GFLOP at 256x512) for small CPU models, where a ViT
with 16-pixel patches alone cannot draw pole- or sign-sized objects and a ResNet's layer1 would
cost more than the whole rest of the network.
"""

from __future__ import annotations

import torch
from torch import nn

from model.preprocess import CLIP_MEAN, CLIP_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetSkip(nn.Module):
    """forward(images [B, 3, H, W] CLIP-normalised) -> [B, C, H/4, W/4] (C = 256 for resnet101)."""

    def __init__(self, arch: str = "resnet101") -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1 = net.layer1
        self.out_channels = 64 * type(net.layer1[-1]).expansion
        scale = torch.tensor(CLIP_STD) / torch.tensor(IMAGENET_STD)
        shift = (torch.tensor(CLIP_MEAN) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.scale.to(images.dtype) + self.shift.to(images.dtype)
        return self.layer1(self.stem(x))


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
        self.out_channels = channels
        self.to(memory_format=torch.channels_last)  # the decoder runs NHWC

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def build_conv_skip(name: str) -> nn.Module:
    """The conv skip encoder named by `ModelConfig.conv_skip` ("resnet101", "resnet18", "stem")."""
    return ConvStemSkip() if name == "stem" else ResNetSkip(name)
