"""What `backend="auto"` means on the machine it runs on: time the gated candidates once, cache it.

The committed table (serving/backend_choice.json) picks a backend per CPU *class*, but two AMX
machines disagreed on the same model (compile-bf16 4.05x eager fp32 on one, slower than
eager-bf16 on the other). So, when probing is on (the service's default for SEMIDAVIL_BACKEND=auto),
the first start times each candidate (`candidates`: eager, ONNX Runtime and the table's pick; with
SEMIDAVIL_BACKEND_PROBE=full every compiled backend too) on the served model's own batch-1 input,
within a time budget, and keeps the fastest one that passed its agreement gate (compiled backends are gated by
`serving.artifacts.obtain_backend` as always; a refused one is reported, not used). The result is
cached in `<artifacts>/backend_probe.json` under a fingerprint of the machine (CPU model and
features, usable cores, torch threads and version), the model, checkpoint and shape profile;
a later start with the same fingerprint re-uses it without timing anything. Without probing the
committed table applies, then the fallback rule. `BackendChoice.describe()` is what GET /model
reports as `backend_choice`: the backend, how it was chosen, and the timings behind it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from model.atomic import atomic_write_text
from model.hardware import fast_bf16
from serving.agreement import AgreementError
from serving.backends.base import Backend, BackendUnavailable, Inputs, ShapeProfile
from serving.backends.factory import (
    choose_default_backend,
    cpu_feature_key,
    default_backend_name,
    matching_choice,
)
from serving.compute import ComputeThread, usable_cores

logger = logging.getLogger(__name__)

PROBE_FILE = "backend_probe.json"
PROBE_FORMAT = "semidavil-backend-probe"
DEFAULT_BUDGET_S = 120.0  # no new candidate is built after this; timing is ~1 s each
TIMED_CALLS = 5
# On a CPU with CPU streams (serving/compute.py), a backend that cannot run in them (torch.compile's:
# not thread-safe) must be this much faster at batch 1 to be chosen: the streams are worth more under
# load (1.06x -> ~1.3x requests/s at concurrency 8 on 2 cores, BENCHMARKS.md "request-path") than a
# batch-1 difference near the timing noise (the same two backends measured 46.8 / 47.5 ms and
# 41.6 / 52.1 ms on two starts of one machine).
STREAMS_MARGIN = 0.9
# Among the stream-capable backends within this share of the best one's batch-1 time on all cores,
# the fastest in a one-thread stream wins: the same latency alone, more requests/s under load
# (ONNX Runtime 73 ms vs eager fp32 83 ms on one thread, 47 ms each on two, on the AVX2 EPYC).
STREAM_TIE = 0.95
STREAM_SUFFIX = " (one-thread stream)"  # timings_ms key of a candidate's stream timing
# Part of the cache key: a cached choice made by an earlier rule is not re-used.
PROBE_RULE = 4  # 2: the CPU-streams margin; 3: ONNX Runtime without spinning; 4: stream timings

BuildFn = Callable[[str], Backend]


@dataclass
class BackendChoice:
    """The backend `auto` resolved to, and why (GET /model `backend_choice`)."""

    name: str
    how: str  # "explicit", "probed", "cached probe", "committed table", "fallback rule"
    detail: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "how": self.how,
            "detail": self.detail,
            "timings_ms": dict(self.timings_ms),
            "refused": dict(self.refused),
        }


def candidates(device: torch.device, model_name: str, full: bool = False) -> list[str]:
    """Backends worth timing here: eager in both precisions where bf16 is fast, ONNX Runtime on CPU
    (built in seconds), and the committed table's pick for this CPU class and model (e.g.
    compile-bf16 for ViT-B/16 on AMX: the case where two machines disagreed). `full` adds every
    torch.compile / TensorRT backend, each a build of minutes on 2 cores."""
    import importlib.util

    names = ["eager-fp32"]
    if fast_bf16(device):
        names.append("eager-bf16")
    if device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        names.append("onnxruntime")
    table = choose_default_backend(device, model_name)
    extra = [table]
    if full:
        extra += ["compile-bf16" if fast_bf16(device) else "compile-fp32"]
        if device.type == "cuda" and importlib.util.find_spec("torch_tensorrt") is not None:
            extra.append("tensorrt-bf16")
    return names + [n for n in dict.fromkeys(extra) if n not in names]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: torch.device, model_name: str, checkpoint_sha256: str, profile: ShapeProfile) -> dict:
    """What must match for a cached probe to apply (a different machine, model or shape re-probes)."""
    machine: dict[str, Any] = {"device": device.type, "torch": torch.__version__}
    if device.type == "cpu":
        machine.update(
            cpu=_cpu_model(),
            features=cpu_feature_key(device),
            cores=usable_cores(),
            threads=torch.get_num_threads(),
        )
    else:
        machine["gpu"] = torch.cuda.get_device_name(device)
    return {
        "machine": machine,
        "model": model_name,
        "checkpoint_sha256": checkpoint_sha256,
        "profile": profile.to_dict(),
    }


def fingerprint_key(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _read_probes(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable backend probe file %s: %s", path, err)
        return {}
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
        logger.warning("ignoring %s: not a %s file", path, PROBE_FORMAT)
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


def cached_probe(path: Path, key: str) -> BackendChoice | None:
    entry = _read_probes(path).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("chosen"), str):
        return None
    return BackendChoice(
        entry["chosen"],
        "cached probe",
        f"timed on this machine on {entry.get('date', '?')}, cached in {path}",
        {k: float(v) for k, v in (entry.get("timings_ms") or {}).items()},
        {k: str(v) for k, v in (entry.get("refused") or {}).items()},
    )


def save_probe(path: Path, key: str, fp: dict, choice: BackendChoice) -> None:
    entries = _read_probes(path)
    entries[key] = {
        "chosen": choice.name,
        "timings_ms": choice.timings_ms,
        "refused": choice.refused,
        "fingerprint": fp,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    payload = {"format": PROBE_FORMAT, "version": 1, "entries": entries}
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@torch.inference_mode()
def time_backend(backend: Backend, inputs: Inputs, calls: int = TIMED_CALLS) -> float:
    """Median ms of `calls` forwards after two warm-ups."""
    for _ in range(2):
        backend(*inputs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        backend(*inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def probe(
    names: Sequence[str],
    build: BuildFn,
    inputs: Inputs,
    budget_s: float = DEFAULT_BUDGET_S,
    streams: bool = False,
) -> tuple[BackendChoice, dict[str, Backend]]:
    """Build and time each candidate in order until the budget is spent; the fastest wins. With
    `streams` (a CPU that gets CPU streams) each stream-capable candidate is also timed in a
    one-thread stream, and `_pick` weighs both (STREAMS_MARGIN, STREAM_TIE).

    `build(name)` returns the gated backend or raises (AgreementError, a missing runtime, ...): that
    candidate is recorded as refused. The first candidate always runs (it is the reference).
    Returns the choice and the built backends (so the winner is not built twice).
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    refused: dict[str, str] = {}
    built: dict[str, Backend] = {}
    for name in names:
        if built and time.perf_counter() - start > budget_s:
            refused[name] = f"not tried: the {budget_s:.0f} s probing budget was spent"
            continue
        try:
            backend = build(name)
            timings[name] = round(time_backend(backend, inputs), 3)
            built[name] = backend
            if streams and backend.streamable:
                timings[name + STREAM_SUFFIX] = round(time_in_stream(backend, inputs), 3)
        except (AgreementError, BackendUnavailable, RuntimeError, ImportError, OSError, ValueError) as err:
            refused[name] = f"{type(err).__name__}: {str(err)[:300]}"
            logger.info("backend probe: %s refused: %s", name, err)
    if not timings:
        raise RuntimeError(f"no backend could run: {refused}")
    best, why = _pick(timings, built, streams)
    detail = ", ".join(f"{n} {ms:.1f} ms" for n, ms in sorted(timings.items(), key=lambda kv: kv[1]))
    choice = BackendChoice(
        best, "probed", f"batch-1 forward on this machine: {detail}{why}", timings, refused
    )
    return choice, built


