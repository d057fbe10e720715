"""The benchmark suite's pure parts: statistics and formatting, target verdicts, the backend choice
(agreement bar, speed) and the choice file the service reads for backend="auto", report sections."""

from __future__ import annotations

import json

import pytest
import torch

from bench import backends, common, report
from serving.agreement import compare_logits
from serving.backends.factory import choose_default_backend, cpu_feature_key


def _stat(median: float, spread: float = 0.0) -> dict[str, float]:
    return {
        "median": median,
        "min": median - spread,
        "max": median + spread,
        "p25": median,
        "p75": median,
        "n": 5,
    }


# ------------------------------------------------------------------------------------ statistics


def test_summarize_median_and_spread():
    s = common.summarize([3.0, 1.0, 2.0, 10.0])
    assert s["median"] == pytest.approx(2.5)
    assert (s["min"], s["max"], s["n"]) == (1.0, 10.0, 4)
    assert s["p25"] == pytest.approx(1.75) and s["p75"] == pytest.approx(4.75)
    with pytest.raises(ValueError):
        common.summarize([])


def test_time_calls_excludes_warmup():
    calls = []
    times = common.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3


def test_format_numbers_and_stats():
    assert common.fmt_num(12345.6) == "12,346"
    assert common.fmt_num(0.00123) == "0.00123"
    assert common.fmt_num(None) == "n/a"
    assert common.fmt_stat(_stat(0.0123, 0.001)) == "12.3 (11.3–13.3)"
    assert common.fmt_stat({**_stat(0.5), "n": 1}) == "500"


# ---------------------------------------------------------------------------- results and targets

PLAN = {"quick": False, "target_config": "m", "target_size": [512, 1024], "backend_target_model": "m"}


def _results(
    backbone_s=1.0,
    flops=600e9,
    peak=1000e9,
    whole_s=1.2,
    tower_s=1.0,
    speedup=5.0,
    agreement=0.999,
    http_s=1.05,
    local_s=1.0,
    rps1=1.0,
    rps8=1.5,
):
    eager_ms, fast_ms = 1.0, 1.0 / speedup
    return {
        "floor": {
            "matmul": {"runs": [], "best": {"bf16": {"flops_per_s": peak, "n": 2048}}},
            "visual": [
                {
                    "config": "m",
                    "size": [512, 1024],
                    "batch": 1,
                    "precision": "bf16",
                    "time": _stat(tower_s),
                    "flops": flops,
                }
            ],
        },
        "stages": {
            "request": {},
            "rows": [
                {
                    "config": "m",
                    "size": [512, 1024],
                    "batch": 1,
                    "precision": "bf16",
                    "times": {"backbone": _stat(backbone_s), "whole": _stat(whole_s)},
                    "backbone_flops": flops,
                }
            ],
        },
        "backends": {
            "gpu": False,
            "models": [
                {
                    "model": "m",
                    "size": [512, 1024],
                    "batches": [1],
                    "num_classes": 19,
                    "caption_length": 77,
                    "checkpoint": None,
                    "checkpoint_sha256": "ab" * 32,
                    "agreement_images": ["a.png"],
                    "agreement_pixels_per_image": 512 * 1024,
                    "cpu_features": "plain",
                    "margin": 0.0,
                    "chosen": "eager-bf16",
                    "rows": [
                        {
                            "backend": "eager-fp32",
                            "latency_b1": _stat(eager_ms),
                            "speedup_b1": 1.0,
                            "agreement": {
                                "argmax_agreement": 1.0,
                                "argmax_agreement_all": 1.0,
                                "max_abs_error": 0.0,
                            },
                        },
                        {
                            "backend": "eager-bf16",
                            "latency_b1": _stat(fast_ms),
                            "speedup_b1": speedup,
                            "agreement": {
                                "argmax_agreement": agreement,
                                "argmax_agreement_all": agreement,
                                "max_abs_error": 0.1,
                            },
                        },
                    ],
                }
            ],
        },
        "http": {
            "backend": "eager-bf16",
            "image": "scene.png",
            "image_bytes": 2_000_000,
            "threads": 2,
            "settings": {"concurrencies": [1, 8], "requests": 8, "rounds": 1},
            "unbatched": {"throughput": {}},
            "inprocess": {
                "latency": _stat(local_s),
                "model": "m",
                "working_size": [512, 1024],
                "random_weights": True,
                "checkpoint": None,
            },
            "batched": {
                "latency": _stat(http_s),
                "throughput": {
                    "1": {
                        "requests_per_s": _stat(rps1),
                        "mean_batch": 1.0,
                        "max_batch_seen": 1,
                        "latency_median_s": _stat(1),
                    },
                    "8": {
                        "requests_per_s": _stat(rps8),
                        "mean_batch": 6.0,
                        "max_batch_seen": 8,
                        "latency_median_s": _stat(4),
                    },
                },
            },
        },
        "training": {"gpu": False, "rows": []},
    }


