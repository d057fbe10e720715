"""serving.predictor on semidavil-tiny with random weights and the real Cityscapes fixture image."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.captioner import CaptionResult, create_captioner
from model.checkpoint import CheckpointError, save_checkpoint
from model.class_sets import CITYSCAPES_CLASSES
from serving.backends.base import ShapeProfile
from serving.backends.eager import EagerBackend
from serving.decode import Limits
from serving.errors import ImageTooLarge, InvalidParameter, UnsupportedMediaType
from serving.loading import random_model
from serving.predictor import Prediction, Predictor, PredictRequest, per_class_stats
from tests.conftest import CITYSCAPES_FIXTURES

FIXTURE_IMAGE = CITYSCAPES_FIXTURES / "train_img" / "aachen_000000_000019_leftImg8bit.png"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs (two spinning OpenMP threads next to another busy
    process on the shared 2-core box make every op ~100x slower; see the serving report)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def predictor():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("serving.loading.DEFAULT_CHECKPOINT", Path("/nonexistent/default.safetensors"))
        # "auto" by the CPU rule, not this machine's measured choice (serving/backend_choice.json)
        mp.setattr("serving.backends.factory.CHOICE_FILE", Path("/nonexistent/backend_choice.json"))
        return Predictor.from_checkpoint(None)


@pytest.fixture(scope="module")
def fixture_png() -> bytes:
    if not FIXTURE_IMAGE.is_file():
        pytest.skip(f"Cityscapes fixture not found at {FIXTURE_IMAGE}")
    return FIXTURE_IMAGE.read_bytes()


def png_bytes(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def scene(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


class RaisingCaptioner:
    def caption(self, images):
        raise RuntimeError("captioner exploded")


class FixedCaptioner:
    def __init__(self) -> None:
        self.calls = 0

    def caption(self, images):
        self.calls += 1
        return [CaptionResult("a wide street with parked cars", "captioner") for _ in images]


def sibling(predictor: Predictor, **kwargs) -> Predictor:
    """Another predictor on the same model, backend and text caches (cheap to make)."""
    args = {"backend": predictor.backend, "captioner": predictor.captioner, "embedder": predictor.embedder}
    args.update(kwargs)
    return Predictor(predictor.served, args.pop("backend"), predictor.working_size, **args)


def test_from_checkpoint_none_builds_random_tiny(predictor):
    assert predictor.random_weights is True
    assert predictor.served.name == "semidavil-tiny" and predictor.working_size == (128, 256)
    assert predictor.backend.name in ("eager-bf16", "eager-fp32")
    info = predictor.info()
    assert info["random_weights"] is True and info["classes"] == list(CITYSCAPES_CLASSES)
    assert len(info["checkpoint_sha256"]) == 64


def test_cityscapes_fixture_is_segmented_at_its_own_size(predictor, fixture_png):
    pred = predictor.predict(fixture_png, caption="a street in a german city with parked cars")
    assert pred.label_map.shape == (1024, 2048) and pred.label_map.dtype == np.uint8
    assert pred.confidence.shape == (1024, 2048) and pred.confidence.dtype == np.float16
    assert pred.label_map.max() < 19
    conf = pred.confidence.astype(np.float32)
    assert np.isfinite(conf).all() and conf.min() >= 1 / 19 - 1e-3 and conf.max() <= 1.0
    assert pred.caption.text.startswith("a street") and pred.caption.source == "caller"
    assert pred.random_weights and pred.model_name == "semidavil-tiny"
    assert (pred.backend, pred.precision) == (predictor.backend.name, predictor.backend.precision)
    assert pred.image_format == "PNG" and pred.rgb.shape == (1024, 2048, 3)
    stages = {"decode", "caption", "text", "preprocess", "forward", "postprocess", "total"}
    assert stages == set(pred.timings_ms) and all(v >= 0 for v in pred.timings_ms.values())
    stats = per_class_stats(pred)
    assert abs(sum(s["pixel_fraction"] for s in stats) - 1.0) < 1e-9
    assert all(0 < s["mean_confidence"] <= 1 for s in stats)
    assert {s["class"] for s in stats} <= set(CITYSCAPES_CLASSES)


def test_failing_captioner_degrades_to_no_caption(predictor):
    image = scene(60, 90, 0)
    failing = sibling(predictor, captioner=RaisingCaptioner())
    pred = failing.predict(image)
    assert pred.caption.text == "" and pred.caption.source == "captioner_failed"
    assert "captioner exploded" in pred.caption.error
    assert failing.predict(image, caption="given").caption.source == "caller"
    assert failing.predict(image, use_captioner=False).caption.source == "none"
    assert failing.caption(png_bytes(image)).source == "captioner_failed"


def test_unavailable_blip_captioner_degrades_offline_and_is_said_once(predictor, caplog):
    offline = sibling(predictor, captioner=create_captioner("blip", "/nonexistent/blip"))
    with caplog.at_level(logging.WARNING, logger="semidavil"):
        status = offline.probe_captioner()
        assert (
            status["name"] == "blip" and not status["available"] and "/nonexistent/blip" in status["reason"]
        )
        preds = [offline.predict(scene(60, 90, 1)) for _ in range(10)]
    assert all(
        p.caption.source == "captioner_failed" and "CaptionerUnavailable" in p.caption.error for p in preds
    )
    said = [r for r in caplog.records if "captioner" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]  # at the probe, not once per request
    assert offline.info()["captioner_status"] == status
    assert predictor.captioner_status()["name"] == "none"


def test_captioner_caption_is_used(predictor):
    captioner = FixedCaptioner()
    pred = sibling(predictor, captioner=captioner).predict(scene(60, 90, 2))
    assert (pred.caption.text, pred.caption.source) == ("a wide street with parked cars", "captioner")
    assert captioner.calls == 1


def test_custom_class_prompts_change_classes_and_label_range(predictor):
    image = scene(64, 96, 3)
    pred = predictor.predict(image, classes="sky, road, car")
    assert pred.class_names == ("sky", "road", "car") and pred.class_set.train_ids is None
    assert pred.label_map.max() <= 2 and pred.label_map.shape == (64, 96)
    listed = predictor.predict(image, classes=["sky|clouds", "road|street"])
    assert listed.class_names == ("sky", "road")
    assert listed.class_set.concepts == (("sky", "clouds"), ("road", "street"))
    synthia = predictor.predict(image, classes="synthia16")
    assert len(synthia.class_names) == 16 and synthia.label_map.max() < 16
    for bad in ("", [], ["sky", "sky"], ["x" * 300], ["sky", 3]):
        with pytest.raises(InvalidParameter):
            predictor.predict(image, classes=bad)


def test_predict_batch_equals_single_predictions(fixture_png, tmp_path):
    """fp32, a random tiny model with the DLG switched on (gamma = 1; it is zero at initialisation,
    which would make captions irrelevant; the embedded default has no DLG), so a caption given to
    the wrong image would show. Batched and single convolutions differ in the last bits, which flips
    a few of the random model's near-tied pixels: >= 99.9 %."""
    path = tmp_path / "tiny_dlg.safetensors"
    save_checkpoint(path, random_model(seed=2), list(CITYSCAPES_CLASSES), {"eval": {"size": [128, 256]}})
    fp32 = Predictor.from_checkpoint(str(path), backend="eager-fp32")
    with torch.no_grad():
        fp32.served.model.seg.dlg.gamma.fill_(1.0)
    images = [fixture_png, png_bytes(scene(240, 320, 4), "JPEG"), scene(100, 200, 5)]
    captions = ["a city street", "snow on a mountain road at night", ""]
    requests = [PredictRequest(img, cap, None, False) for img, cap in zip(images, captions)]
    batch = fp32.predict_batch(requests)
    assert [p.batch_size for p in batch] == [3, 3, 3]
    for request, together in zip(requests, batch):
        alone = fp32.predict(request.image, request.caption, use_captioner=False)
        assert alone.batch_size == 1 and together.caption == alone.caption
        assert together.label_map.shape == alone.label_map.shape
        agreement = (together.label_map == alone.label_map).mean()
        assert agreement >= 0.999, f"batched and single labels agree on only {agreement:.5%}"
        np.testing.assert_allclose(together.confidence, alone.confidence, atol=2e-3)
    swapped = fp32.predict(images[1], captions[0], use_captioner=False)
    assert (swapped.label_map != batch[1].label_map).mean() > 0.01, "the caption must matter here"


