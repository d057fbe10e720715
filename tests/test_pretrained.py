"""The real open_clip loading path, from local weights files saved from random models (no download)."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from model import PretrainedWeightsUnavailable, create_model, get_model_config
from model.factory import build_clip


def _clip_at(cfg, image_size):
    import dataclasses

    return build_clip(dataclasses.replace(cfg, image_size=image_size))


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_local_weights_file_loads_and_resizes_pos_embed(tmp_path, suffix):
    """Weights saved at 224 px (14x14 grid, like OpenAI's) load into the 128 px working grid."""
    cfg = get_model_config("semidavil-tiny")
    torch.manual_seed(1)
    source = _clip_at(cfg, 224)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"clip{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    model = create_model("semidavil-tiny", pretrained=path)
    visual = model.seg.visual
    assert visual.positional_embedding.shape == (1 + 8 * 8, cfg.clip.vision.width)
    assert torch.equal(visual.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(visual.positional_embedding[0], source.visual.positional_embedding[0])  # cls kept
    assert torch.equal(model.text.token_embedding.weight, source.token_embedding.weight)
    assert torch.equal(model.text.text_projection, source.text_projection)


def test_no_vlp_keeps_random_visual_but_loads_text(tmp_path):
    cfg = get_model_config("semidavil-tiny", vlp=False)
    torch.manual_seed(2)
    source = _clip_at(cfg, 128)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    model = create_model(cfg, pretrained=path)
    assert not torch.equal(model.seg.visual.conv1.weight, source.visual.conv1.weight)
    assert torch.equal(model.text.token_embedding.weight, source.token_embedding.weight)


def test_wrong_architecture_weights_are_refused(tmp_path):
    torch.manual_seed(3)
    other = _clip_at(get_model_config("semidavil-tiny"), 128)
    path = tmp_path / "clip.safetensors"
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    state["visual.conv1.weight"] = torch.zeros(8, 3, 16, 16)
    save_file(state, path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        create_model("semidavil-tiny", pretrained=path)


def test_missing_file_and_offline_tag_fail_fast_with_clear_messages(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="not found"):
        create_model("semidavil-tiny", pretrained=tmp_path / "nope.safetensors")
    with pytest.raises(PretrainedWeightsUnavailable, match="no pretrained tag"):
        create_model("semidavil-tiny", pretrained="openai")
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable, match="ViT-B-16/openai .*offline"):
        create_model("semidavil-vitb16", pretrained="openai")
    assert time.perf_counter() - start < 10, "offline failure must not sit in a retry loop"
