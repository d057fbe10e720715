"""model.fast: the bf16 inference copy (pre-cast weights, QuickGELU folded into SiLU)."""

from __future__ import annotations

import copy

import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from model import create_model
from model.fast import cast_matmul_weights, fold_quick_gelu, inference_copy
from tests.helpers import random_inputs


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("semidavil-tiny").eval()


def test_quick_gelu_fold_is_exact_in_fp32(tiny):
    mlp = copy.deepcopy(tiny.seg.visual.blocks[0].mlp)
    assert isinstance(mlp.gelu, QuickGELU)
    x = torch.randn(2, 7, mlp.c_fc.in_features)
    with torch.no_grad():
        before = mlp(x)
        assert fold_quick_gelu(mlp)
        after = mlp(x)
    assert isinstance(mlp.gelu, nn.SiLU)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    assert not fold_quick_gelu(mlp), "a second fold must be refused (the activation is SiLU now)"


def test_cast_touches_matmul_layers_and_keeps_norms():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2))
    assert cast_matmul_weights(net, torch.bfloat16) == 4  # linear and conv weight + bias
    assert net[0].weight.dtype == net[2].bias.dtype == torch.bfloat16
    assert net[1].weight.dtype == net[3].weight.dtype == torch.float32


def test_inference_copy_matches_the_graph_under_autocast_and_leaves_it_untouched(tiny):
    graph = tiny.seg
    before = {k: v.clone() for k, v in graph.state_dict().items()}
    fast = inference_copy(graph)
    assert fast.visual.proj.dtype == torch.bfloat16
    assert fast.visual.blocks[0].mlp.c_fc.weight.dtype == torch.bfloat16
    assert fast.visual.ln_post.weight.dtype == torch.float32
    assert all(isinstance(b.mlp.gelu, nn.SiLU) for b in fast.visual.blocks)
    for key, value in graph.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key
    assert all(isinstance(b.mlp.gelu, QuickGELU) for b in graph.visual.blocks)

    inputs = random_inputs(2, 64, 128, 5, 6, tiny.config.embed_dim, seed=3)
    with torch.inference_mode():
        reference = graph(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain = graph(*inputs).float()
            got = fast(*inputs).float()
    assert got.shape == reference.shape
    # the copy is as close to fp32 as autocast over the fp32 weights is (both round to bf16)
    err_plain = (plain - reference).abs().max().item()
    err_fast = (got - reference).abs().max().item()
    assert err_fast <= 2 * err_plain + 1e-3, (err_fast, err_plain)
    # random weights leave many near-ties, so compare with autocast's own agreement, not with 100 %
    agree_plain = (plain.argmax(1) == reference.argmax(1)).float().mean().item()
    agree_fast = (got.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agree_fast >= agree_plain - 0.03, (agree_fast, agree_plain)
