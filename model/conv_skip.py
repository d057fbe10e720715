"""Optional convolutional skip encoder (SemiVL's Cityscapes variant): ResNet stem + layer1.

The graph input is CLIP-normalised; the ResNet sees ImageNet statistics (method.md 1.2), so the
input is re-normalised inside the module.
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
