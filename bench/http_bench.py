"""HTTP: `/segment` of the real BentoML server against the in-process predictor, and throughput.

- In-process: `Predictor.predict(png_bytes, caption)` plus the same response the service builds
  (`serving.http.prediction_response(..., output)`), in this process.
- HTTP: POST /segment (multipart image + caption; output label_png by default, or json) to `bentoml serve` on 127.0.0.1
  (testkit/launcher.py), same image, same caption, same backend, same thread count. Sequential
  in-process and HTTP calls alternate (one each per round), so both see the same machine state.
  Overhead = HTTP median / in-process median - 1 (target: <= 10 % for a 2048x1024 PNG).
- The same comparison against a server that trims the heap after every batch
  (SEMIDAVIL_TRIM_SLACK_MB=0, the policy before serving/memory.MemoryTrimmer): the before/after
  of that change.
- Throughput at concurrency 1, 4, 8 (a thread per client, each with its own connection), with
  adaptive batching (SEMIDAVIL_MAX_BATCH=8: BentoML's CORK dispatcher batches the forward) and
  without it (SEMIDAVIL_MAX_BATCH=1, every request its own forward). The mean batch size the server
  reports in its responses is recorded. Client and server share this machine's cores.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch

import model  # noqa: F401  (offline env defaults and the torchvision shim before open_clip)
from bench.common import fixture_images, interleaved, summarize, time_calls
from testkit.launcher import running_server

CAPTION = "a city street with cars parked along the road and tall buildings on both sides"
REQUEST_TIMEOUT_S = 300.0


def _log(msg: str) -> None:
    print(f"[http] {msg}", file=sys.stderr, flush=True)


def default_http_backend() -> str:
    """The eager backend the fallback rule picks for this CPU (compiled backends would compile
    per batch bucket inside the timed region)."""
    from serving.backends.factory import default_backend_name

    name = default_backend_name("cpu")
    return name if name.startswith("eager") else "eager-bf16"


def image_bytes(fixtures: str | Path | None = None) -> tuple[bytes, str]:
    """A real 2048x1024 Cityscapes PNG (read in place), else a synthetic one."""
    paths = [p for p in fixture_images(fixtures) if "leftImg8bit" in p.name]
    if paths:
        return paths[0].read_bytes(), str(paths[0])
    import io

    import numpy as np
    from PIL import Image

    rgb = (np.random.default_rng(0).integers(0, 256, (1024, 2048, 3))).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue(), "synthetic noise 2048x1024 PNG (fixtures not found)"


def inprocess(
    backend: str, max_batch: int = 8, output: str = "json", predictor: Any = None
) -> tuple[Callable[[bytes], None], dict[str, Any]]:
    """The in-process path (predict + the response the service builds for `output`) and what it runs.

    `predictor`: reuse this one (a second predictor in the same process would add a second OpenMP
    team, which slows both: serving/compute.py); else the embedded default with `backend`.
    """
    from serving.http import prediction_response
    from serving.predictor import Predictor

    if predictor is None:
        predictor = Predictor.from_checkpoint(None, backend=backend, captioner="none", max_batch=max_batch)

    def call(data: bytes) -> None:
        pred = predictor.predict(data, caption=CAPTION)
        assert prediction_response(pred, output, 0.5).body

    info = predictor.info()
    return call, {
        "model": info["model"],
        "checkpoint": info["checkpoint"],
        "random_weights": info["random_weights"],
        "backend": info["backend"]["name"],
        "working_size": info["working_size"],
    }


def post_segment(client: httpx.Client, url: str, data: bytes, output: str = "json") -> dict[str, Any]:
    """POST /segment -> {"batch_size", "lane", "total_ms"}: from the JSON body, or for a PNG output
    from its X-Batch-Size, X-Lane and X-Total-Ms headers."""
    response = client.post(
        url + "/segment",
        files={"image": ("scene.png", data, "image/png")},
        data={"caption": CAPTION, "output": output},
        timeout=REQUEST_TIMEOUT_S,
    )
    if response.status_code != 200:
        raise RuntimeError(f"/segment answered {response.status_code}: {response.text[:300]}")
    if output == "json":
        body = response.json()
        return {
            "batch_size": int(body["batch_size"]),
            "lane": int(body["lane"]),
            "total_ms": float(body["timings_ms"]["total"]),
        }
    return {
        "batch_size": int(response.headers["x-batch-size"]),
        "lane": int(response.headers["x-lane"]),
        "total_ms": float(response.headers["x-total-ms"]),
    }


def throughput(
    url: str, data: bytes, concurrency: int, requests: int, output: str = "json"
) -> dict[str, Any]:
    """`requests` requests from `concurrency` client threads; requests/s and per-request latency."""
    local = threading.local()
    latencies: list[float] = []
    batch_sizes: list[int] = []
    lanes: set[int] = set()
    lock = threading.Lock()

    def one(_: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client()
        start = time.perf_counter()
        body = post_segment(client, url, data, output)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)
            batch_sizes.append(body["batch_size"])
            lanes.add(body["lane"])

    with ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    return {
        "requests_per_s": requests / wall,
        "wall_s": wall,
        "latency": summarize(latencies),
        "mean_batch": sum(batch_sizes) / len(batch_sizes),
        "max_batch_seen": max(batch_sizes),
        "lanes": sorted(lanes),
    }


def server_run(
    data: bytes,
    backend: str,
    max_batch: int,
    concurrencies: Sequence[int],
    requests: int,
    rounds: int,
    sequential: tuple[int, int] | None,
    workdir: Path,
    local_call: Callable[[bytes], None] | None = None,
    trim_slack_mb: int | None = None,
    output: str = "json",
) -> dict[str, Any]:
    env = server_env(backend, max_batch)
    if trim_slack_mb is not None:
        env["SEMIDAVIL_TRIM_SLACK_MB"] = str(trim_slack_mb)
    out: dict[str, Any] = {"max_batch": max_batch, "env": env}
    with running_server(workdir, env) as server:
        out["server_pid"] = server.process.pid
        with httpx.Client() as client:
            info = client.post(server.url + "/info", json={}, timeout=30).json()
            out["backend"] = info["backend"]["name"]
            out["model"] = info["model"]
            if sequential is not None:
                repeats, warmup = sequential
                server_ms: list[float] = []

                def call() -> None:
                    server_ms.append(post_segment(client, server.url, data, output)["total_ms"])

                if local_call is None:
                    out["latency"] = summarize(time_calls(call, repeats, max(warmup, 1)))
                else:  # alternate in-process and HTTP calls: both see the same machine state
                    fns = {"inprocess": lambda: local_call(data), "http": call}
                    stats = interleaved(fns, repeats, max(warmup, 1))
                    out["latency"], out["inprocess_latency"] = stats["http"], stats["inprocess"]
                # the predictor's own total inside the server (timed requests only): client latency
                # minus this is the HTTP + framework + batching-queue share
                out["server_total"] = summarize([ms / 1000.0 for ms in server_ms[-repeats:]])
        levels = throughput_levels({"server": server.url}, data, concurrencies, requests, rounds, output)
        out["throughput"] = levels["server"]
    return out


def server_env(backend: str, max_batch: int) -> dict[str, str]:
    """The benchmark server's settings: no captioner, this process's torch thread count."""
    return {
        "SEMIDAVIL_BACKEND": backend,
        "SEMIDAVIL_CAPTIONER": "none",
        "SEMIDAVIL_MAX_BATCH": str(max_batch),
        "SEMIDAVIL_MAX_CONCURRENCY": "64",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
        "MKL_NUM_THREADS": str(torch.get_num_threads()),
    }


def throughput_levels(
    urls: Mapping[str, str],
    data: bytes,
    concurrencies: Sequence[int],
    requests: int,
    rounds: int,
    output: str,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{name: {concurrency: ...}} for each server in `urls`: per concurrency a warm-up burst each,
    then `rounds` rounds of `throughput`, the servers taking turns within a round (so a drifting
    machine moves them alike); median req/s, mean batch, the lanes the server used."""
    out: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in urls}
    for c in concurrencies:
        _log(f"concurrency {c}: {', '.join(urls)} ...")
        for url in urls.values():
            throughput(url, data, c, c, output)  # warm-up burst
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
        for _ in range(rounds):
            for name, url in urls.items():
                runs[name].append(throughput(url, data, c, max(requests, c), output))
        for name, done in runs.items():
            out[name][str(c)] = {
                "requests_per_s": summarize([r["requests_per_s"] for r in done]),
                "latency_median_s": summarize([r["latency"]["median"] for r in done]),
                "mean_batch": sum(r["mean_batch"] for r in done) / len(done),
                "max_batch_seen": max(r["max_batch_seen"] for r in done),
                "lanes": sorted({lane for r in done for lane in r["lanes"]}),
                "requests": max(requests, c),
                "rounds": rounds,
            }
    return out


