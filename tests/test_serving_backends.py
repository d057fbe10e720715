"""serving.backends, serving.agreement, serving.artifacts and serving.compile on semidavil-tiny (random weights, seed 0).

Random weights give near-tied logits almost everywhere (most pixels have a top-2 margin below
0.01), so bf16 checks compare only pixels whose fp32 top-2 margin exceeds 0.01; fp32 backends
(ONNX Runtime) are gated on all pixels.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from serving.agreement import AgreementError, check_agreement, compare_logits, synthetic_inputs
from serving.artifacts import ArtifactMismatch, build_backend, load_backend, manifest_path
from serving.backends import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailable,
    ShapeProfile,
    choose_default_backend,
    create_backend,
    default_backend_name,
)
from serving.backends.compiled import batch_buckets
from serving.backends.eager import EagerBackend
from serving.backends.tensorrt import compile_settings, export_for_tensorrt, supported_kwargs
from serving.gate_inputs import agreement_inputs
from serving.loading import load_serving_model
from tests.conftest import CITYSCAPES_FIXTURES

FIXTURE_IMAGE = CITYSCAPES_FIXTURES / "train_img" / "aachen_000000_000019_leftImg8bit.png"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs: on the shared 2-core box, two spinning OpenMP
    threads next to another busy process make every op ~100x slower (see the serving report)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


PROFILE = ShapeProfile(height=128, width=256, caption_length=77, max_batch=4, num_classes=19)
NEAR_TIE_MARGIN = 0.01


@pytest.fixture(scope="module")
def served():
    return load_serving_model(None, default_checkpoint=Path("/nonexistent"))


@pytest.fixture(scope="module")
def graph(served):
    return served.model.seg.eval()


@pytest.fixture(scope="module")
def inputs(served):
    return agreement_inputs(served.model, PROFILE, None, batches=(1, 3))


class MemoBackend(EagerBackend):
    """eager-fp32 that remembers its outputs per input batch (the module's inputs are fixed): the
    reference runs once per batch however many tests compare against it."""

    def __init__(self, graph):
        super().__init__(graph, "fp32", "cpu", PROFILE)
        self.memo: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, images, caption_feats, caption_mask, class_embeds):
        key = (id(images), id(caption_feats), id(caption_mask), id(class_embeds))
        if key not in self.memo:
            self.memo[key] = super().forward(images, caption_feats, caption_mask, class_embeds)
        return self.memo[key].clone()


@pytest.fixture(scope="module")
def reference(graph):
    return MemoBackend(graph)


class FlippedBackend(Backend):
    """A deliberately broken candidate: the reference's logits, negated (argmax becomes argmin)."""

    name = "flipped"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.device, inner.max_batch, inner.profile)
        self.inner = inner

    def forward(self, images, caption_feats, caption_mask, class_embeds):
        return -self.inner(images, caption_feats, caption_mask, class_embeds)


def test_eager_fp32_equals_the_models_own_forward(graph, inputs):
    backend = create_backend("eager-fp32", graph, PROFILE)
    for batch in inputs:
        with torch.no_grad():
            expected = graph(*batch)
        got = backend(*batch)
        assert got.dtype == torch.float32 and got.shape == (batch[0].shape[0], 19, 128, 256)
        assert torch.equal(got, expected)


def test_eager_bf16_agrees_with_fp32_on_clear_pixels(graph, inputs, reference):
    bf16 = create_backend("eager-bf16", graph, PROFILE)
    assert (bf16.name, bf16.precision) == ("eager-bf16", "bf16")
    report = check_agreement(bf16, reference, inputs, threshold=0.99, margin=NEAR_TIE_MARGIN)
    assert report.passed and report.argmax_agreement >= 0.99
    assert report.num_compared > 0.2 * report.num_pixels, "too few clear pixels for a meaningful check"
    assert 0 < report.max_abs_error < 0.1, "bf16 must differ from fp32 a little, and only a little"


def test_agreement_error_for_a_broken_candidate_names_the_numbers(inputs, reference):
    with pytest.raises(AgreementError) as err:
        check_agreement(FlippedBackend(reference), reference, inputs)
    report = err.value.report
    assert not report.passed and report.argmax_agreement < 0.5
    assert "argmax agreement" in str(err.value) and f"{report.argmax_agreement:.4%}" in str(err.value)