def _pick(timings: dict[str, float], built: dict[str, Backend], streams: bool) -> tuple[str, str]:
    """The chosen name and, when the streams rules decided, why (for the detail line).

    `timings`: batch-1 ms on all cores per name, and per stream-capable name under
    name + STREAM_SUFFIX its ms in a one-thread stream.
    """
    wide = {n: ms for n, ms in timings.items() if n in built}
    fastest = min(wide, key=wide.__getitem__)
    if not streams:
        return fastest, ""
    streamable = [n for n in wide if built[n].streamable]
    if not streamable:
        return fastest, ""
    best = min(streamable, key=wide.__getitem__)
    if fastest not in streamable and wide[fastest] < STREAMS_MARGIN * wide[best]:
        return fastest, ""
    stream = {n: timings[n + STREAM_SUFFIX] for n in streamable if n + STREAM_SUFFIX in timings}
    near = [n for n in stream if wide[n] * STREAM_TIE <= wide[best]]
    pick = min(near, key=stream.__getitem__) if near else best
    why = []
    if fastest not in streamable:
        why.append(
            f"{pick} kept over {fastest} (not {1 - STREAMS_MARGIN:.0%} faster): it runs in one-thread"
            " CPU streams under load"
        )
    if pick != best:
        why.append(
            f"{pick} within {1 - STREAM_TIE:.0%} of {best} on all cores and faster in a one-thread"
            f" stream ({stream[pick]:.1f} vs {stream[best]:.1f} ms)"
        )
    return pick, "".join(f"; {w}" for w in why)


