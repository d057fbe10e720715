"""Mini-VLP: the corpus, its captions, the gates, a short pre-training and loading its weights."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from model import create_model, get_model_config
from model.class_sets import CITYSCAPES_CLASSES, CITYSCAPES_CONCEPTS
from training.pretrain.captions import SURFACE_WORDS, THINGS, object_caption, scene_caption
from training.pretrain.corpus import Corpus, CorpusError, build_corpus, scene_pairs
from training.pretrain.gates import prompt_cosine, retrieval
from training.pretrain.run import PretrainConfig, Tokens, build_towers, load_images, pretrain
from training.state import StateError, read_state

SCENES = 30


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    from training.pretrain.run import corpus_settings

    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root, corpus_settings(SCENES), workers=1, log=lambda _m: None)
    return root


def _words(class_id: int) -> set[str]:
    name = CITYSCAPES_CLASSES[class_id]
    return {*CITYSCAPES_CONCEPTS[name], *SURFACE_WORDS.get(name, ()), name}


def test_scene_captions_name_the_largest_classes_and_small_things():
    share = np.zeros(19)
    share[[0, 2, 10]] = [0.5, 0.3, 0.2]
    counts = np.zeros(19, np.int64)
    counts[CITYSCAPES_CLASSES.index("traffic light")] = 1  # no share above the threshold, but visible
    share[CITYSCAPES_CLASSES.index("traffic light")] = 0.001
    caption = scene_caption(share, counts, np.random.default_rng(0))
    for k in (0, 2, 10, CITYSCAPES_CLASSES.index("traffic light")):
        assert any(w in caption for w in _words(k)), (CITYSCAPES_CLASSES[k], caption)
    assert "car" not in caption and "person" not in caption


def test_object_captions_name_their_class_with_an_article():
    rng = np.random.default_rng(1)
    for k in sorted(THINGS):
        caption = object_caption(k, np.array([200.0, 40, 40]), rng)
        assert any(w in caption for w in _words(k)), caption
        assert " a a " not in f" {caption} " and " a orange" not in caption


def test_corpus_pairs_are_deterministic_and_their_captions_match_the_labels():
    from training.pretrain.run import corpus_settings

    s = corpus_settings(SCENES)
    image_a, pairs_a = scene_pairs(3, s)
    image_b, pairs_b = scene_pairs(3, s)
    assert np.array_equal(image_a, image_b) and pairs_a == pairs_b
    objects = pairs_a[s.scene_crops :]
    assert objects, "a street scene has object crops"
    for y0, x0, side, caption, present in objects:
        assert y0 >= 0 and y0 + side <= s.height and x0 >= 0 and x0 + side <= s.width
        assert any(any(w in caption for w in _words(k)) for k in present), (caption, present)


def test_corpus_is_reused_split_by_scene_and_refuses_other_settings(corpus_dir, tmp_path):
    from training.pretrain.run import corpus_settings

    corpus = Corpus(corpus_dir)
    train, held = corpus.split(holdout=False), corpus.split(holdout=True)
    assert set(corpus.scene[train]).isdisjoint(corpus.scene[held]) and len(held) > 0
    assert corpus.is_scene_crop.sum() == 3 * SCENES
    crop = corpus.crop(0, 64, flip=True)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    meta = build_corpus(corpus_dir, corpus_settings(SCENES), workers=1, log=lambda _m: None)
    assert meta["scenes"] == SCENES  # a no-op
    with pytest.raises(CorpusError, match="other settings"):
        build_corpus(corpus_dir, corpus_settings(SCENES + 1), workers=1, log=lambda _m: None)
    with pytest.raises(CorpusError, match="meta.json"):
        Corpus(tmp_path)


def test_gates_measure_what_they_say():
    same = torch.nn.functional.normalize(torch.ones(4, 8), dim=-1)
    assert prompt_cosine(same)["mean"] == pytest.approx(1.0)
    assert prompt_cosine(torch.eye(4))["max"] == pytest.approx(0.0)

    class Perfect(torch.nn.Module):  # image i and caption i map to the same one-hot vector
        def encode_image(self, x, normalize=True):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 16).float()

        def encode_text(self, t, normalize=True):
            return torch.nn.functional.one_hot(t[:, 0], 16).float()

    images = torch.arange(16).float().view(16, 1, 1, 1).expand(16, 3, 2, 2)
    tokens = torch.arange(16).view(16, 1)
    assert retrieval(Perfect(), images, tokens)["r1"] == 1.0
    assert retrieval(Perfect(), images, tokens.flip(0))["r1"] == 0.0


def _config(corpus_dir, **kw):
    # 32 px crops (a 2x2 grid) and 32 pairs a step: at lr 1e-3 the loss leaves ln(32) within
    # 150 steps (3.6 -> 1.4; 2.3 at 100 steps, 0.7 at 200); at 3e-3 or 5e-3 it stays there
    base = {"corpus": str(corpus_dir), "scenes": SCENES, "batch": 32, "crop": 32, "warmup": 5}
    base.update(val_root="/nonexistent", retrieval_pairs=60, save_every=50, lr=1e-3)
    base.update(kw)
    return PretrainConfig(**base)


SHORT_STEPS = 150


@pytest.fixture(scope="module")
def short_run(corpus_dir, tmp_path_factory):
    """~25 s of ClipLoss on the small corpus: (config, run folder, report, random-tower probe R@1)."""
    cfg = _config(corpus_dir, steps=SHORT_STEPS)
    out = tmp_path_factory.mktemp("vlp")
    random_r1 = _probe_r1(Corpus(corpus_dir), cfg, build_towers(cfg))
    return cfg, out, pretrain(cfg, out, progress=False), random_r1


def _probe_r1(corpus, cfg, clip):
    """Caption -> image R@1 over 60 training scene crops (memorising them is what 1 minute can show)."""
    train = corpus.split(holdout=False)
    probe = train[corpus.is_scene_crop[train]][:60]
    tokens = Tokens(corpus.captions, 77)
    return retrieval(clip.eval(), load_images(corpus, probe, cfg.crop, None), tokens.of(probe))["r1"]


def test_short_pretraining_lowers_the_loss_learns_pairs_and_loads_strictly(corpus_dir, short_run):
    """ClipLoss falls, training-pair retrieval beats the random towers, the weights load strictly."""
    import open_clip

    cfg, out, report, random_r1 = short_run
    losses = [float(r.split(",")[1]) for r in (out / "log.csv").read_text().splitlines()[1:]]
    assert len(losses) == SHORT_STEPS and np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), losses
    assert set(report["gates"]) == {"prompt_cosine", "retrieval_r1_over_chance"}  # no val set here
    # CPU time of the steps (all threads) beside the wall time; both carried by the state file
    assert report["train_cpu_minutes"] > 0 and report["train_minutes"] > 0
    header, _ = read_state(out / "state.safetensors")
    assert header["cpu_seconds"] > 0 and header["seconds"] > 0
    weights = out / "clip.safetensors"
    model = create_model("semidavil-tiny", pretrained=weights)  # strict keys, pos-embed 2x2 -> 8x8
    trained = build_towers(cfg)
    open_clip.load_checkpoint(trained, str(weights), strict=True)
    assert torch.equal(model.text.token_embedding.weight, trained.token_embedding.weight)
    trained_r1 = _probe_r1(Corpus(corpus_dir), cfg, trained)
    assert trained_r1 > random_r1 + 0.05, (trained_r1, random_r1)


def test_finished_run_is_reused_and_other_settings_are_refused(short_run):
    cfg, out, _, _ = short_run
    assert pretrain(cfg, out, progress=False)["trained_step"] == SHORT_STEPS
    with pytest.raises(StateError, match="other settings"):
        pretrain(dataclasses.replace(cfg, lr=1e-4), out, progress=False)


def test_zero_shot_serving_of_the_pretrained_towers_is_flagged_and_full_size(short_run):
    from serving.http import prediction_json
    from serving.predictor import Predictor

    _, out, _, _ = short_run
    predictor = Predictor.from_checkpoint(
        str(out / "clip.safetensors"), backend="eager-fp32", captioner="none"
    )
    assert predictor.zero_shot and not predictor.random_weights
    assert predictor.info()["open_vocabulary"]  # CLIP weights: the prompts are the model's language
    assert predictor.info()["zero_shot"] and "zero-shot" in predictor.info()["trained_on"]
    image = np.random.default_rng(0).integers(0, 255, (203, 301, 3), dtype=np.uint8)
    pred = predictor.predict(image, caption="a street with cars")
    assert pred.zero_shot and pred.label_map.shape == (203, 301)
    assert prediction_json(pred, include_label_png=False)["zero_shot"] is True


def test_vision_objective_trains_the_visual_tower_only_and_feeds_w_o_vlp(corpus_dir, tmp_path):
    cfg = _config(corpus_dir, steps=10, objective="vision")
    report = pretrain(cfg, tmp_path / "vis", progress=False)
    assert 0.0 < report["trained"]["multilabel_ap"] <= 1.0
    import open_clip

    trained, initial = build_towers(cfg), build_towers(cfg)
    open_clip.load_checkpoint(trained, str(tmp_path / "vis" / "clip.safetensors"), strict=True)
    assert torch.equal(trained.token_embedding.weight, initial.token_embedding.weight)
    assert not torch.equal(trained.visual.conv1.weight, initial.visual.conv1.weight)

    no_vlp = get_model_config("semidavil-tiny", vlp=False)
    model = create_model(no_vlp, visual_pretrained=tmp_path / "vis" / "clip.safetensors")
    assert torch.equal(model.seg.visual.conv1.weight, trained.visual.conv1.weight)
    with pytest.raises(ValueError, match="vlp=False"):
        create_model("semidavil-tiny", visual_pretrained=tmp_path / "vis" / "clip.safetensors")


def test_vlp_on_and_off_start_from_the_same_decoder(tmp_path):
    """For one seed, VLP on/off (and a vision-only visual tower) leave the decoder init equal."""
    from safetensors.torch import save_file

    from model.factory import build_clip

    cfg = get_model_config("semidavil-tiny")
    torch.manual_seed(5)
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in build_clip(cfg).state_dict().items()}, path)
    decoders = []
    for vlp, visual in ((True, None), (False, None), (False, path)):
        torch.manual_seed(0)
        m = create_model(
            get_model_config("semidavil-tiny", vlp=vlp), pretrained=path, visual_pretrained=visual
        )
        decoders.append(m.seg.decoder.state_dict())
    for other in decoders[1:]:
        assert all(torch.equal(decoders[0][k], other[k]) for k in decoders[0])


def test_report_names_the_gate_thresholds(corpus_dir, tmp_path):
    report = json.loads(json.dumps(pretrain(_config(corpus_dir, steps=2), tmp_path / "r", progress=False)))
    assert report["gates"]["prompt_cosine"]["threshold"] == 0.5
    assert report["gates"]["retrieval_r1_over_chance"]["threshold"] == 5.0


def test_a_conv_tower_pretrains_and_its_weights_load_into_the_segmentation_model(corpus_dir, tmp_path):
    """The mini-VLP runs on semidavil-small-cnn's conv tower (open_clip's timm adapter) unchanged,
    and `model.pretrained` loads its file strictly into the segmentation model's towers."""
    import open_clip

    cfg = _config(corpus_dir, steps=4, model="semidavil-small-cnn", crop=64, batch=8)
    pretrain(cfg, tmp_path / "cnn", progress=False)
    weights = tmp_path / "cnn" / "clip.safetensors"
    trained = build_towers(cfg)
    open_clip.load_checkpoint(trained, str(weights), strict=True)
    assert not torch.equal(trained.visual.head.proj.weight, build_towers(cfg).visual.head.proj.weight)
    model = create_model("semidavil-small-cnn", pretrained=weights)
    assert torch.equal(model.seg.visual.proj.weight, trained.visual.head.proj.weight)