def test_predict_batch_reports_bad_items_in_place(predictor):
    good = png_bytes(scene(50, 70, 6))
    requests = [PredictRequest(data) for data in (good, b"<html>nope</html>", good)]
    results = predictor.predict_batch(requests, return_errors=True)
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    assert isinstance(results[1], UnsupportedMediaType) and results[1].status == 415
    with pytest.raises(UnsupportedMediaType):
        predictor.predict_batch(requests[:2])


def test_limits_apply_to_predict(predictor):
    small = sibling(predictor, limits=Limits(max_pixels=1000))
    with pytest.raises(ImageTooLarge):
        small.predict(png_bytes(scene(40, 30, 7)))
    with pytest.raises(InvalidParameter):
        predictor.predict(scene(40, 30, 7), caption="x" * 5000)


def test_class_embeddings_and_caption_features_are_cached(predictor):
    image = scene(48, 64, 8)
    predictor.predict(image, caption="a caption seen for the first time", classes="cityscapes")
    before = predictor.text_cache_stats()
    predictor.predict(image, caption="a caption seen for the first time", classes="cityscapes")
    after = predictor.text_cache_stats()
    assert after["caption_hits"] == before["caption_hits"] + 1
    assert after["caption_misses"] == before["caption_misses"]
    assert after["class_hits"] == before["class_hits"] + 1
    assert after["class_misses"] == before["class_misses"]
    assert predictor.resolve_classes("sky, road") is predictor.resolve_classes(" sky ,road ")