def test_agreement_fails_on_nan_and_on_a_just_too_low_score():
    ref = torch.zeros(1, 2, 10, 10)
    ref[:, 0] = 1.0
    cand = ref.clone()
    cand[0, 1, 0, :5] = 2.0  # 5 of 100 pixels flip: 95 %
    assert not compare_logits([cand], [ref], threshold=0.96).passed
    assert compare_logits([cand], [ref], threshold=0.95).passed
    cand[0, 0, 9, 9] = float("nan")
    assert not compare_logits([cand], [ref], threshold=0.5).passed


def test_build_refuses_and_saves_nothing_when_agreement_fails(graph, inputs, tmp_path, monkeypatch):
    def broken(name, graph, profile, device, artifacts_dir=None):
        backend = FlippedBackend(EagerBackend(graph, "fp32", device, profile))
        backend.path = Path(artifacts_dir) / "broken.onnx"
        backend.path.write_bytes(b"not really onnx")
        return backend

    monkeypatch.setattr("serving.artifacts.create_backend", broken)
    with pytest.raises(AgreementError):
        build_backend(
            graph, "onnxruntime", PROFILE, torch.device("cpu"), inputs,
            out_dir=tmp_path, checkpoint_sha256="sha", model_name="tiny",
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == [], "a refused artefact must leave nothing behind"


def test_compile_cli_writes_onnx_and_manifest(onnx_artifacts, served):
    manifest = json.loads(manifest_path(onnx_artifacts, "onnxruntime", PROFILE).read_text())
    assert manifest["backend"] == "onnxruntime" and manifest["precision"] == "fp32"
    assert manifest["checkpoint_sha256"] == served.checkpoint_sha256
    assert manifest["profile"] == PROFILE.to_dict()
    assert manifest["agreement"]["passed"] and manifest["agreement"]["margin"] == 0.0
    assert manifest["agreement"]["argmax_agreement"] >= 0.995
    assert manifest["versions"]["torch"] == torch.__version__ and manifest["versions"]["onnxruntime"]
    assert manifest["exporter"] in ("dynamo", "torchscript")
    assert (onnx_artifacts / manifest["artifact"]).is_file()
    assert manifest["artifact"].endswith(".onnx")


def test_onnxruntime_backend_matches_eager_at_batch_1_and_3(onnx_artifacts, served, inputs, reference):
    backend = load_backend(
        onnx_artifacts, "onnxruntime", PROFILE, served.checkpoint_sha256, torch.device("cpu")
    )
    assert backend.describe()["exporter"] == "dynamo", "the dynamo exporter should work for this graph"
    for batch in inputs:
        got = backend(*batch)
        assert got.shape == (batch[0].shape[0], 19, 128, 256)
        torch.testing.assert_close(got, reference(*batch), rtol=1e-4, atol=1e-4)
    report = check_agreement(backend, reference, inputs)
    assert report.argmax_agreement_all >= 0.995
    with pytest.raises(ValueError, match="batch 5"):
        backend(*synthetic_inputs(ShapeProfile(128, 256, 77, 5, 19), 64, batches=(5,))[0])
    with pytest.raises(ValueError, match="K=5"):
        images, feats, mask, embeds = inputs[0]
        backend(images, feats, mask, embeds[:5])


def test_load_refuses_mismatched_checkpoint_and_shapes(onnx_artifacts, served, tmp_path):
    cpu = torch.device("cpu")
    with pytest.raises(ArtifactMismatch, match="checkpoint sha256"):
        load_backend(onnx_artifacts, "onnxruntime", PROFILE, "0" * 64, cpu)
    with pytest.raises(ArtifactMismatch, match="no manifest"):
        load_backend(
            onnx_artifacts, "onnxruntime", ShapeProfile(128, 256, 77, 4, 5), served.checkpoint_sha256, cpu
        )
    copy = tmp_path / "copy"
    shutil.copytree(onnx_artifacts, copy)
    path = manifest_path(copy, "onnxruntime", PROFILE)
    manifest = json.loads(path.read_text())
    manifest["profile"]["height"] = 64
    manifest["versions"]["onnxruntime"] = "0.0.1"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatch) as err:
        load_backend(copy, "onnxruntime", PROFILE, served.checkpoint_sha256, cpu)
    assert "height 64 != 128" in str(err.value) and "onnxruntime 0.0.1" in str(err.value)


@pytest.mark.slow
def test_torch_compile_backend_tiny(graph, inputs, reference):
    """Slow: Inductor compiles for ~50-100 s on the 2-core dev CPU."""
    backend = create_backend("compile-bf16", graph, PROFILE)
    report = check_agreement(backend, reference, inputs[:1], threshold=0.99, margin=NEAR_TIE_MARGIN)
    assert report.passed
    assert set(backend.describe()["first_call_seconds"]) == {"1"}


