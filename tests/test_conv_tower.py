"""The convolutional CLIP visual tower (model/backbone_conv.py) and float16 checkpoint storage."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from model import create_model, get_model_config, load_model, save_checkpoint
from model.backbone_conv import DenseClipConv
from model.class_sets import CITYSCAPES_CLASSES
from model.factory import build_clip
from tests.helpers import random_inputs

CNN = "semidavil-small-cnn"


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model(CNN).eval()


def test_shapes_strides_and_full_size_logits(cnn):
    visual = cnn.seg.visual
    assert isinstance(visual, DenseClipConv)
    x = torch.randn(2, 3, 256, 512)
    with torch.no_grad():
        dense, skips = visual(x)
        logits = cnn(*random_inputs(2, 256, 512, 19, 5, cnn.config.embed_dim))
    assert dense.shape == (2, cnn.config.embed_dim, 16, 32)
    assert torch.allclose(dense.norm(dim=1), torch.ones(2, 16, 32), atol=1e-5)
    # deepest skip first: stride 8, then stride 4 (the decoder's two up-sampling stages)
    assert [tuple(s.shape[-2:]) for s in skips] == [(32, 64), (64, 128)]
    assert [s.shape[1] for s in skips] == visual.skip_channels
    assert logits.shape == (2, 19, 256, 512) and torch.isfinite(logits).all()


def test_non_multiple_of_the_last_stride_is_a_clear_error(cnn):
    with pytest.raises(ValueError, match="not a multiple of 32"):
        cnn.seg.visual(torch.randn(1, 3, 240, 512))


def test_dense_features_average_to_the_clip_image_embedding():
    """The dense reading is the pre-training's embedding per location: projecting every location
    and averaging gives exactly what open_clip's tower (avg pool + linear) gives for the image."""
    torch.manual_seed(0)
    cfg = get_model_config(CNN)
    clip = build_clip(cfg).eval()
    visual = DenseClipConv(clip.visual, cfg.skip_layers)
    x = torch.randn(2, 3, 128, 256)
    with torch.no_grad():
        last = visual.trunk.forward_intermediates(x, intermediates_only=True)[-1]
        per_location = visual.proj(last.permute(0, 2, 3, 1))  # [B, h, w, c], not normalised
        pooled = clip.visual(x)
    assert torch.allclose(per_location.mean(dim=(1, 2)), pooled, atol=1e-5)


def test_conv_tower_refuses_spatial_finetuning_and_a_second_conv_skip():
    cfg = get_model_config(CNN)
    with pytest.raises(ValueError, match="full or frozen"):
        dataclasses.replace(cfg, finetune="spatial")
    with pytest.raises(ValueError, match="conv_skip must be null"):
        dataclasses.replace(cfg, conv_skip="stem", skip_layers=(2,))
    with pytest.raises(ValueError, match="skip_layers"):
        create_model(dataclasses.replace(cfg, skip_layers=(4, 1)))


def test_without_vlp_only_the_text_tower_comes_from_the_weights_file(tmp_path):
    cfg = get_model_config(CNN)
    torch.manual_seed(1)
    donor = build_clip(cfg)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    torch.manual_seed(2)
    m = create_model(dataclasses.replace(cfg, vlp=False), pretrained=path)
    text = m.text.state_dict()
    donor_text = {k: v for k, v in donor.state_dict().items() if not k.startswith("visual.")}
    assert len(text) and all(any(torch.equal(v, d) for d in donor_text.values()) for v in text.values())
    ours, theirs = m.seg.visual.proj.weight, donor.visual.head.proj.weight
    assert not torch.equal(ours, theirs), "the visual tower must stay random without VLP"
    assert all(p.requires_grad for p in m.seg.visual.parameters())


def test_float16_storage_halves_the_file_and_loads_into_fp32(cnn, tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_checkpoint(full, cnn, CITYSCAPES_CLASSES)
    header = save_checkpoint(half, cnn, CITYSCAPES_CLASSES, storage="float16")
    assert header["storage_dtype"] == "float16"
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, _ = load_model(half, expected_config=CNN)
    own = cnn.state_dict()
    for name, value in loaded.state_dict().items():
        assert value.dtype == own[name].dtype, name
        if value.is_floating_point():
            assert torch.equal(value, own[name].half().float()), name
    inputs = random_inputs(1, 256, 512, 19, 5, cnn.config.embed_dim)
    with torch.no_grad():
        a, b = cnn(*inputs), loaded(*inputs)
    assert (a.argmax(1) == b.argmax(1)).float().mean() > 0.99


def test_float16_storage_refuses_what_it_cannot_hold(tmp_path):
    m = create_model("semidavil-tiny")
    with torch.no_grad():
        m.seg.decoder.head.bias.fill_(1e6)
    with pytest.raises(ValueError, match="seg.decoder.head.bias does not fit float16"):
        save_checkpoint(tmp_path / "x.safetensors", m, CITYSCAPES_CLASSES, storage="float16")
    with pytest.raises(ValueError, match="storage must be one of"):
        save_checkpoint(tmp_path / "x.safetensors", m, CITYSCAPES_CLASSES, storage="int8")


def test_zero_shot_graph_reads_a_conv_tower(cnn):
    from model.zero_shot import ZeroShotGraph

    graph = ZeroShotGraph(cnn.seg.visual)
    with torch.no_grad():
        logits = graph(*random_inputs(1, 128, 256, 5, 3, cnn.config.embed_dim))
    assert logits.shape == (1, 5, 128, 256) and torch.isfinite(logits).all()