def time_in_stream(backend: Backend, inputs: Inputs) -> float:
    """Median ms of what a one-thread CPU stream runs (`backend.for_streams()`), on a thread with one
    torch thread, as a stream would."""
    variant = backend.for_streams()
    assert variant is not None  # called for stream-capable backends only
    lane = ComputeThread("probe-stream", threads=1)
    try:
        return lane.run(time_backend, variant, inputs)
    finally:
        lane.shutdown()


def table_choice(device: torch.device, model_name: str) -> BackendChoice:
    """The committed table's entry for this device class and model, else the fallback rule."""
    entry = matching_choice(device, model_name)
    if entry is None:
        return BackendChoice(
            default_backend_name(device),
            "fallback rule",
            "no probe; serving/backends/factory.py default_backend_name",
        )
    key = cpu_feature_key(device)
    return BackendChoice(
        str(entry["backend"]),
        "committed table",
        f"serving/backend_choice.json entry for {device.type} {key} {model_name}",
    )


def resolve_auto(
    device: torch.device,
    model_name: str,
    checkpoint_sha256: str,
    profile: ShapeProfile,
    build: BuildFn,
    inputs_fn: Callable[[], Inputs],
    probe_dir: str | os.PathLike[str] | None,
    budget_s: float = DEFAULT_BUDGET_S,
    full: bool = False,
    streams: bool = False,
) -> tuple[BackendChoice, Backend | None]:
    """The backend for "auto": a cached probe, a new probe (cached), or without `probe_dir` the
    committed table. Returns the choice and, when it probed, the winner already built. `streams`:
    the predictor will have CPU streams (the probe then prefers a backend that runs in them)."""
    if probe_dir is None:
        return table_choice(device, model_name), None
    path = Path(probe_dir) / PROBE_FILE
    fp = {**fingerprint(device, model_name, checkpoint_sha256, profile), "full": full}
    fp.update(rule=PROBE_RULE, streams=streams)
    key = fingerprint_key(fp)
    cached = cached_probe(path, key)
    if cached is not None:
        return cached, None
    logger.info("probing backends for %s on this machine (once; cached in %s) ...", model_name, path)
    choice, built = probe(candidates(device, model_name, full), build, inputs_fn(), budget_s, streams)
    try:
        save_probe(path, key, fp, choice)
    except OSError as err:  # a read-only folder must not stop the service
        logger.warning("could not cache the backend probe in %s: %s", path, err)
    logger.info("backend probe: %s (%s)", choice.name, choice.detail)
    return choice, built[choice.name]