@pytest.mark.parametrize("model_name", ["semidavil-tiny", "semidavil-small-cnn"])
def test_zero_shot_gate_scores_a_labelled_set_with_vit_and_conv_towers(model_name):
    """The dense zero-shot gate runs on both tower kinds (a config with decoder skips included) and
    scores an oracle: a dataset whose labels are the towers' own zero-shot argmax gets mIoU 100."""
    from model.class_sets import get_class_set
    from model.factory import build_clip
    from training.pretrain.gates import class_embeddings, text_embedder, zero_shot_miou

    torch.manual_seed(0)
    cfg = get_model_config(model_name)
    clip = build_clip(cfg).eval()
    embeds = class_embeddings(clip, get_class_set("cityscapes").prompts())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    noise = [
        {"image": im, "label": rng.integers(0, 19, (64, 128)).astype(np.uint8), "caption": ""}
        for im in images
    ]
    scored = zero_shot_miou(clip, cfg, embeds, noise, (64, 128), max_images=2)
    assert len(scored["iou"]) == 19 and 0.0 <= scored["pixel_acc"] < 50.0

    from model.factory import dense_visual
    from model.zero_shot import ZeroShotGraph
    from training.evaluation.evaluate import predict_logits
    from training.schema import EvalSection

    graph = ZeroShotGraph(dense_visual(clip.visual, cfg, skip_layers=()), dense_path="clearclip")
    whole = EvalSection.whole((64, 128), 2)
    own = [
        {
            **ex,
            "label": predict_logits(graph, text_embedder(clip), embeds, ex["image"], "", whole)
            .argmax(0)
            .numpy()
            .astype(np.uint8),
        }
        for ex in noise
    ]
    assert zero_shot_miou(clip, cfg, embeds, own, (64, 128), max_images=2)["pixel_acc"] == pytest.approx(
        100.0
    )