def test_fixed_shape_backend_falls_back_to_eager_for_other_class_counts(predictor):
    class FixedEager(EagerBackend):
        def __init__(self, graph):
            super().__init__(graph, "fp32", "cpu", None)
            self.profile = ShapeProfile(128, 256, 77, 4, 19)
            self.max_batch = 4
            self.name = "fixed-19"

    fixed = sibling(predictor, backend=FixedEager(predictor.served.model.seg))
    image = scene(64, 96, 9)
    assert fixed.predict(image).backend == "fixed-19"
    custom = fixed.predict(image, classes="sky, road")
    assert custom.backend.startswith("eager-") and "2 classes" in custom.backend_note


def test_concurrent_predictions_match_sequential_ones(predictor):
    images = [scene(64, 96, 10 + i) for i in range(4)]
    expected = [predictor.predict(img, caption="a road").label_map for img in images]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = predictor.predict(images[i % 4], caption="a road").label_map
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, labels in results.items():
        np.testing.assert_array_equal(labels, expected[i % 4])


def test_checkpoint_working_size_and_sha_come_from_the_header(tmp_path):
    model = random_model(seed=1)
    path = tmp_path / "tiny.safetensors"
    header = save_checkpoint(path, model, list(CITYSCAPES_CLASSES), {"eval": {"size": [64, 128]}})
    loaded = Predictor.from_checkpoint(str(path), backend="eager-fp32")
    assert not loaded.random_weights and loaded.working_size == (64, 128)
    assert loaded.served.checkpoint_sha256 == header["tensors_sha256"]
    pred = loaded.predict(scene(30, 50, 11))
    assert pred.checkpoint_sha256 == header["tensors_sha256"] and not pred.random_weights
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(str(path))