def _verdicts(results, plan=PLAN):
    return {row.name: row.verdict for row in report.evaluate_targets(results, plan)}


def test_all_targets_pass_on_good_numbers():
    v = _verdicts(_results())
    assert v["backbone FLOP/s"] == "PASS"  # 600 GFLOP/s of 1000 = 60 %
    assert v["graph vs plain backbone"] == "PASS"  # 1.2x
    assert v["default CPU path vs eager fp32"] == "PASS"
    assert v["HTTP overhead"] == "PASS"  # +5 %
    assert v["adaptive batching"] == "PASS"  # 1.5x
    assert v["H200: Torch-TensorRT latency"] == report.NO_GPU


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"flops": 400e9}, "backbone FLOP/s"),  # 40 %
        ({"whole_s": 1.3}, "graph vs plain backbone"),  # 1.3x
        ({"speedup": 3.9}, "default CPU path vs eager fp32"),
        ({"agreement": 0.9949}, "default CPU path vs eager fp32"),
        ({"http_s": 1.11}, "HTTP overhead"),
        ({"rps8": 1.29}, "adaptive batching"),
    ],
)
def test_each_target_fails_just_past_its_bar(kwargs, name):
    v = _verdicts(_results(**kwargs))
    assert v[name] == "FAIL", v
    assert sum(x == "FAIL" for x in v.values()) == 1, v


def test_bars_are_inclusive():
    v = _verdicts(_results(flops=500e9, whole_s=1.25, speedup=4.0, agreement=0.995, http_s=1.1, rps8=1.3))
    assert all(v[n] == "PASS" for n in v if not n.startswith("H200")), v


def test_missing_modules_are_not_measured_and_quick_is_marked():
    v = _verdicts({"errors": {}})
    assert all(x.startswith("not measured") for x in v.values()), v
    quick = _verdicts(_results(), {**PLAN, "quick": True})
    assert quick["backbone FLOP/s"].startswith("PASS (quick")


def test_render_has_every_section_and_keeps_other_sections(tmp_path):
    machine = common.machine_info()
    results = _results()
    results["stages"] = None
    results["errors"] = {"captioner": "RuntimeError: boom"}
    text = report.render(results, {**PLAN, "repeats": 5, "warmup": 1}, machine, "python -m bench.run_all")
    for heading in (
        "### Targets",
        "### Floor",
        "### Stages",
        "### Backends",
        "### HTTP",
        "### Training",
        "### Captioner",
    ):
        assert heading in text
    assert "captioner: RuntimeError: boom" in text
    out = tmp_path / "BENCHMARKS.md"
    common.write_section(out, "model_profile", "profile body")
    common.write_section(out, "suite", text)
    common.write_section(out, "suite", text)
    written = out.read_text()
    assert written.count("<!-- BEGIN suite -->") == 1 and "profile body" in written


# --------------------------------------------------------------------- agreement and backend choice


def _row(name, median, agreement, error=None, max_err=0.1):
    row = {"backend": name, "error": error, "latency_b1": _stat(median)}
    row["agreement"] = {
        "argmax_agreement": agreement,
        "argmax_agreement_all": agreement,
        "max_abs_error": max_err,
        "margin": 0.0,
    }
    return row


