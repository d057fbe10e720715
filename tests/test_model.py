"""The segmentation graph: shapes, the dense feature path by hand, DLG, gradients, configs."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from model import create_model, get_model_config, list_models
from model.backbone import value_path
from model.class_sets import get_class_set
from model.config import DLG_MODES, DLGConfig, ModelConfig
from model.dlg import DenseLanguageGuidance
from model.text import TextEmbedder
from tests.helpers import random_inputs

SIZES = [(512, 512), (512, 1024)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("semidavil-tiny").eval()


def test_registry_lists_both_paper_and_tiny_configs():
    names = list_models()
    assert {"semidavil-vitb16", "semidavil-tiny"} <= set(names)
    for name in names:
        cfg = get_model_config(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(KeyError, match="unknown model config"):
        get_model_config("semidavil-huge")


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match=r"dlg\.mode"):
        get_model_config("semidavil-tiny", dlg=DLGConfig(mode="fancy"))
    with pytest.raises(ValueError, match="2 skips"):
        get_model_config("semidavil-tiny", skip_layers=(2, 0))  # + its conv stem = 3


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch,num_classes,length", list(itertools.product([1, 2], [19, 16, 5], [1, 30])))
def test_tiny_shapes(tiny, size, batch, num_classes, length):
    inputs = random_inputs(batch, *size, num_classes, length, tiny.config.embed_dim)
    with torch.no_grad():
        logits = tiny(*inputs)
    assert logits.shape == (batch, num_classes, *size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


# The served 512x1024 repeats the token-grid check of 512x512 (the only size-dependent shape) at
# ~6 s on 2 cores: under -m slow.
@pytest.mark.parametrize("size", [SIZES[0], pytest.param(SIZES[1], marks=pytest.mark.slow)])
def test_vitb16_shapes(vitb16_model, size):
    """The backbone once per size; DLG + decoder over the (B, K, L) grid at the first size only
    (their shapes do not depend on the image size beyond the token grid checked at both)."""
    seg = vitb16_model.seg  # the session's random ViT-B/16 (conftest.py), shared with test_export.py
    images, feats, mask, embeds = random_inputs(1, *size, 19, 30, 512)
    with torch.no_grad():
        dense, skips = seg.features(images)
        h, w = size[0] // 16, size[1] // 16
        assert dense.shape == (1, 512, h, w)
        assert [s.shape for s in skips] == [(1, 768, h, w)] * 2
        logits = seg.decoder(seg.dlg(dense, feats, mask), embeds, skips)
        assert logits.shape == (1, 19, size[0] // 4, size[1] // 4) and torch.isfinite(logits).all()
        if size != SIZES[0]:
            return
        assert vitb16_model(images, feats, mask, embeds).shape == (1, 19, *size)  # the full graph upsamples
        dense, skips = dense.expand(2, -1, -1, -1), [s.expand(2, -1, -1, -1) for s in skips]
        for batch, k, length in itertools.product([1, 2], [19, 16, 5], [1, 30]):
            _, f, m, e = random_inputs(batch, *size, k, length, 512, seed=k + length)
            fused = seg.dlg(dense[:batch], f, m)
            out = seg.decoder(fused, e, [s[:batch] for s in skips])
            assert out.shape == (batch, k, size[0] // 4, size[1] // 4)
            assert torch.isfinite(out).all()


def test_non_multiple_of_patch_size_is_a_clear_error(tiny):
    inputs = random_inputs(1, 130, 256, 5, 4, tiny.config.embed_dim)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        tiny(*inputs)


def _dense_by_hand(visual, images: torch.Tensor) -> torch.Tensor:
    """MaskCLIP dense features computed with open_clip's own block forward (nn.MultiheadAttention)
    and the value path written out  from docs/method.md 1.3 with explicit weight slices."""
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], 1) + visual.positional_embedding)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)  # open_clip's ResidualAttentionBlock.forward
    last = blocks[-1]
    d = x.shape[-1]
    tokens = x[:, 1:]
    w_v, b_v = last.attn.in_proj_weight[2 * d :], last.attn.in_proj_bias[2 * d :]
    v = last.ln_1(tokens) @ w_v.T + b_v
    v = tokens + v @ last.attn.out_proj.weight.T + last.attn.out_proj.bias
    h = last.mlp.c_fc(last.ln_2(v))
    v = v + last.mlp.c_proj(h * torch.sigmoid(1.702 * h))  # QuickGELU written out
    e = visual.ln_post(v) @ visual.proj
    e = e / e.norm(dim=-1, keepdim=True)
    g = images.shape[-1] // 16
    return e.transpose(1, 2).reshape(x.shape[0], -1, images.shape[-2] // 16, g)


def test_dense_features_equal_hand_computation(tiny):
    visual = tiny.seg.visual
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        dense, skips = visual(images)
        expected = _dense_by_hand(visual, images)
    torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-5)
    assert torch.allclose(dense.norm(dim=1), torch.ones(()), atol=1e-5)
    # each ViT skip is the value path of its block applied to that block's input tokens
    assert len(skips) == len(visual.skip_layers) > 0
    with torch.no_grad():
        x, _ = visual.tokens(images)
        by_layer = {}
        for i, block in enumerate(visual.blocks):
            by_layer[i] = value_path(block, x[:, 1:]).transpose(1, 2).reshape(2, -1, 8, 8)
            x = block(x)
    for skip, layer in zip(skips, visual.skip_layers, strict=True):
        torch.testing.assert_close(skip, by_layer[layer])


def test_quick_gelu_is_used(tiny):
    act = tiny.seg.visual.blocks[0].mlp.gelu
    assert type(act).__name__ == "QuickGELU"


def test_dlg_residual_is_identity_at_init():
    dlg = DenseLanguageGuidance(64, "residual").eval()
    visual = torch.randn(2, 64, 8, 16)
    _, feats, mask, _ = random_inputs(2, 8, 8, 3, 12, 64)
    assert torch.equal(dlg(visual, feats, mask), visual)


@pytest.mark.parametrize("mode", ["residual", "literal", "repo"])
def test_dlg_ignores_padded_tokens(mode):
    torch.manual_seed(0)
    dlg = DenseLanguageGuidance(64, mode).eval()
    if mode == "residual":
        torch.nn.init.normal_(dlg.gamma)
    visual = torch.randn(2, 64, 4, 8)
    _, feats, mask, _ = random_inputs(2, 8, 8, 3, 10, 64)
    mask[1, 6:] = False
    out = dlg(visual, feats, mask)
    garbage = feats.clone()
    garbage[~mask] = torch.randn_like(garbage[~mask]) * 100
    longer_feats = torch.cat([garbage, torch.randn(2, 5, 64)], 1)
    longer_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    torch.testing.assert_close(dlg(visual, longer_feats, longer_mask), out)
    assert not torch.equal(out, visual)


def test_dlg_empty_caption_leaves_features_unchanged():
    torch.manual_seed(0)
    dlg = DenseLanguageGuidance(64, "residual")
    torch.nn.init.normal_(dlg.gamma)
    visual = torch.randn(2, 64, 4, 8)
    feats, mask = torch.zeros(2, 1, 64), torch.zeros(2, 1, dtype=torch.bool)
    assert torch.equal(dlg(visual, feats, mask), visual)


def test_dlg_off_is_identity_and_has_no_parameters():
    dlg = DenseLanguageGuidance(64, "off")
    visual = torch.randn(1, 64, 4, 4)
    assert dlg(visual, torch.randn(1, 3, 64), torch.ones(1, 3, dtype=torch.bool)) is visual
    assert not list(dlg.parameters())


def test_spatial_finetuning_gradients_reach_exactly_the_trainable_parameters():
    torch.manual_seed(0)
    m = create_model("semidavil-tiny").train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    visual_trainable = {n for n in trainable if n.startswith("seg.visual.")}
    expected_visual = {
        n
        for n, _ in m.seg.visual.named_parameters(prefix="seg.visual")
        if ".attn." in n or n.endswith("positional_embedding")
    }
    assert visual_trainable == expected_visual
    assert not any(n.startswith("text.") for n in trainable)
    assert all(n in trainable for n, _ in m.named_parameters() if n.startswith(("seg.dlg.", "seg.decoder.")))
    m.seg.dlg.gamma.data.fill_(0.1)  # at gamma = 0 the DLG projections legitimately get zero gradient
    inputs = random_inputs(2, 128, 128, 5, 6, m.config.embed_dim)
    m(*inputs).logsumexp(1).mean().backward()
    for name, p in m.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
        else:
            assert p.grad is None, f"frozen parameter {name} got a gradient"


def test_text_embedder_class_and_caption_features(tiny):
    te = TextEmbedder(tiny.text)
    cs = get_class_set("cityscapes")
    embeds = te.class_embeddings(cs.prompts())
    assert embeds.shape == (19, tiny.config.embed_dim)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(19))
    assert te.class_embeddings(cs.prompts()) is embeds  # cached
    # concept averaging: road = normalised mean of its three prompts' pooled embeddings
    tokens = te.tokenizer(["a photo of a road", "a photo of a street", "a photo of a parking space"])
    with torch.no_grad():
        pooled = tiny.text.pooled(tokens)
    torch.testing.assert_close(embeds[0], F.normalize(pooled.mean(0), dim=0), rtol=1e-5, atol=1e-6)
    feats, mask = te.caption_features(["a car on a wet road", "", "trees"])
    n_tokens = len(te.tokenizer.encode("a car on a wet road")) + 2
    assert feats.shape == (3, n_tokens, tiny.config.embed_dim)
    assert mask.sum(1).tolist() == [n_tokens, 0, 3]
    assert torch.equal(feats[1], torch.zeros_like(feats[1]))
    stats = te.cache_stats()
    te.caption_features(["trees"])
    assert te.cache_stats()["caption_hits"] == stats["caption_hits"] + 1


def test_caption_of_the_eot_token_equals_pooled_sentence(tiny):
    te = TextEmbedder(tiny.text)
    feats, mask = te.caption_features(["a bus next to a building"])
    tokens = te.tokenizer(["a bus next to a building"])
    with torch.no_grad():
        pooled = F.normalize(tiny.text.pooled(tokens), dim=-1)
    torch.testing.assert_close(feats[0, int(mask.sum()) - 1], pooled[0], rtol=1e-5, atol=1e-6)


def test_resnet_skip_variant_builds_and_runs():
    cfg = get_model_config("semidavil-tiny", skip_layers=(2,), conv_skip="resnet18")
    m = create_model(cfg).eval()
    inputs = random_inputs(1, 128, 256, 4, 5, cfg.embed_dim)
    with torch.no_grad():
        assert m(*inputs).shape == (1, 4, 128, 256)


def test_small_config_has_a_stride4_conv_stem_and_runs_at_its_working_size():
    """semidavil-small (the real-photo default): the stem skip is stride 4, logits come at full size."""
    cfg = get_model_config("semidavil-small")
    m = create_model(cfg).eval()
    x = torch.randn(1, 3, 256, 512)
    with torch.no_grad():
        skip = m.seg.conv_skip(x)
        assert skip.shape == (1, m.seg.conv_skip.out_channels, 64, 128)
        inputs = random_inputs(1, 256, 512, 19, 5, cfg.embed_dim)
        logits = m(*inputs)
    assert logits.shape == (1, 19, 256, 512) and torch.isfinite(logits).all()
    # the embedded checkpoint must stay under the 20 MB publish limit in fp32
    assert sum(p.numel() for p in m.state_dict().values()) * 4 < 20 * 2**20


def test_no_vlp_trains_the_whole_visual_tower():
    m = create_model(get_model_config("semidavil-tiny", vlp=False))
    assert all(p.requires_grad for p in m.seg.visual.parameters())


def test_aspp_split_projection_equals_concatenating_the_broadcast_pooled_branch():
    """ASPP's split 1x1 projection gives the textbook result: cat(branches, expanded pool) -> project."""
    from model.decoder import ASPP

    torch.manual_seed(0)
    aspp = ASPP(16, (1, 2)).eval().to(memory_format=torch.channels_last)
    x = torch.randn(3, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        pooled = aspp.image_pool(x.mean(dim=(2, 3), keepdim=True)).expand_as(x)
        reference = x + aspp.project(torch.cat([b(x) for b in aspp.branches] + [pooled], dim=1))
        torch.testing.assert_close(aspp(x), reference, rtol=1e-5, atol=1e-5)


def _decoder_inputs(tiny, batch: int, classes: int):
    images, feats, mask, embeds = random_inputs(batch, 128, 256, classes, 6, tiny.config.embed_dim, seed=3)
    dense, skips = tiny.seg.features(images)
    return tiny.seg.dlg(dense, feats, mask), embeds[:classes], skips


@pytest.mark.parametrize("batch", [1, 2])
def test_decoder_class_chunks_give_the_unchunked_logits(tiny, batch):
    """The up path run over uneven class chunks (7 classes in chunks of 3, 3, 1) equals one pass
    over all classes, each image's maps kept apart (batch 2)."""
    decoder = tiny.seg.decoder
    fused, embeds, skips = _decoder_inputs(tiny, batch, 7)
    h, w = fused.shape[-2:]
    saved = decoder.class_chunk_bytes
    try:
        with torch.no_grad():
            decoder.class_chunk_bytes = 0
            whole = decoder(fused, embeds, skips)
            widest = max(decoder.up2.up.out_channels, decoder.up2.conv[0][0].out_channels) * 16 * h * w * 4
            decoder.class_chunk_bytes = 3 * widest + 1
            assert decoder.classes_per_chunk(7, h, w, 4) == 3
            chunked = decoder(fused, embeds, skips)
    finally:
        decoder.class_chunk_bytes = saved
    assert chunked.shape == whole.shape == (batch, 7, 4 * h, 4 * w)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_decoder_chunk_size_follows_the_byte_budget(tiny):
    decoder = tiny.seg.decoder
    widest = max(decoder.up2.up.out_channels, decoder.up2.conv[0][0].out_channels) * 16 * 32 * 64
    saved = decoder.class_chunk_bytes
    try:
        decoder.class_chunk_bytes = 0
        assert decoder.classes_per_chunk(19, 32, 64, 2) == 19  # off: every class at once
        decoder.class_chunk_bytes = 5 * widest * 2
        assert decoder.classes_per_chunk(19, 32, 64, 2) == 5  # bf16
        assert decoder.classes_per_chunk(19, 32, 64, 4) == 2  # fp32: twice the bytes per class
        decoder.class_chunk_bytes = 1
        assert decoder.classes_per_chunk(19, 32, 64, 2) == 1  # never 0
    finally:
        decoder.class_chunk_bytes = saved


def test_per_image_add_equals_the_broadcast_over_class_maps():
    """Up's skip term: NHWC-ordered add == x.view(B, K, C, h, w) + skip[:, None], channels-last out."""
    from model.decoder import _add_per_image

    torch.manual_seed(0)
    x = torch.randn(2 * 5, 6, 7, 9).contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 6, 7, 9).contiguous(memory_format=torch.channels_last)
    reference = (x.contiguous().view(2, 5, 6, 7, 9) + skip[:, None]).view(10, 6, 7, 9)
    out = _add_per_image(x, skip)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_add_per_image(x.contiguous(), skip.contiguous()), reference, rtol=0, atol=0)