def test_custom_prompts_on_an_untrained_text_tower_carry_a_warning(predictor):
    """Random weights: open_vocabulary false, and custom prompts are answered with a warning."""
    from serving.http import prediction_json

    assert predictor.info()["open_vocabulary"] is False
    custom = predictor.predict(scene(60, 90, 3), caption="x", classes="road, sky, tree")
    body = prediction_json(custom, include_label_png=False)
    assert body["open_vocabulary"] is False and "never pre-trained" in body["warnings"][0]
    assert predictor.predict(scene(60, 90, 3), caption="x").warnings == ()  # Cityscapes classes: none


def test_open_vocabulary_follows_the_training_config():
    from serving.loading import ServingModel

    def served(training_model: dict | None) -> ServingModel:
        header = {} if training_model is None else {"training_config": {"model": training_model}}
        return ServingModel(random_model(), header, None, "sha", False)

    assert served({"pretrained": None}).open_vocabulary is False
    assert served({"pretrained": "runs/vlp-tiny/clip.safetensors"}).open_vocabulary is True
    assert served(None).open_vocabulary is True  # the header does not say: no warning


def test_options_come_from_one_value_the_settings_produce(monkeypatch):
    from serving.options import PredictorOptions
    from serving.settings import ServiceSettings

    monkeypatch.setenv("SEMIDAVIL_BACKEND", "eager-fp32")
    monkeypatch.setenv("SEMIDAVIL_MAX_BATCH", "3")
    monkeypatch.setenv("SEMIDAVIL_BACKEND_PROBE", "off")
    monkeypatch.setenv("SEMIDAVIL_MAX_PIXELS", "123456")
    options = ServiceSettings.from_env().predictor_options()
    assert (options.backend, options.max_batch, options.probe_dir) == ("eager-fp32", 3, None)
    assert options.limits.max_pixels == 123456
    built = Predictor.from_checkpoint(None, options, captioner="none", working_size=(64, 128))
    assert built.backend.name == "eager-fp32" and built.backend.max_batch == 3
    assert built.limits.max_pixels == 123456 and built.working_size == (64, 128)
    with pytest.raises(TypeError):
        Predictor.from_checkpoint(None, PredictorOptions(), no_such_option=1)


def test_uploads_up_to_the_body_limit_stay_in_memory():
    """Starlette spools multipart parts over spool_max_size to disk; the service raises it to the
    body limit (never lowers it) so that an upload is not written to disk and read back."""
    from starlette.formparsers import MultiPartParser

    from serving.http import keep_uploads_in_memory

    before = MultiPartParser.spool_max_size
    try:
        keep_uploads_in_memory(20 << 20)
        assert MultiPartParser.spool_max_size == 20 << 20
        keep_uploads_in_memory(1000)
        assert MultiPartParser.spool_max_size == 20 << 20
    finally:
        MultiPartParser.spool_max_size = before


def test_forward_and_post_processing_run_on_the_compute_thread(predictor, fixture_png, monkeypatch):
    """Every forward and post-processing of a predictor runs on its one compute thread, whichever
    thread calls (serving/compute.py: one OpenMP team instead of one per calling thread); the lazy
    confidence too, also when read from another thread (this deadlocked once: a shared lock)."""
    import serving.predictor as predictor_module

    threads: list[int] = []
    forward, upsample = predictor._forward, predictor_module.upsample

    def recording_forward(*args):
        threads.append(threading.get_ident())
        return forward(*args)

    def recording_upsample(*args):
        threads.append(threading.get_ident())
        return upsample(*args)

    monkeypatch.setattr(predictor, "_forward", recording_forward)
    monkeypatch.setattr(predictor_module, "upsample", recording_upsample)
    pred = predictor.predict(fixture_png, caption="")
    other: list[Prediction] = []
    worker = threading.Thread(target=lambda: other.append(predictor.predict(fixture_png, caption="")))
    worker.start()
    worker.join()
    assert len(threads) == 4 and set(threads) == {predictor.compute.ident}
    assert threading.get_ident() != predictor.compute.ident
    reader = threading.Thread(target=lambda: other[0].confidence)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive() and other[0].upsampled.confidence_computed
    assert (pred.confidence == other[0].confidence).all()