def test_export_for_tensorrt_runs_on_cpu_for_tiny(graph, inputs, reference):
    program = export_for_tensorrt(graph, PROFILE)
    module = program.module()
    for batch in inputs:
        with torch.no_grad():
            torch.testing.assert_close(module(*batch), reference(*batch), rtol=1e-4, atol=1e-4)
    batch_ranges = {str(s): (r.lower, r.upper) for s, r in program.range_constraints.items()}
    assert (1, 4) in batch_ranges.values(), f"batch must stay dynamic in [1, 4]: {batch_ranges}"
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("scaled_dot_product" in t for t in targets)


@pytest.mark.slow
def test_export_for_tensorrt_vitb16_512x1024():
    from model import create_model

    graph = create_model("semidavil-vitb16").seg.eval()
    profile = ShapeProfile(512, 1024, 77, 8, 19)
    program = export_for_tensorrt(graph, profile)
    batch = synthetic_inputs(profile, 512, batches=(1,))[0]
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*batch), graph(*batch), rtol=1e-4, atol=1e-4)


def test_tensorrt_settings_use_2_13_names():
    settings = compile_settings("fp16")
    assert settings["enable_autocast"] and settings["autocast_low_precision_type"] == torch.float16
    assert settings["attn_bias_is_causal"] is False and settings["use_fp32_acc"] is True
    assert torch.ops.aten.native_layer_norm.default in settings["autocast_excluded_ops"]
    assert "enabled_precisions" not in settings and "use_explicit_typing" not in settings
    assert compile_settings("bf16")["use_fp32_acc"] is False


