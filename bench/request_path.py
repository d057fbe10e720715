"""The request path outside the forward, stage by stage, before and after, side by side in one run.

    python -m bench.request_path [--repeats 15] [--checkpoint PATH]

For a real 2048x1024 Cityscapes PNG and the same photo at 1024x512 (resized, re-encoded as PNG),
each stage's previous and current implementation are timed in alternating rounds on the same
inputs (a busier or slower machine moves both columns alike):
  decode        PIL (serving.decode.decode_pil) vs the OpenCV path (serving.png_fast)
  postprocess   full-size upsample of every class + argmax + softmax
                (serving.postprocess.reference_labels_and_confidence) vs the cell method
                (labels_and_confidence), on the served model's logits for that photo
  stats         per-class area and mean confidence (serving.postprocess.class_stats)
  label PNG     serving.encode.label_png of the label map
  JSON          prediction_json + json.dumps (what /segment returns for output=json)
  predict       Predictor.predict end to end in process, with the before-implementations patched in
It checks the after-labels equal the before-labels and prints the largest difference of a class's
mean confidence. Then over HTTP (bench/http_bench.py, `bentoml serve` on 127.0.0.1, same backend):
POST /segment with output=label_png alternating with the same request in process (p50, and the
ratio: target <= 1.10x, p50 <= 120 ms), and throughput at concurrency 1 and 8 (target: 8 >= 1.5x
concurrency 1), for the current server and the one before this round's HTTP changes, both up at
once. Writes the `request-path` section of BENCHMARKS.md with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Col,
    format_machine,
    interleaved,
    machine_info,
    markdown_table,
    summarize,
    table,
    time_calls,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]

FRAME = (
    ROOT.parent
    / "shared/fixtures/real/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000576_leftImg8bit.png"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the embedded default)")
    p.add_argument(
        "--backend",
        default=None,
        help="serving backend (default: what the service's `auto` picks on this machine: its probe, cached)",
    )
    p.add_argument("--repeats", type=int, default=15, help="alternating timed rounds per stage")
    p.add_argument("--frame", type=Path, default=FRAME, help="a 2048x1024 PNG photo")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="Markdown file (a section)")
    p.add_argument("--no-http", action="store_true", help="skip the HTTP part")
    p.add_argument("--requests", type=int, default=32, help="requests per throughput round")
    p.add_argument("--rounds", type=int, default=5, help="throughput rounds per concurrency")
    p.add_argument("--json", type=Path, default=None, help="also save the measurements as JSON here")
    return p.parse_args(argv)


# The server before this round's request-path changes: every batch on all cores (no CPU streams),
# and uvicorn on h11 + asyncio (its choice when httptools and uvloop are not installed: modules
# that refuse to import stand in for their absence).
BEFORE_ENV = {"SEMIDAVIL_CPU_STREAMS": "0"}
_BLOCKED = ("httptools", "uvloop")


def _blocker_dir(root: Path) -> Path:
    """A folder whose httptools and uvloop modules raise ImportError (on PYTHONPATH: uvicorn falls
    back to h11 and asyncio)."""
    folder = root / "no-httptools"
    folder.mkdir(parents=True, exist_ok=True)
    for name in _BLOCKED:
        (folder / f"{name}.py").write_text(f"raise ImportError('{name} blocked by bench.request_path')\n")
    return folder


def measure_http(args: argparse.Namespace, data: bytes, predictor: Any) -> dict[str, Any]:
    """The current server (CPU streams auto, httptools + uvloop) and the one before (no streams,
    h11 + asyncio), both up at once: sequential POST /segment (label_png) to each alternating with
    the same request in process, then throughput at concurrency 1 and 8 on each."""
    import tempfile

    import httpx

    from bench import http_bench
    from testkit.launcher import running_server

    local_call, _ = http_bench.inprocess(args.backend, output="label_png", predictor=predictor)
    env = http_bench.server_env(args.backend, 8)
    out: dict[str, Any] = {"backend": args.backend, "model": predictor.served.name}
    with (
        tempfile.TemporaryDirectory(prefix="semidavil-request-path-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        before_env = {**env, **BEFORE_ENV, "PYTHONPATH": str(_blocker_dir(Path(tmp)))}
        servers = {
            "after": stack.enter_context(running_server(Path(tmp) / "after", env)),
            "before": stack.enter_context(running_server(Path(tmp) / "before", before_env)),
        }
        client = stack.enter_context(httpx.Client())
        out["cpu_streams"] = {
            k: client.get(s.url + "/model", timeout=30).json()["cpu_streams"] for k, s in servers.items()
        }
        server_ms: dict[str, list[float]] = {k: [] for k in servers}

        def post(name: str) -> Callable[[], None]:
            def call() -> None:
                body = http_bench.post_segment(client, servers[name].url, data, "label_png")
                server_ms[name].append(body["total_ms"] / 1000.0)

            return call

        fns = {"inprocess": lambda: local_call(data), "after": post("after"), "before": post("before")}
        out["latency"] = interleaved(fns, args.repeats, 3)
        out["server_total"] = {k: summarize(v[-args.repeats :]) for k, v in server_ms.items()}
        urls = {name: server.url for name, server in servers.items()}
        out["throughput"] = http_bench.throughput_levels(
            urls, data, (1, 8), args.requests, args.rounds, "label_png"
        )
    return out


def http_part(result: dict[str, Any]) -> list[str]:
    """Markdown for the HTTP measurements and their targets."""
    lat, tp = result["latency"], result["throughput"]

    def ms(stat: dict) -> str:
        return f"{stat['median'] * 1000:.1f} ({stat['min'] * 1000:.1f}-{stat['max'] * 1000:.1f})"

    def rps(name: str, c: str) -> float:
        return tp[name][c]["requests_per_s"]["median"]

    ratio = {k: lat[k]["median"] / lat["inprocess"]["median"] for k in ("after", "before")}
    gain = {k: rps(k, "8") / rps(k, "1") for k in ("after", "before")}
    rows = [
        ["in process: predict + label PNG", ms(lat["inprocess"]), "", ""],
        *(
            [
                f"HTTP POST /segment, output=label_png ({k})",
                ms(lat[k]),
                f"{ratio[k]:.2f}x",
                ms(result["server_total"][k]),
            ]
            for k in ("before", "after")
        ),
    ]
    levels = [
        [
            c,
            f"{rps('before', c):.2f}",
            f"{tp['before'][c]['mean_batch']:.2f}",
            f"{rps('after', c):.2f}",
            f"{tp['after'][c]['mean_batch']:.2f}",
            tp["after"][c]["lanes"],
        ]
        for c in ("1", "8")
    ]
    http, tp_ratio = lat["after"]["median"], gain["after"]
    targets = [
        ["p50 over HTTP <= 120 ms", f"{http * 1000:.1f} ms", "met" if http <= 0.120 else "missed"],
        ["HTTP <= 1.10x in process", f"{ratio['after']:.3f}x", "met" if ratio["after"] <= 1.10 else "missed"],
        [
            "concurrency 8 >= 1.5x concurrency 1",
            f"{tp_ratio:.3f}x (before: {gain['before']:.3f}x)",  # 3 digits: the bars sit on 1.10 / 1.5
            "met" if tp_ratio >= 1.5 else "missed",
        ],
    ]
    streams = result["cpu_streams"]
    return [
        f"### Over HTTP (2048x1024 PNG -> label PNG, backend {result['backend']}, {result['model']})",
        "",
        f"Two servers up at once, requests alternating with the in-process call: **before** = every batch on"
        f" all cores ({streams['before']} CPU streams), uvicorn on h11 + asyncio; **after** ="
        f" {streams['after']} one-thread CPU streams under load (serving/compute.py), httptools + uvloop."
        " Both keep the upload in memory (serving/upload.py) and run ONNX Runtime without spinning:"
        " those changes are not toggled here. Throughput rounds alternate between the two servers.",
        "",
        markdown_table(
            ["path", "ms, median (min-max)", "vs in process", "X-Total-Ms inside the server"], rows
        ),
        "",
        markdown_table(
            [
                "concurrency",
                "before req/s",
                "before mean batch",
                "after req/s",
                "after mean batch",
                "after lanes",
            ],
            levels,
        ),
        "",
        markdown_table(["target", "measured", "result"], targets),
        "",
        "Client and server share the machine's cores.",
        "",
    ]


def png_at(data: bytes, size: tuple[int, int]) -> bytes:
    """The photo resized to (W, H) and re-encoded as PNG (PIL's default level, like a camera export)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        small = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    return buf.getvalue()


def pil_decode(data: bytes) -> Any:
    """The decode before the OpenCV path: PIL's header, the limits, PIL load and conversions."""
    from PIL import Image

    from serving.decode import Limits, decode_pil

    with Image.open(io.BytesIO(data)) as img:
        return decode_pil(img, Limits(), img.format)


@contextlib.contextmanager
def captured_logits(sink: list[Any]) -> Iterator[None]:
    """Record the logits the predictor hands to post-processing (bench only: wraps the import)."""
    import serving.predictor as predictor_module

    original = predictor_module.upsample

    def recording(logits: Any, size: tuple[int, int]) -> Any:
        sink.append((logits.clone(), size))
        return original(logits, size)

    predictor_module.upsample = recording
    try:
        yield
    finally:
        predictor_module.upsample = original


@contextlib.contextmanager
def before_implementations() -> Iterator[None]:
    """The predictor with the previous decode and post-processing patched in."""
    import serving.predictor as predictor_module
    from serving.postprocess import Upsampled, reference_labels_and_confidence

    def reference(logits: Any, size: tuple[int, int]) -> Upsampled:
        labels, confidence = reference_labels_and_confidence(logits, size)
        return Upsampled(labels, lambda: confidence)

    saved = predictor_module.decode_image, predictor_module.upsample
    predictor_module.decode_image = lambda data, limits=None: pil_decode(data)
    predictor_module.upsample = reference
    try:
        yield
    finally:
        predictor_module.decode_image, predictor_module.upsample = saved


def alternate(before: Callable[[], Any], after: Callable[[], Any], repeats: int) -> tuple[dict, dict]:
    """Median/min/max ms of `before` and `after`, timed in alternating rounds."""
    ms = interleaved({"before": before, "after": after}, repeats, scale=1000.0)
    return ms["before"], ms["after"]


def single(fn: Callable[[], Any], repeats: int) -> dict:
    return summarize([x * 1000 for x in time_calls(fn, repeats=repeats, warmup=1)])


def measure_size(
    predictor: Any, data: bytes, repeats: int
) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """{stage: (before ms, after ms)} for one image (before is None for an unchanged stage), and
    the agreement figures."""
    from serving.encode import label_png
    from serving.http import prediction_json
    from serving.postprocess import (
        class_stats,
        labels_and_confidence,
        reference_labels_and_confidence,
        upsample,
    )

    logits: list[Any] = []
    with captured_logits(logits):
        pred = predictor.predict(data, caption="")
    z, size = logits[0]
    # torch work only on the predictor's compute thread, as in the server (serving/compute.py)
    on_compute = predictor.compute.run
    ref_labels, ref_conf = on_compute(reference_labels_and_confidence, z, size)
    labels, conf = on_compute(labels_and_confidence, z, size)
    k = len(pred.class_set)

    def class_means(lab: np.ndarray, cf: np.ndarray) -> np.ndarray:
        sums = np.bincount(lab.ravel(), cf.ravel().astype(np.float64), minlength=k)
        return sums / np.maximum(np.bincount(lab.ravel(), minlength=k), 1)

    agreement = {
        "label_differences": int((labels != ref_labels).sum()),
        "pixels": int(labels.size),
        "mean_confidence_max_diff": float(
            np.abs(class_means(labels, conf) - class_means(ref_labels, ref_conf)).max()
        ),
    }
    from serving.decode import decode_image

    stages: dict[str, tuple[Any, Any]] = {
        "decode": alternate(lambda: pil_decode(data), lambda: decode_image(data), repeats),
        "postprocess": alternate(
            lambda: on_compute(reference_labels_and_confidence, z, size),
            lambda: on_compute(lambda: upsample(z, size).labels),
            repeats,
        ),
        # confidence is computed on first use only (stats, JSON, the demo), never for a label PNG
        "confidence (on first use)": (
            None,
            single(lambda: on_compute(labels_and_confidence, z, size), repeats),
        ),
    }
    for name, fn in (
        ("stats", lambda: class_stats(pred.label_map, pred.confidence, pred.class_set)),
        ("label PNG", lambda: label_png(pred.label_map)),
        ("JSON", lambda: json.dumps(prediction_json(pred))),
    ):
        stages[name] = (None, single(fn, repeats))  # unchanged stages: one column

    def predict() -> Any:
        return predictor.predict(data, caption="")

    def predict_before() -> Any:
        with before_implementations():
            return predictor.predict(data, caption="")

    stages["predict (in process)"] = alternate(predict_before, predict, repeats)
    return stages, agreement


def _ms_cell(stat: dict | None) -> str:
    return "" if stat is None else f"{stat['median']:.1f} ({stat['min']:.1f}-{stat['max']:.1f})"


STAGE_COLUMNS = (
    Col("stage", lambda item: item[0]),
    Col("before ms", lambda item: _ms_cell(item[1][0])),
    Col("after ms", lambda item: _ms_cell(item[1][1])),
    Col(
        "speed-up",
        lambda item: "" if item[1][0] is None else f"{item[1][0]['median'] / item[1][1]['median']:.2f}x",
    ),
)


def size_part(name: str, measured: dict[str, Any]) -> list[str]:
    """Markdown for one input size: the stage table and the label agreement."""
    agreement = measured["agreement"]
    return [
        f"### {name} ({measured['bytes']:,} bytes)",
        "",
        table(STAGE_COLUMNS, measured["stages"].items()),
        "",
        f"Labels after vs before: {agreement['label_differences']} of {agreement['pixels']:,} pixels differ;"
        f" largest change of a class's mean confidence {agreement['mean_confidence_max_diff']:.4f}.",
        "",
    ]


def render(measured: dict[str, Any]) -> str:
    """The `request-path` section from what main() measured (its --json file)."""
    parts = [
        "## Request path outside the forward: before / after",
        "",
        f"`{measured['model']}` ({measured['weights']}), backend `{measured['backend']}`, working size"
        f" {measured['working_size'][0]}x{measured['working_size'][1]}, frame `{measured['frame']}` (and"
        f" resized to 1024x512, PNG), {measured['repeats']} alternating rounds; ms, median (min-max)."
        " Stages with one column did not change.",
        "",
        f"Command: `python -m bench.request_path --repeats {measured['repeats']} --backend {measured['backend']}`",
        "",
    ]
    for name, part in measured["sizes"].items():
        parts += size_part(name, part)
    if measured.get("http"):
        parts += http_part(measured["http"])
    parts.append(format_machine(measured["machine"]))
    return "\n".join(parts)


def _options(backend: str | None) -> Any:
    """The in-process predictor's options: the service's defaults (so `auto` probes, or re-uses the
    probe cached where the service caches it) with `backend` when given, and no captioner."""
    from dataclasses import replace

    from serving.settings import ServiceSettings

    options = ServiceSettings().predictor_options()
    return replace(options, backend=backend or "auto", captioner="none")


def main(argv: list[str] | None = None) -> int:
    import model  # noqa: F401  (offline env defaults)
    from serving.predictor import Predictor

    args = parse_args(argv)
    predictor = Predictor.from_checkpoint(args.checkpoint, _options(args.backend))
    args.backend = predictor.backend.name  # the servers run exactly this one
    full = args.frame.read_bytes()
    inputs = {"2048x1024": full, "1024x512": png_at(full, (1024, 512))}
    measured: dict[str, Any] = {
        "model": predictor.served.name,
        "weights": "embedded default" if args.checkpoint is None else Path(args.checkpoint).name,
        "backend": args.backend,
        "working_size": list(predictor.working_size),
        "frame": args.frame.name,
        "repeats": args.repeats,
        "sizes": {},
    }
    for name, data in inputs.items():
        for _ in range(2):  # warm-up: first forward, allocator
            predictor.predict(data, caption="")
        stages, agreement = measure_size(predictor, data, args.repeats)
        measured["sizes"][name] = {"bytes": len(data), "stages": stages, "agreement": agreement}
    measured["http"] = None if args.no_http else measure_http(args, full, predictor)
    measured["machine"] = machine_info()
    if args.json:
        args.json.write_text(json.dumps(measured, indent=1, default=str))
    body = render(measured)
    write_section(args.out, "request-path", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