def test_semantic_reasoning_keeps_channels_last_and_the_textbook_values():
    """The residual comes back channels-last (no layout conversion before the add) with the values
    of the plain NCHW formulation."""
    from model.decoder import SemanticReasoning

    torch.manual_seed(0)
    layer = SemanticReasoning(16, 8, 2, 2).eval()
    b, k, h, w = 2, 3, 8, 12
    x = torch.randn(b * k, 16, h, w).contiguous(memory_format=torch.channels_last)
    text = torch.randn(1, k, 8)
    with torch.no_grad():
        out = layer(x, text)
        pooled = F.avg_pool2d(x, 2)
        seq = pooled.reshape(b, k, 16, -1).permute(0, 3, 1, 2)
        seq = torch.cat([seq, text[:, None].expand(b, seq.shape[1], k, 8)], -1).reshape(-1, k, 24)
        seq = layer.layer(seq)[..., :16].reshape(b, h // 2, w // 2, k, 16)
        ref = seq.permute(0, 3, 4, 1, 2).reshape(b * k, 16, h // 2, w // 2)
        ref = x + F.interpolate(ref, size=(h, w), mode="bilinear", align_corners=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_decoder_chunks_cover_the_batch_in_eager_and_one_image_when_traced(tiny, monkeypatch):
    """Eager: the byte budget covers all images of the batch (batch 4: a quarter of the classes per
    chunk); traced: sized per image, so a dynamic batch never enters the graph's control flow."""
    import model.decoder as decoder_module

    decoder = tiny.seg.decoder
    h, w, k, b = 8, 16, 12, 4
    widest = max(decoder.up2.up.out_channels, decoder.up2.conv[0][0].out_channels) * 16 * h * w * 4
    monkeypatch.setattr(decoder, "class_chunk_bytes", 8 * widest)
    assert decoder.classes_per_chunk(k, h, w, 4) == 8
    assert decoder.classes_per_chunk(k, h, w, 4, images=b) == 2
    x = torch.zeros(b * k, 3, h, w)
    assert [c.shape[0] for c in decoder._class_chunks(x, b, k)] == [b * 2] * 6
    monkeypatch.setattr(decoder_module, "_tracing", lambda: True)
    assert [c.shape[0] for c in decoder._class_chunks(x, b, k)] == [b * 8, b * 4]


def test_dlg_modes_start_from_the_same_decoder_weights():
    """For one seed, DLG on and off (every mode) give identical decoder and backbone initial weights."""
    states = {}
    for mode in DLG_MODES:
        torch.manual_seed(7)
        m = create_model(get_model_config("semidavil-tiny", dlg=DLGConfig(mode=mode)))
        states[mode] = {k: v for k, v in m.state_dict().items() if not k.startswith("seg.dlg.")}
    reference = states["off"]
    for mode, state in states.items():
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in state), mode
