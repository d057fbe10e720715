"""The "w/o VLP" ImageNet encoder: a timm ViT's weights on the dense visual tower (random timm
weights saved to a file; nothing is downloaded)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model import PretrainedWeightsUnavailable, create_model, get_model_config
from model.backbone import block_forward
from model.config import VisionConfig
from model.preprocess import numpy_to_model_input

TIMM_NAME = "vit_tiny_patch16_224"  # 12 blocks of width 192, 3 heads of 64


def _config():
    base = get_model_config("semidavil-tiny", vlp=False)
    vision = VisionConfig(
        layers=12, width=192, patch_size=16, head_width=64, mlp_ratio=4.0, imagenet_layout=True
    )
    clip = dataclasses.replace(base.clip, vision=vision)
    return dataclasses.replace(base, name="tiny-in1k-test", image_size=224, clip=clip, finetune="full")


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    net = timm.create_model(TIMM_NAME, pretrained=False, num_classes=0).eval()
    with torch.no_grad():  # random but not symmetric: a non-zero conv bias and cls token
        net.patch_embed.proj.bias.normal_(0, 0.5)
        net.cls_token.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("timm") / "vit_tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return net, path


def test_timm_weights_give_timms_token_features(timm_file):
    """Our tower on CLIP-normalised pixels == timm's forward_features on timm-normalised pixels."""
    net, path = timm_file
    model = create_model(_config(), visual_pretrained=f"timm:{TIMM_NAME}={path}")
    visual = model.seg.visual
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    ours_in = numpy_to_model_input([pixels])
    mean = torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1)
    timm_in = (torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        x, _ = visual.tokens(ours_in)
        for block in visual.blocks:
            x = block_forward(block, x)
        ours = visual.ln_post(x)
        theirs = net.forward_features(timm_in)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), (ours - theirs).abs().max()
    dense, _ = visual(ours_in)  # and the dense path runs on it: [1, c, 14, 14]
    assert dense.shape == (1, 64, 14, 14)


def test_offline_tag_and_missing_file_fail_at_once_naming_what_to_fetch(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="model.safetensors of timm/vit_tiny_patch16_224"):
        create_model(_config(), visual_pretrained=f"timm:{TIMM_NAME}={tmp_path / 'missing.safetensors'}")
    with pytest.raises(PretrainedWeightsUnavailable, match="offline"):
        create_model(_config(), visual_pretrained=f"timm:{TIMM_NAME}")


def test_timm_weights_need_the_imagenet_layout(timm_file):
    _, path = timm_file
    clip_layout = dataclasses.replace(
        _config(),
        clip=dataclasses.replace(
            _config().clip, vision=dataclasses.replace(_config().clip.vision, imagenet_layout=False)
        ),
    )
    with pytest.raises(ValueError, match="imagenet_layout"):
        create_model(clip_layout, visual_pretrained=f"timm:{TIMM_NAME}={path}")


def test_text_tower_still_loads_from_clip_weights_with_the_imagenet_layout(tmp_path):
    from model.factory import build_clip

    cfg = _config()
    standard = dataclasses.replace(
        cfg,
        clip=dataclasses.replace(
            cfg.clip, vision=dataclasses.replace(cfg.clip.vision, imagenet_layout=False)
        ),
    )
    torch.manual_seed(3)
    donor = build_clip(standard)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, path)
    model = create_model(cfg, pretrained=path)
    assert torch.equal(model.text.token_embedding.weight, donor.token_embedding.weight)
    assert isinstance(model.seg.visual.ln_pre, torch.nn.Identity)


def test_resnet_conv_skip_loads_imagenet_weights_from_a_file(tmp_path):
    """Random torchvision ResNet-18 weights in a file: stem + layer1 load strictly and compute
    torchvision's own stem + layer1 on the re-normalised input."""
    import torchvision

    from model.conv_skip import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    cfg = dataclasses.replace(get_model_config("semidavil-tiny"), skip_layers=(2,), conv_skip="resnet18")
    model = create_model(cfg, conv_skip_weights=path).eval()
    pixels = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        ours = model.seg.conv_skip(numpy_to_model_input([pixels]))
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        theirs = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    with pytest.raises(PretrainedWeightsUnavailable, match="not found"):
        create_model(cfg, conv_skip_weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="ResNet conv skip"):
        create_model("semidavil-tiny", conv_skip_weights=path)