def run(
    repeats: int,
    warmup: int,
    concurrencies: Sequence[int] = (1, 4, 8),
    requests: int = 16,
    rounds: int = 3,
    backend: str | None = None,
    fixtures: str | Path | None = None,
    output: str = "label_png",
) -> dict[str, Any]:
    """Every measurement for `output` (label_png: the request the issue's 120 ms target is for)."""
    backend = backend or default_http_backend()
    data, source = image_bytes(fixtures)
    _log(f"in-process predictor ({backend}, output {output}) ...")
    local_call, local = inprocess(backend, output=output)
    with tempfile.TemporaryDirectory(prefix="semidavil-http-bench-") as tmp:
        _log(
            "server with adaptive batching (max batch 8), sequential requests alternating with in-process ..."
        )
        batched = server_run(
            data,
            backend,
            8,
            concurrencies,
            requests,
            rounds,
            (repeats, warmup),
            Path(tmp) / "batched",
            local_call,
            output=output,
        )
        local["latency"] = batched.pop("inprocess_latency")
        _log("server without batching (max batch 1) ...")
        single = server_run(
            data, backend, 1, concurrencies, requests, rounds, None, Path(tmp) / "single", output=output
        )
        _log(
            "server trimming the heap after every batch (the earlier policy), alternating with in-process ..."
        )
        trim_every = server_run(
            data,
            backend,
            8,
            (),
            requests,
            rounds,
            (repeats, warmup),
            Path(tmp) / "trim0",
            local_call,
            0,
            output,
        )
    return {
        "image": source,
        "image_bytes": len(data),
        "backend": backend,
        "output": output,
        "inprocess": local,
        "batched": batched,
        "unbatched": single,
        "trim_every_batch": trim_every,
        "threads": torch.get_num_threads(),
        "settings": {"concurrencies": list(concurrencies), "requests": requests, "rounds": rounds},
    }