def test_choose_is_the_fastest_backend_that_keeps_agreement():
    rows = [
        _row("eager-fp32", 1.0, 1.0),
        _row("eager-bf16", 0.3, 0.996),
        _row("compile-bf16", 0.2, 0.99),  # faster but disagrees
        _row("onnxruntime", 0.1, 1.0, error="RuntimeError: export failed"),
        _row("compile-fp32", 0.25, 1.0, max_err=float("nan")),  # NaNs never win
    ]
    assert backends.choose(rows)["backend"] == "eager-bf16"
    rows[2]["agreement"]["argmax_agreement"] = 0.995
    assert backends.choose(rows)["backend"] == "compile-bf16"
    assert backends.choose([_row("eager-bf16", 0.1, 0.5)]) is None


def test_agreement_counts_argmax_over_pixels():
    ref = torch.zeros(1, 3, 10, 10)
    ref[:, 0] = 1.0  # class 0 everywhere, margin 1
    cand = ref.clone()
    cand[0, 2, 0, :5] = 2.0  # 5 of 100 pixels flip to class 2
    rep = compare_logits([cand], [ref], threshold=0.95)
    assert rep.argmax_agreement == pytest.approx(0.95) and rep.passed
    assert not compare_logits([cand], [ref], threshold=0.96).passed


def test_choice_file_round_trip_is_what_auto_reads(tmp_path):
    path = tmp_path / "backend_choice.json"
    path.write_text(
        json.dumps({"format": "semidavil-backend-choice", "version": 1, "note": "n", "choices": []})
    )
    features = cpu_feature_key(torch.device("cpu"))
    row = _row("onnxruntime", 0.25, 0.999)
    entry = backends.choice_entry(row, "cpu", features, "semidavil-tiny", 1.0, {"date": "d"})
    assert entry["speedup_vs_eager_fp32"] == 4.0
    backends.write_choice(entry, path)
    assert choose_default_backend("cpu", "semidavil-tiny", path) == "onnxruntime"
    assert choose_default_backend("cpu", "semidavil-vitb16", path) != "onnxruntime"  # other model: rule
    # a new measurement for the same key replaces the old entry; other keys stay
    other = backends.choice_entry(_row("eager-bf16", 0.5, 1.0), "cpu", features, "semidavil-vitb16", 1.0, {})
    backends.write_choice(other, path)
    backends.write_choice(
        backends.choice_entry(_row("eager-bf16", 0.5, 1.0), "cpu", features, "semidavil-tiny", 1.0, {}), path
    )
    data = json.loads(path.read_text())
    assert data["note"] == "n" and len(data["choices"]) == 2
    assert choose_default_backend("cpu", "semidavil-tiny", path) == "eager-bf16"
    with pytest.raises(ValueError):
        backends.merge_choice(data, {**entry, "backend": "nope"})


def test_reuse_takes_unselected_modules_from_a_matching_run_only(tmp_path):
    from bench.report import same_run_sentence
    from bench.run_all import make_plan, reused_results

    plan = make_plan(quick=True)
    machine = {"cpu_model": "X", "cpu_flags": "f", "usable_cpus": 2, "torch_threads": 2, "torch": "2.13",
               "libraries": {}, "python": "3.11", "date": "then"}  # fmt: skip
    saved = {"floor": {"a": 1}, "http": {"b": 2}, "errors": {"http": "boom"}, "durations_s": {"floor": 5.0}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"plan": plan, "machine": machine, "results": saved}))
    got = reused_results(path, plan, {**machine, "date": "now"}, selected=["http"])
    assert got["floor"] == {"a": 1} and "http" not in got and got["errors"] == {}
    assert got["durations_s"] == {"floor": 5.0} and got["reused"]["modules"] == ["floor"]
    assert got["reused"]["dates"] == {"floor": "then"}
    assert "Modules floor (then) come from earlier runs" in same_run_sentence(got)
    chained = tmp_path / "r2.json"
    chained.write_text(json.dumps({"plan": plan, "machine": {**machine, "date": "later"}, "results": got}))
    again = reused_results(chained, plan, machine, selected=["captioner"])
    assert again["reused"]["dates"] == {"floor": "then"}, "a chained reuse keeps the figures' own dates"
    assert same_run_sentence({}).startswith("All figures come from the same run")
    with pytest.raises(SystemExit, match="plan differs"):
        reused_results(path, {**plan, "repeats": 99}, machine, selected=["http"])
    with pytest.raises(SystemExit, match="cpu_model"):
        reused_results(path, plan, {**machine, "cpu_model": "Y"}, selected=["http"])
    # a module's own settings may change when that module is measured anew, not otherwise
    more_http = {**plan, "http": {**plan["http"], "repeats": 30}}
    assert reused_results(path, more_http, machine, selected=["http"])["floor"] == {"a": 1}
    with pytest.raises(SystemExit, match="plan differs"):
        reused_results(path, more_http, machine, selected=["captioner"])


