"""`auto` chooses on the machine it runs on: probe timing, gating, the cache and its fingerprint."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

from serving import backend_probe
from serving.agreement import AgreementError
from serving.backend_probe import PROBE_FILE, probe, resolve_auto
from serving.backends.base import ShapeProfile

PROFILE = ShapeProfile(32, 64, 77, 8, 19)


class SleepyBackend:
    """A stand-in backend whose forward takes `ms` milliseconds."""

    def __init__(self, name: str, ms: float) -> None:
        self.name, self.ms = name, ms

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        time.sleep(self.ms / 1000.0)
        return torch.zeros(1)


def builder(speeds: dict[str, float], refuse: dict[str, Exception] | None = None, calls: list | None = None):
    def build(name: str) -> SleepyBackend:
        if calls is not None:
            calls.append(name)
        if refuse and name in refuse:
            raise refuse[name]
        return SleepyBackend(name, speeds[name])

    return build


def test_probe_picks_the_fastest_gated_candidate_and_reports_the_refused():
    report = SimpleNamespace(summary=lambda: "c vs eager-fp32: argmax agreement 91 %")
    build = builder({"a": 6.0, "b": 1.0, "c": 0.1}, refuse={"c": AgreementError(report)})
    choice, built = probe(["a", "b", "c"], build, (torch.zeros(1),))
    assert choice.name == "b" and choice.how == "probed"
    assert set(choice.timings_ms) == {"a", "b"} and choice.timings_ms["b"] < choice.timings_ms["a"]
    assert "91 %" in choice.refused["c"] and set(built) == {"a", "b"}


def test_probe_stops_building_when_the_budget_is_spent():
    calls: list[str] = []
    choice, _ = probe(
        ["a", "b"], builder({"a": 20.0, "b": 1.0}, calls=calls), (torch.zeros(1),), budget_s=0.01
    )
    assert calls == ["a"] and choice.name == "a" and "budget" in choice.refused["b"]


def test_probe_with_nothing_runnable_raises():
    with pytest.raises(RuntimeError, match="no backend could run"):
        probe(["a"], builder({}, refuse={"a": RuntimeError("no runtime")}), (torch.zeros(1),))


def test_resolve_auto_caches_per_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(backend_probe, "candidates", lambda device, model, full: ["a", "b"])
    calls: list[str] = []
    build = builder({"a": 3.0, "b": 0.5}, calls=calls)
    device = torch.device("cpu")

    first, backend = resolve_auto(device, "m", "sha1", PROFILE, build, lambda: (torch.zeros(1),), tmp_path)
    assert first.how == "probed" and first.name == "b" and backend.name == "b"
    assert calls == ["a", "b"]
    stored = json.loads((tmp_path / PROBE_FILE).read_text())
    (entry,) = stored["entries"].values()
    assert entry["chosen"] == "b" and entry["fingerprint"]["machine"]["cores"] >= 1

    again, prebuilt = resolve_auto(device, "m", "sha1", PROFILE, build, lambda: (torch.zeros(1),), tmp_path)
    assert again.how == "cached probe" and again.name == "b" and prebuilt is None
    assert calls == ["a", "b"], "a cached probe times nothing"
    assert again.timings_ms == first.timings_ms

    other = ShapeProfile(64, 128, 77, 8, 19)  # another working size is another probe
    third, _ = resolve_auto(device, "m", "sha1", other, build, lambda: (torch.zeros(1),), tmp_path)
    assert third.how == "probed" and calls == ["a", "b", "a", "b"]
    assert len(json.loads((tmp_path / PROBE_FILE).read_text())["entries"]) == 2


def test_a_broken_probe_file_is_ignored_and_rewritten(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(backend_probe, "candidates", lambda device, model, full: ["a"])
    (tmp_path / PROBE_FILE).write_text("{not json")
    choice, _ = resolve_auto(
        torch.device("cpu"), "m", "s", PROFILE, builder({"a": 0.1}), lambda: (torch.zeros(1),), tmp_path
    )
    assert choice.how == "probed" and "unreadable backend probe file" in caplog.text
    assert json.loads((tmp_path / PROBE_FILE).read_text())["format"] == "semidavil-backend-probe"


def test_without_a_probe_dir_the_committed_table_or_the_rule_applies():
    choice, backend = resolve_auto(
        torch.device("cpu"), "no-such-model", "s", PROFILE, builder({}), lambda: (), None
    )
    assert backend is None and choice.how in ("committed table", "fallback rule")
    assert choice.name in ("eager-fp32", "eager-bf16")


def test_predictor_reports_how_auto_chose(tmp_path, monkeypatch):
    from serving.predictor import Predictor

    monkeypatch.setattr(backend_probe, "candidates", lambda device, model, full: ["eager-fp32", "eager-bf16"])
    # no CPU streams: the fastest at batch 1 wins (the streams rules are tested below)
    options = {"probe_dir": str(tmp_path), "working_size": (64, 128), "cpu_streams": 0}
    first = Predictor.from_checkpoint(None, backend="auto", **options)
    info = first.info()["backend_choice"]
    assert info["how"] == "probed" and set(info["timings_ms"]) == {"eager-fp32", "eager-bf16"}
    assert info["name"] == first.backend.name == min(info["timings_ms"], key=info["timings_ms"].get)
    second = Predictor.from_checkpoint(None, backend="auto", **options)
    assert second.info()["backend_choice"]["how"] == "cached probe"
    assert second.backend.name == first.backend.name
    explicit = Predictor.from_checkpoint(None, backend="eager-fp32", working_size=(64, 128))
    assert explicit.info()["backend_choice"]["how"] == "explicit"


def test_probe_setting_and_where_it_caches(monkeypatch, tmp_path):
    from serving.settings import ServiceSettings

    monkeypatch.delenv("SEMIDAVIL_ARTIFACTS", raising=False)
    monkeypatch.delenv("SEMIDAVIL_CACHE_DIR", raising=False)  # a user's own cache root would win
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SEMIDAVIL_BACKEND_PROBE", raising=False)
    assert ServiceSettings.from_env().probe_dir == str(tmp_path / "semidavil" / "artifacts")
    monkeypatch.setenv("SEMIDAVIL_CACHE_DIR", str(tmp_path / "own"))
    assert ServiceSettings.from_env().probe_dir == str(tmp_path / "own" / "artifacts")
    monkeypatch.delenv("SEMIDAVIL_CACHE_DIR")
    monkeypatch.setenv("SEMIDAVIL_ARTIFACTS", str(tmp_path / "art"))
    assert ServiceSettings.from_env().probe_dir == str(tmp_path / "art")
    monkeypatch.setenv("SEMIDAVIL_BACKEND_PROBE", "off")
    assert ServiceSettings.from_env().probe_dir is None
    monkeypatch.setenv("SEMIDAVIL_BACKEND_PROBE", "maybe")
    with pytest.raises(ValueError, match="SEMIDAVIL_BACKEND_PROBE must be one of on, full, off"):
        ServiceSettings.from_env()


def test_candidates_are_cheap_unless_full_and_include_the_table_pick(monkeypatch):
    from serving.backend_probe import candidates

    cpu = torch.device("cpu")
    monkeypatch.setattr(backend_probe, "choose_default_backend", lambda device, model: "compile-bf16")
    names = candidates(cpu, "semidavil-vitb16")
    assert names[0] == "eager-fp32" and names[-1] == "compile-bf16"
    assert not any(n.startswith("compile") for n in names[:-1]) and len(set(names)) == len(names)
    monkeypatch.setattr(backend_probe, "choose_default_backend", lambda device, model: "eager-fp32")
    assert not any(n.startswith("compile") for n in candidates(cpu, "m"))
    assert any(n.startswith("compile") for n in candidates(cpu, "m", full=True))


def test_with_cpu_streams_a_backend_that_runs_in_them_wins_a_near_tie():
    """A backend CPU streams cannot run (torch.compile's, not thread-safe) must be clearly faster
    (STREAMS_MARGIN) than the fastest one they can run, on a CPU with streams."""
    from serving.backend_probe import STREAM_SUFFIX, STREAMS_MARGIN, _pick

    built = {n: SimpleNamespace(streamable=n.startswith("eager")) for n in ("eager-fp32", "compile-fp32")}
    near = {"eager-fp32": 40.0, "compile-fp32": 40.0 * (STREAMS_MARGIN + 0.05)}
    name, why = _pick(near, built, streams=True)
    assert name == "eager-fp32" and "CPU streams" in why
    assert _pick(near, built, streams=False) == ("compile-fp32", "")  # no streams: the fastest
    clear = {"eager-fp32": 40.0, "compile-fp32": 40.0 * (STREAMS_MARGIN - 0.05)}
    assert _pick(clear, built, streams=True) == ("compile-fp32", "")
    # end to end: the rule's reason reaches the choice's detail line
    speeds = {"eager-fp32": 60.0, "compile-fp32": 56.5}  # 0.94x: a near tie, apart beyond sleep jitter

    def build(name: str) -> SleepyBackend:
        backend = builder(speeds)(name)
        backend.streamable = name.startswith("eager")  # type: ignore[attr-defined]
        backend.for_streams = lambda: backend  # type: ignore[attr-defined]
        return backend

    choice, _ = probe(list(speeds), build, (torch.zeros(1),), streams=True)
    assert choice.name == "eager-fp32" and "kept over compile-fp32" in choice.detail
    assert set(choice.timings_ms) == {"eager-fp32", "compile-fp32", "eager-fp32" + STREAM_SUFFIX}


def test_among_near_ties_the_faster_one_in_a_one_thread_stream_wins():
    from serving.backend_probe import STREAM_SUFFIX, STREAM_TIE, _pick

    built = {n: SimpleNamespace(streamable=True) for n in ("eager-fp32", "onnxruntime")}
    tie = {"eager-fp32": 40.0, "onnxruntime": 40.0 / (STREAM_TIE + 0.02)}  # within the tie share
    tie.update({"eager-fp32" + STREAM_SUFFIX: 83.0, "onnxruntime" + STREAM_SUFFIX: 73.0})
    name, why = _pick(tie, built, streams=True)
    assert name == "onnxruntime" and "faster in a one-thread stream (73.0 vs 83.0 ms)" in why
    assert _pick(tie, built, streams=False) == ("eager-fp32", "")
    apart = {**tie, "onnxruntime": 40.0 / (STREAM_TIE - 0.05)}  # clearly slower on all cores
    assert _pick(apart, built, streams=True) == ("eager-fp32", "")