def test_compute_thread_runs_nested_calls_directly():
    from serving.compute import ComputeThread

    compute = ComputeThread()
    assert compute.run(lambda: compute.run(threading.get_ident)) == compute.ident
    compute.shutdown()


def test_cpu_streams_run_one_thread_each_and_give_the_wide_lanes_labels(fixture_png):
    """The one-thread streams (serving/compute.py) run forward and post-processing on their own
    thread with one torch thread, give the same labels as the wide compute thread, and leave the
    thread count that later threads start from as it was."""
    torch.set_num_threads(2)  # (this module runs on 1; 2 tells the streams' 1 from the default)
    try:
        streamed = Predictor.from_checkpoint(None, backend="eager-fp32", captioner="none", cpu_streams=2)
    finally:
        torch.set_num_threads(1)
    before = 2
    assert streamed.lanes == 3 and streamed.info()["cpu_streams"] == 2
    assert streamed.stream_backend is streamed.backend  # eager: each stream runs it on its own thread
    assert [s.run(torch.get_num_threads) for s in streamed.streams] == [1, 1]
    assert streamed.compute.run(torch.get_num_threads) == before
    fresh: list[int] = []
    torch.set_num_threads(2)
    try:
        again = Predictor.from_checkpoint(None, backend="eager-fp32", captioner="none", cpu_streams=2)
        probe = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        probe.start()
        probe.join()
    finally:
        torch.set_num_threads(1)
    assert fresh == [before] and again.compute.run(torch.get_num_threads) == before
    prepared = streamed.prepare(PredictRequest(fixture_png, "a street", None, False))
    ran_on: list[int] = []
    forward = streamed._forward

    def recording_forward(*args):
        ran_on.append(threading.get_ident())
        return forward(*args)

    streamed._forward = recording_forward  # type: ignore[method-assign]
    by_lane = [streamed.run_prepared([prepared], lane)[0] for lane in range(3)]
    assert ran_on == [streamed.compute.ident, *(s.ident for s in streamed.streams)]
    for pred in by_lane[1:]:
        assert np.array_equal(pred.label_map, by_lane[0].label_map)
    warmed: list[int] = []
    run = streamed.run_prepared
    streamed.run_prepared = lambda prepared, lane=0: warmed.append(lane) or run(prepared, lane)  # type: ignore[method-assign]
    streamed.warmup()
    streamed.warmup(all_lanes=False)  # the readiness check: lane 0 only
    assert warmed == [0, 1, 2, 0]


def test_stream_count_follows_the_device_and_the_backend(monkeypatch):
    from serving.compute import MAX_AUTO_STREAMS, ComputeThread, make_streams, stream_count

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(12)))
    assert stream_count(None, "cpu", True) == MAX_AUTO_STREAMS == 8
    assert stream_count(3, "cpu", True) == 3 and stream_count(0, "cpu", True) == 0
    assert stream_count(None, "cuda", True) == 0  # a GPU batches; streams are a CPU matter
    assert stream_count(4, "cpu", False) == 0  # ONNX Runtime / TensorRT: threads torch does not set
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert stream_count(None, "cpu", True) == 2
    wide = ComputeThread()
    assert make_streams(1, wide) == () and make_streams(0, wide) == ()
    wide.shutdown()


def test_cpu_streams_setting(monkeypatch):
    from serving.settings import ServiceSettings

    assert ServiceSettings.from_env().predictor_options().cpu_streams is None  # auto
    monkeypatch.setenv("SEMIDAVIL_CPU_STREAMS", "0")
    assert ServiceSettings.from_env().predictor_options().cpu_streams == 0
    monkeypatch.setenv("SEMIDAVIL_CPU_STREAMS", "many")
    with pytest.raises(ValueError, match="SEMIDAVIL_CPU_STREAMS must be a whole number"):
        ServiceSettings.from_env()
