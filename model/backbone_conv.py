"""Dense CLIP features from a convolutional visual tower (open_clip's timm adapter).

A CNN tower trained with CLIP's objective under average pooling and a linear projection has a
dense reading for free: the projection is linear, so projecting every location of the last
feature map gives per-location embeddings whose mean is the image embedding (the reading
FC-CLIP uses for ConvNeXt CLIP; MaskCLIP's value path plays this role for a ViT). With few
labelled frames and no ImageNet weights a CNN's locality prior learns from little data where a
small ViT does not, which is why the CPU default uses one.

Wraps `open_clip.timm_model.TimmModel` without copying its weights, so parameter names stay
open_clip's (`visual.trunk.*`, `visual.head.proj.weight`) and its checkpoint loading applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # open_clip ships no type information
    from open_clip.timm_model import TimmModel


class DenseClipConv(nn.Module):
    """forward(images [B, 3, H, W], CLIP-normalised, H and W multiples of 32) ->
    (dense [B, c, H/16, W/16] L2-normalised over c, skips: list of [B, C_i, H/r_i, W/r_i], one per
    `skip_layers` entry (indices into the trunk's feature_info), in that order).

    The last stage (stride 32) is projected per location and upsampled x2 (bilinear), so the
    decoder sees the same stride-16 grid as with a ViT/16.
    """

    trunk: Any  # a timm model (feature_info, forward_intermediates); timm's modules type loosely
    proj: nn.Linear

    def __init__(self, visual: TimmModel, skip_layers: tuple[int, ...]) -> None:
        super().__init__()
        head = visual.head
        if not isinstance(getattr(head, "proj", None), nn.Linear) or "pool" in head:
            raise ValueError("a dense conv tower needs open_clip's timm adapter with timm_proj='linear'")
        self.trunk = visual.trunk
        self.proj = head.proj
        info = self.trunk.feature_info
        if any(not 0 <= i < len(info) - 1 for i in skip_layers):
            raise ValueError(f"skip_layers {skip_layers} must index the trunk's first {len(info) - 1} stages")
        self.skip_layers = tuple(skip_layers)
        self.skip_channels = [int(info[i]["num_chs"]) for i in self.skip_layers]
        self.patch_size = int(info[-1]["reduction"])  # inputs must be multiples of the last stride
        self.embed_dim = int(self.proj.out_features)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        p = self.patch_size
        if images.shape[-2] % p or images.shape[-1] % p:
            raise ValueError(f"input size {tuple(images.shape[-2:])} is not a multiple of {p}")
        feats = self.trunk.forward_intermediates(images, intermediates_only=True)
        last = feats[-1].permute(0, 2, 3, 1)  # [B, h, w, C]: the projection is a per-location linear
        dense = F.normalize(self.proj(last), dim=-1).permute(0, 3, 1, 2)
        dense = F.interpolate(dense, scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.normalize(dense, dim=1), [feats[i] for i in self.skip_layers]
