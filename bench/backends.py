"""Every serving backend on the same inputs: latency, build time and argmax agreement with eager fp32.

Inputs: the shared real Cityscapes frames (read in place from ../shared/fixtures, resized to the
working size), real class embeddings from the model's text tower, captions from
serving.gate_inputs.AGREEMENT_CAPTIONS (one empty); the same tensors go to every backend. The reference
is eager fp32 on those inputs. Agreement = per-pixel argmax agreement over all fixture images
(`serving.agreement.compare_logits`): over pixels whose fp32 top-2 margin exceeds the gate's margin
(0 for trained weights, 0.01 for random weights, where logits are near-ties) and over all pixels.

The default-backend rule (issue 4): the fastest backend (median batch-1 latency) whose gated
agreement is >= 99.5 %. `choose()` picks it and `write_choice()` records it in
serving/backend_choice.json, which `serving.backends.factory.choose_default_backend` reads for
backend="auto" (matched on device, CPU features and model name).
"""

from __future__ import annotations

import datetime as _dt
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import model  # noqa: F401  (offline env defaults and the torchvision shim before open_clip)
from bench.common import fixture_images, summarize, time_calls
from model.atomic import atomic_write_text
from serving.agreement import DEFAULT_THRESHOLD, compare_logits, default_margin
from serving.backends.base import BackendUnavailable, ShapeProfile
from serving.backends.factory import BACKEND_NAMES, CHOICE_FILE, cpu_feature_key, create_backend
from serving.gate_inputs import agreement_inputs
from serving.loading import ServingModel, default_class_set, load_serving_model, random_model

CPU_BACKENDS = ("eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16", "onnxruntime")
GPU_BACKENDS = ("eager-fp32", "eager-bf16", "compile-bf16", "onnxruntime", "tensorrt-fp16", "tensorrt-bf16")
REFERENCE = "eager-fp32"
CHOICE_FORMAT = "semidavil-backend-choice"