def test_changes_before_and_after_compute_the_same_decoder():
    """bench/changes.py times the legacy ASPP against the current one: same outputs, or the
    before/after figure would compare different models."""
    from bench.changes import legacy
    from bench.common import interleaved
    from model.decoder import ASPP

    torch.manual_seed(0)
    aspp = ASPP(16, (1, 2)).eval()
    x = torch.randn(2, 16, 6, 10)
    with torch.no_grad():
        now = aspp(x)
        with legacy("aspp"):
            before = aspp(x)
        after = aspp(x)
    torch.testing.assert_close(before, now, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, now), "legacy('aspp') did not restore the current forward"
    calls = []
    stats = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4 and set(stats) == {"a", "b"} and stats["a"]["median"] >= 0


@pytest.mark.parametrize("earlier", [("layout",), ("chunks",), ("aspp", "layout", "chunks")])
def test_changes_legacy_decoders_compute_the_same_logits(earlier):
    """Each earlier decoder implementation bench/changes.py times (NCHW-ordered adds, no class
    chunks) gives the current decoder's logits, and the context restores the current code."""
    from bench.changes import legacy
    from model import create_model
    from model.decoder import VLGDecoder
    from tests.helpers import random_inputs

    torch.manual_seed(0)
    tiny = create_model("semidavil-tiny").eval()
    decoder = tiny.seg.decoder
    images, feats, mask, embeds = random_inputs(2, 64, 128, 7, 5, tiny.config.embed_dim)
    current = VLGDecoder.classes_per_chunk
    with torch.no_grad():
        dense, skips = tiny.seg.features(images)
        fused = tiny.seg.dlg(dense, feats, mask)
        decoder.class_chunk_bytes = 1  # one class per chunk now, so "chunks" changes the code path
        now = decoder(fused, embeds, skips)
        with legacy(*earlier):
            before = decoder(fused, embeds, skips)
            if "chunks" in earlier:
                assert decoder.classes_per_chunk(7, 4, 8, 4) == 7
        after = decoder(fused, embeds, skips)
    torch.testing.assert_close(before, now, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, now) and VLGDecoder.classes_per_chunk is current


def test_http_table_shows_the_trim_every_batch_before_row():
    results = _results()
    assert "trimmed after every batch" not in report.http_tables(results)  # not measured: no row
    results["http"]["trim_every_batch"] = {"latency": _stat(0.230), "inprocess_latency": _stat(0.200)}
    table = report.http_tables(results)
    assert "heap trimmed after every batch (SEMIDAVIL_TRIM_SLACK_MB=0): +15.0 %" in table


def test_floor_counts_the_plain_towers_attention_flops():
    """The plain open_clip tower's FLOPs include its attention projections and attention (the MHA
    inference fast path hid them from FlopCounterMode): analytic count for a small tower."""
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    from bench.floor import mha_fastpath
    from bench.flops import attention_flop_mapping, count_flops

    width, layers, patch, size = 64, 2, 16, (64, 96)
    cfg = CLIPVisionCfg(layers=layers, width=width, head_width=32, patch_size=patch, image_size=size)
    tower = _build_vision_tower(32, cfg, quick_gelu=True).eval()
    n = 1 + (size[0] // patch) * (size[1] // patch)
    per_block = 2 * n * 12 * width * width + 4 * n * n * width  # qkv+out+MLP(4x) linears, attention
    patchify = 2 * (size[0] // patch) * (size[1] // patch) * 3 * patch * patch * width
    expected = layers * per_block + patchify + 2 * width * 32  # + pooled projection
    x = torch.randn(1, 3, *size)
    with torch.inference_mode(), mha_fastpath(False):
        counted = count_flops(lambda: tower(x), attention_flop_mapping())["flops"]
    assert counted == expected
    assert torch.backends.mha.get_fastpath_enabled()  # restored