def test_tensorrt_without_cuda_is_a_clear_error(graph):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the unavailable path is not reachable")
    with pytest.raises(BackendUnavailable, match="CUDA"):
        create_backend("tensorrt-fp16", graph, PROFILE, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_tensorrt_build_save_load_and_agreement(precision, served, tmp_path):
    pytest.importorskip("torch_tensorrt", reason="torch_tensorrt is not installed (pip install .[tensorrt])")
    cuda = torch.device("cuda")
    name = f"tensorrt-{precision}"
    try:
        served.model.to(cuda)
        inputs = agreement_inputs(served.model, PROFILE, None)
        backend, manifest = build_backend(
            served.model.seg,
            name,
            PROFILE,
            cuda,
            inputs,
            out_dir=tmp_path,
            checkpoint_sha256=served.checkpoint_sha256,
            model_name=served.name,
            margin=NEAR_TIE_MARGIN,
        )
        assert manifest["agreement"]["passed"] and (tmp_path / manifest["artifact"]).is_file()
        reloaded = load_backend(tmp_path, name, PROFILE, served.checkpoint_sha256, cuda)
        for batch in inputs:
            torch.testing.assert_close(reloaded(*batch), backend(*batch), rtol=1e-3, atol=1e-3)
    finally:
        served.model.cpu()


def test_tensorrt_autocast_exclusions_match_the_exported_graph(graph):
    """The fp32 islands named in compile_settings exist in the program TensorRT would compile: the DLG
    (masked softmax filled with float32's minimum) by node-name regex, the norms by op."""
    program = export_for_tensorrt(graph, PROFILE)
    settings = compile_settings("fp16")
    (pattern,) = settings["autocast_excluded_nodes"]
    excluded = []
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and stack:
            module_path = stack[next(reversed(stack))][0]  # how Torch-TensorRT's NodeClassifier names nodes
            if re.search(pattern, module_path):
                excluded.append(str(node.target))
    assert any("masked_fill" in t for t in excluded), excluded
    assert any("softmax" in t for t in excluded), excluded
    targets = {node.target for node in program.graph.nodes}
    assert targets & set(settings["autocast_excluded_ops"]), "no norm op to keep in fp32?"


def test_supported_kwargs_drops_unknown_names_only_when_the_signature_is_readable():
    def compile_like(program, *, arg_inputs=None, min_block_size=5, **kwargs):
        return None

    kept, dropped = supported_kwargs(compile_like, {"min_block_size": 1, "enable_autocast": True})
    assert kept == {"min_block_size": 1} and dropped == ["enable_autocast"]

    def opaque(*args, **kwargs):
        return None

    assert supported_kwargs(opaque, {"enable_autocast": True}) == ({"enable_autocast": True}, [])


def test_default_backend_rule_and_choice_file(tmp_path):
    cpu = torch.device("cpu")
    assert default_backend_name(cpu) in ("eager-bf16", "eager-fp32")
    assert choose_default_backend(cpu, choice_file=tmp_path / "missing.json") == default_backend_name(cpu)
    choice = tmp_path / "choice.json"
    choice.write_text(
        json.dumps(
            {
                "choices": [
                    {"device": "cuda", "backend": "tensorrt-fp16"},
                    {"device": "cpu", "model": "other-model", "backend": "compile-bf16"},
                    {"device": "cpu", "model": "semidavil-tiny", "backend": "onnxruntime"},
                ]
            }
        )
    )
    assert choose_default_backend(cpu, "semidavil-tiny", choice) == "onnxruntime"
    assert choose_default_backend(cpu, "semidavil-vitb16", choice) == default_backend_name(cpu)
    choice.write_text("{not json")
    assert choose_default_backend(cpu, "semidavil-tiny", choice) == default_backend_name(cpu)


def test_factory_names_and_helpers(graph):
    assert set(BACKEND_NAMES) == {
        "eager-fp32",
        "eager-bf16",
        "compile-bf16",
        "compile-fp32",
        "onnxruntime",
        "tensorrt-fp16",
        "tensorrt-bf16",
    }
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("tvm", graph, PROFILE)
    assert batch_buckets(8) == [1, 2, 4, 8] and batch_buckets(6) == [1, 2, 4, 6] and batch_buckets(1) == [1]
    with pytest.raises(ValueError):
        ShapeProfile(0, 256)


def test_configured_logging_keeps_the_onnx_exporter_quiet_and_ours_at_info():
    """`make demo` started with ~270 INFO lines of onnx_ir/onnxscript passes; now ours only."""
    import logging

    from serving.logs import configure_logging

    configure_logging()
    assert not logging.getLogger("onnxscript.optimizer._constant_folding").isEnabledFor(logging.INFO)
    assert not logging.getLogger("onnx_ir.passes.common.unused_removal").isEnabledFor(logging.INFO)
    assert logging.getLogger("serving.artifacts").isEnabledFor(logging.INFO)
    assert logging.getLogger("semidavil.ui").isEnabledFor(logging.INFO)


def test_onnxruntime_predictor_reuses_a_gated_artefact(tmp_path, monkeypatch, onnx_artifacts):
    """The predictor finds the artefact `python -m serving.compile` built for its shape profile
    (conftest.py; the tests above check the build and its manifest) and runs it instead of exporting
    again; its labels agree with eager fp32's on a Cityscapes fixture frame at its own size. (Here
    rather than with the predictor's tests so that one pytest-xdist worker builds the export.)"""
    from serving.predictor import Predictor, PredictRequest

    if not FIXTURE_IMAGE.is_file():
        pytest.skip(f"Cityscapes fixture not found at {FIXTURE_IMAGE}")
    frame = FIXTURE_IMAGE.read_bytes()
    artifacts = tmp_path / "artifacts"
    shutil.copytree(onnx_artifacts, artifacts)
    with monkeypatch.context() as mp:
        mp.setattr("serving.loading.DEFAULT_CHECKPOINT", Path("/nonexistent/default.safetensors"))
        mp.setattr("serving.artifacts.build_backend", lambda *a, **k: pytest.fail("artefact must be re-used"))
        onnx = Predictor.from_checkpoint(
            None, backend="onnxruntime", artifacts_dir=str(artifacts), max_batch=4, cpu_streams=2
        )
    assert onnx.backend.name == "onnxruntime"
    assert sorted(p.suffix for p in artifacts.iterdir()) == [".json", ".onnx"]
    pred = onnx.predict(frame, caption="a street")
    assert pred.backend == "onnxruntime" and pred.label_map.shape == (1024, 2048)
    eager = Predictor(
        onnx.served,
        EagerBackend(onnx.served.model.seg, "fp32"),
        onnx.working_size,
        captioner=onnx.captioner,
        embedder=onnx.embedder,
    )
    reference = eager.predict(frame, "a street")
    assert (pred.label_map == reference.label_map).mean() >= 0.995
    # CPU streams run a second session on the same file with one intra-op thread (ONNX Runtime's
    # pool is its own: a stream's torch setting does not reach it), with the same labels
    streamed = onnx.stream_backend
    assert streamed is not None and streamed is not onnx.backend and streamed.path == onnx.backend.path
    assert streamed.session.get_session_options().intra_op_num_threads == 1
    prepared = onnx.prepare(PredictRequest(frame, "a street", None, False))
    on_stream = onnx.run_prepared([prepared], 2)[0]
    assert on_stream.lane == 2 and (on_stream.label_map == pred.label_map).mean() >= 0.999