def _log(msg: str) -> None:
    print(f"[backends] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- pure parts


def choose(rows: Sequence[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any] | None:
    """The fastest row (median batch-1 seconds) that ran and whose gated agreement is >= threshold."""
    ok = [
        r
        for r in rows
        if r.get("error") is None
        and r.get("agreement") is not None
        and r["agreement"]["argmax_agreement"] >= threshold
        and np.isfinite(r["agreement"]["max_abs_error"])
        and r.get("latency_b1") is not None
    ]
    return min(ok, key=lambda r: r["latency_b1"]["median"]) if ok else None


def choice_entry(
    row: dict[str, Any],
    device: str,
    cpu_features: str | None,
    model_name: str,
    reference_s: float,
    meta: dict,
) -> dict[str, Any]:
    """One `choices` entry of serving/backend_choice.json for the chosen row."""
    return {
        "device": device,
        "cpu_features": cpu_features,
        "model": model_name,
        "backend": row["backend"],
        "argmax_agreement": round(row["agreement"]["argmax_agreement"], 6),
        "argmax_agreement_all_pixels": round(row["agreement"]["argmax_agreement_all"], 6),
        "margin": row["agreement"]["margin"],
        "speedup_vs_eager_fp32": round(reference_s / row["latency_b1"]["median"], 3),
        "measured": meta,
    }


def merge_choice(data: dict[str, Any] | None, entry: dict[str, Any]) -> dict[str, Any]:
    """The choice file with `entry` replacing any entry for the same (device, cpu_features, model)."""
    if entry.get("backend") not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {entry.get('backend')!r}")
    data = dict(data) if isinstance(data, dict) else {}
    data.setdefault("format", CHOICE_FORMAT)
    data.setdefault("version", 1)
    key = (entry["device"], entry.get("cpu_features"), entry.get("model"))
    kept = [
        c
        for c in data.get("choices", [])
        if isinstance(c, dict) and (c.get("device"), c.get("cpu_features"), c.get("model")) != key
    ]
    data["choices"] = [*kept, entry]
    return data


def write_choice(entry: dict[str, Any], path: str | os.PathLike[str] = CHOICE_FILE) -> Path:
    """Merge `entry` into the choice file (atomically); returns its path."""
    path = Path(path)
    try:
        current = json.loads(path.read_text())
    except FileNotFoundError:
        current = None
    merged = merge_choice(current, entry)
    atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------ running


def _fixture_arrays(paths: Sequence[Path], size: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    from serving.decode import Limits, decode_image

    limits = Limits(max_body_bytes=1 << 28, max_pixels=1 << 26)
    out = []
    for p in paths:
        rgb = decode_image(p.read_bytes(), limits).rgb
        out.append(cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR))
    return out


def load_model_spec(spec: str) -> ServingModel:
    """'checkpoint': what the service loads (default checkpoint, else random tiny); else a config
    name with random weights (seed 0)."""
    if spec == "checkpoint":
        return load_serving_model(None)
    served = load_serving_model(None, default_checkpoint=Path("/nonexistent"))
    net = random_model(spec)
    from model.checkpoint import model_tensors, tensors_digest

    return ServingModel(
        net, served.header, None, tensors_digest(model_tensors(net)), True, served.class_names
    )


def _gate_and_timing_inputs(
    net: Any, profile: ShapeProfile, class_set: Any, images: list[np.ndarray] | None, batches: Sequence[int]
) -> tuple[list[Any], dict[int, Any]]:
    """The agreement inputs (every fixture frame, batches 1 and max) and one timing input per batch."""
    max_batch = profile.max_batch
    agree_batches = sorted({1, max_batch, *([len(images)] if images else [])} & set(range(1, max_batch + 1)))
    agree = agreement_inputs(net, profile, class_set, images, batches=agree_batches)
    n_agree_images = sum(x[0].shape[0] for x in agree)
    for start in range(n_agree_images, len(images or ()), max_batch):  # cover every fixture frame
        chunk = images[start : start + max_batch]  # type: ignore[index]
        agree += agreement_inputs(net, profile, class_set, chunk, batches=(len(chunk),))
    timing = {b: agreement_inputs(net, profile, class_set, images, batches=(b,))[0] for b in batches}
    return agree, timing


def _backend_row(
    name: str,
    build: Callable[[], Any],
    call: Callable[[Any, int], None],
    batches: Sequence[int],
    repeats: int,
    warmup: int,
    agree: list[Any],
    ref_logits: list[torch.Tensor],
    margin: float,
) -> dict[str, Any]:
    """One backend: build time, latency per batch, agreement with the reference; errors are results."""
    row: dict[str, Any] = {"backend": name, "error": None}
    try:
        start = time.perf_counter()
        backend = build()
        call(backend, batches[0])  # torch.compile compiles here
        row["build_s"] = time.perf_counter() - start
        for b in batches:
            times = time_calls(lambda b=b, backend=backend: call(backend, b), repeats, warmup)
            row[f"latency_b{b}"] = summarize(times)
            row[f"per_image_b{b}"] = summarize([t / b for t in times])
        cand = [backend(*x) for x in agree]
        report = compare_logits(cand, ref_logits, DEFAULT_THRESHOLD, margin, (name, REFERENCE))
        row["agreement"] = report.to_dict()
        row["precision"] = backend.precision
        row["describe"] = {k: v for k, v in backend.describe().items() if k in ("kind", "exporter", "mode")}
        del backend, cand
    except BackendUnavailable as err:
        row["error"] = f"unavailable: {err}"
    except Exception as err:  # a backend that fails to build or run is a result, not a crash
        row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    gc.collect()
    return row


def _add_speedups(rows: list[dict[str, Any]], max_batch: int) -> float | None:
    """speedup_b1 and speedup_b<max> over the eager fp32 row, in place; returns its batch-1 seconds."""
    ref_row = next((r for r in rows if r["backend"] == REFERENCE and r.get("latency_b1")), None)
    if ref_row is None:
        return None
    ref_s = ref_row["latency_b1"]["median"]
    ref_b = ref_row.get(f"per_image_b{max_batch}")
    for r in rows:
        if r.get("latency_b1"):
            r["speedup_b1"] = ref_s / r["latency_b1"]["median"]
            if ref_b and r.get(f"per_image_b{max_batch}"):
                r[f"speedup_b{max_batch}"] = ref_b["median"] / r[f"per_image_b{max_batch}"]["median"]
    return ref_s


def bench_model(
    spec: str,
    size: tuple[int, int] | None,
    backends: Sequence[str],
    batches: Sequence[int],
    repeats: int,
    warmup: int,
    fixtures: str | Path | None = None,
    caption_length: int = 77,
    device: str = "cpu",
) -> dict[str, Any]:
    """All `backends` for one model at one working size; rows carry latency per batch and agreement."""
    from serving.loading import working_size_for

    served = load_model_spec(spec)
    net = served.model.eval()
    size = tuple(size) if size else working_size_for(served)
    class_set = default_class_set(served.class_names)
    max_batch = max(batches)
    profile = ShapeProfile(size[0], size[1], caption_length, max_batch, len(class_set))
    paths = fixture_images(fixtures)
    images = _fixture_arrays(paths, size) if paths else None
    agree, timing = _gate_and_timing_inputs(net, profile, class_set, images, batches)
    margin = default_margin(served.random_weights)
    torch_device = torch.device(device)
    reference = create_backend(REFERENCE, net.seg, profile, torch_device)
    ref_logits = [reference(*x) for x in agree]
    # CUDA runs asynchronously: a call is timed up to the end of its kernels, not of their launch.
    sync = torch.cuda.synchronize if torch_device.type == "cuda" else (lambda: None)

    def call(backend: Any, b: int) -> None:
        backend(*timing[b])
        sync()

    rows = []
    for name in backends:
        _log(f"{served.name} {size[0]}x{size[1]}: {name} ...")
        build = functools.partial(create_backend, name, net.seg, profile, torch_device)
        rows.append(_backend_row(name, build, call, batches, repeats, warmup, agree, ref_logits, margin))
    ref_s = _add_speedups(rows, max_batch)
    chosen = choose(rows)
    return {
        "model": served.name,
        "spec": spec,
        "checkpoint": str(served.checkpoint_path) if served.checkpoint_path else None,
        "checkpoint_sha256": served.checkpoint_sha256,
        "random_weights": served.random_weights,
        "size": list(size),
        "batches": list(batches),
        "caption_length": caption_length,
        "num_classes": len(class_set),
        "margin": margin,
        "agreement_images": [str(p) for p in paths] or ["synthetic smooth images (fixtures not found)"],
        "agreement_pixels_per_image": size[0] * size[1],
        "rows": rows,
        "chosen": chosen["backend"] if chosen else None,
        "reference_b1_s": ref_s,
        "device": device,
        "cpu_features": cpu_feature_key(torch_device),
    }


def run(
    models: Sequence[tuple[str, tuple[int, int] | None]],
    backends: Sequence[str] | None,
    batches: Sequence[int],
    repeats: int,
    warmup: int,
    fixtures: str | Path | None = None,
    write: bool = False,
    choice_file: str | os.PathLike[str] = CHOICE_FILE,
    device: str = "cpu",
) -> dict[str, Any]:
    """Benchmark every (model spec, size); with `write`, record each model's choice in the choice file."""
    if backends is None:
        backends = GPU_BACKENDS if device.startswith("cuda") else CPU_BACKENDS
    results = []
    for spec, size in models:
        res = bench_model(spec, size, backends, batches, repeats, warmup, fixtures, device=device)
        results.append(res)
        chosen = next((r for r in res["rows"] if r["backend"] == res["chosen"]), None)
        if write and chosen is not None and res["reference_b1_s"]:
            meta = {
                "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
                "size": res["size"],
                "checkpoint_sha256": res["checkpoint_sha256"][:16],
                "random_weights": res["random_weights"],
                "threads": torch.get_num_threads(),
                "by": "bench/backends.py",
            }
            entry = choice_entry(
                chosen,
                res["device"].split(":")[0],
                res["cpu_features"],
                res["model"],
                res["reference_b1_s"],
                meta,
            )
            res["choice_written"] = str(write_choice(entry, choice_file))
    gpu = any(str(m["device"]).startswith("cuda") for m in results)  # GPU work was run, not merely present
    return {"models": results, "gpu": gpu, "threads": torch.get_num_threads()}
