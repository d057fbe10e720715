"""BENCHMARKS.md `suite-<CPU class>` section from the structured results of bench/run_all.py; target verdicts.

Pure functions of the results dict (no measuring here), so they are unit-tested on their own:
`evaluate_targets(results, plan)` -> rows with PASS / FAIL / "not measured: ..." and the numbers;
`render(results, plan, ...)` -> Markdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Col, fmt_num, fmt_stat, markdown_table, section_header, sections, table

BACKBONE_FRACTION = 0.50
GRAPH_OVER_BACKBONE = 1.25
DEFAULT_SPEEDUP = 4.0
AGREEMENT = 0.995
HTTP_OVERHEAD = 0.10
BATCHING_GAIN = 1.3
NO_GPU = "not measured: no GPU"


@dataclass(frozen=True)
class TargetRow:
    name: str
    target: str
    measured: str
    verdict: str  # PASS, FAIL or "not measured: <why>"


def _size(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def verdict(ok: bool, quick: bool) -> str:
    word = "PASS" if ok else "FAIL"
    return f"{word} (quick run: indicative only)" if quick else word


def _find_row(
    rows: Sequence[dict[str, Any]], config: str, size: Sequence[int], batch: int, precision: str
) -> Any:
    """The result row for one (config, size, batch, precision) setting, or None."""
    key = (config, list(size), batch, precision)
    return next((r for r in rows if (r["config"], list(r["size"]), r["batch"], r["precision"]) == key), None)


def _stage_row(results: dict[str, Any], config: str, size: Sequence[int], batch: int, precision: str) -> Any:
    return _find_row((results.get("stages") or {}).get("rows", []), config, size, batch, precision)


def _tower_row(results: dict[str, Any], config: str, size: Sequence[int], batch: int, precision: str) -> Any:
    return _find_row((results.get("floor") or {}).get("visual", []), config, size, batch, precision)


def matmul_peak(results: dict[str, Any], precision: str) -> float | None:
    best = ((results.get("floor") or {}).get("matmul") or {}).get("best") or {}
    entry = best.get(precision)
    return entry["flops_per_s"] if entry else None


def backbone_fraction(results: dict[str, Any], row: dict[str, Any]) -> float | None:
    """Achieved backbone FLOP/s (FLOPs / median time) over the measured matmul peak at its precision."""
    peak = matmul_peak(results, row["precision"])
    seconds = row["times"]["backbone"]["median"]
    if not peak or not seconds:
        return None
    return row["backbone_flops"] / seconds / peak


@dataclass(frozen=True)
class Measured:
    """What a target's measure found: the numbers in words, and whether they meet the target
    (None: measured, but no verdict possible; `missing` says why)."""

    text: str
    passed: bool | None
    missing: str = ""


# A measure returns Measured, or a str saying why the run has nothing to judge.
Measure = Callable[[dict[str, Any], dict[str, Any]], "Measured | str"]


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measure: Measure

    def row(self, results: dict[str, Any], plan: dict[str, Any]) -> TargetRow:
        got = self.measure(results, plan)
        if isinstance(got, str):
            return TargetRow(self.name, self.goal, "", f"not measured: {got}")
        if got.passed is None:
            return TargetRow(self.name, self.goal, got.text, f"not measured: {got.missing}")
        return TargetRow(self.name, self.goal, got.text, verdict(got.passed, bool(plan.get("quick"))))


def _where(plan: dict[str, Any]) -> str:
    return f"{plan['target_config']} {_size(plan['target_size'])} batch 1 bf16"


def _backbone_flops(results: dict[str, Any], plan: dict[str, Any]) -> Measured | str:
    stage = _stage_row(results, plan["target_config"], plan["target_size"], 1, "bf16")
    if stage is None:
        return f"{_where(plan)} not in this run"
    frac = backbone_fraction(results, stage)
    achieved = stage["backbone_flops"] / stage["times"]["backbone"]["median"]
    peak = matmul_peak(results, "bf16") or 0
    text = (
        f"{_where(plan)}: {fmt_num(achieved / 1e9)} GFLOP/s of {fmt_num(peak / 1e9)} GFLOP/s = {_pct(frac)}"
    )
    if frac is None:
        return Measured(text, None, "no matmul peak")
    return Measured(text, frac >= BACKBONE_FRACTION)


def _graph_over_tower(results: dict[str, Any], plan: dict[str, Any]) -> Measured | str:
    cfg, size = plan["target_config"], plan["target_size"]
    stage, tower = _stage_row(results, cfg, size, 1, "bf16"), _tower_row(results, cfg, size, 1, "bf16")
    if stage is None or tower is None:
        return f"{_where(plan)} graph or open_clip tower missing"
    ratio = stage["times"]["whole"]["median"] / tower["time"]["median"]
    text = (
        f"{_where(plan)}: graph {fmt_stat(stage['times']['whole'])} ms / open_clip tower "
        f"{fmt_stat(tower['time'])} ms = {ratio:.2f}x"
    )
    return Measured(text, ratio <= GRAPH_OVER_BACKBONE)


def _default_backend(results: dict[str, Any], plan: dict[str, Any]) -> Measured | str:
    models = (results.get("backends") or {}).get("models") or []
    wanted = plan.get("backend_target_model", plan["target_config"])
    bm = next((m for m in models if m["model"] == wanted), None)
    if bm is None:
        return "backend benchmark of the target model missing"
    chosen = next((r for r in bm["rows"] if r["backend"] == bm["chosen"]), None)
    if chosen is None:
        return Measured(f"{bm['model']} {_size(bm['size'])}: no backend reached the agreement bar", False)
    speed = chosen.get("speedup_b1") or 0.0
    agree = chosen["agreement"]["argmax_agreement"]
    text = (
        f"{bm['model']} {_size(bm['size'])} batch 1: default = {chosen['backend']}, "
        f"{speed:.2f}x eager fp32, agreement {_pct(agree)} (margin {bm['margin']}; all pixels "
        f"{_pct(chosen['agreement']['argmax_agreement_all'])})"
    )
    return Measured(text, speed >= DEFAULT_SPEEDUP and agree >= AGREEMENT)


def _http_overhead(results: dict[str, Any], _plan: dict[str, Any]) -> Measured | str:
    http = results.get("http")
    if not http or "latency" not in (http.get("batched") or {}):
        return "HTTP benchmark missing"
    local, remote = http["inprocess"]["latency"], http["batched"]["latency"]
    overhead = remote["median"] / local["median"] - 1.0
    text = (
        f"2048x1024 PNG -> {http.get('output', 'json')}, {http['backend']}: /segment {fmt_stat(remote)} ms "
        f"vs in-process {fmt_stat(local)} ms = {overhead * 100:+.1f} %"
    )
    return Measured(text, remote["median"] <= local["median"] * (1.0 + HTTP_OVERHEAD))


def _batching_gain(results: dict[str, Any], _plan: dict[str, Any]) -> Measured | str:
    levels = ((results.get("http") or {}).get("batched") or {}).get("throughput") or {}
    if "1" not in levels or "8" not in levels:
        return "throughput missing"
    one, eight = levels["1"]["requests_per_s"]["median"], levels["8"]["requests_per_s"]["median"]
    text = (
        f"{fmt_num(eight)} req/s at 8 (mean batch {levels['8']['mean_batch']:.1f}) vs {fmt_num(one)} req/s "
        f"at 1 = {eight / one:.2f}x"
    )
    return Measured(text, eight >= one * BATCHING_GAIN)


TARGETS = (
    Target("backbone FLOP/s", f">= {BACKBONE_FRACTION:.0%} of bf16 matmul", _backbone_flops),
    Target("graph vs plain backbone", f"<= {GRAPH_OVER_BACKBONE}x", _graph_over_tower),
    Target(
        "default CPU path vs eager fp32",
        f">= {DEFAULT_SPEEDUP}x, agreement >= {AGREEMENT:.1%}",
        _default_backend,
    ),
    Target("HTTP overhead", f"<= {HTTP_OVERHEAD:.0%}", _http_overhead),
    Target("adaptive batching", f">= {BATCHING_GAIN}x (c=8 vs c=1)", _batching_gain),
)
GPU_TARGETS = (
    "H200: Torch-TensorRT latency",
    "H200: semidavil-vitb16 training at the paper's crop and batch",
)


def evaluate_targets(results: dict[str, Any], plan: dict[str, Any]) -> list[TargetRow]:
    """The issue's targets at the plan's target config/size (semidavil-vitb16 at 512x1024 in a full run)."""
    rows = [target.row(results, plan) for target in TARGETS]
    gpu = bool((results.get("backends") or {}).get("gpu")) or bool((results.get("training") or {}).get("gpu"))
    rows += [
        TargetRow(name, "issue's H200 targets", "", "see the GPU sections" if gpu else NO_GPU)
        for name in GPU_TARGETS
    ]
    return rows


# ------------------------------------------------------------------------------------------ tables


def _peak_pct(results: dict[str, Any], r: dict[str, Any], seconds: float) -> str:
    """Achieved FLOP/s of `r["flops"]` in `seconds` as a share of the matmul peak at its precision."""
    peak = matmul_peak(results, r["precision"])
    return _pct(r["flops"] / seconds / peak if peak else None)


TARGET_COLUMNS = (
    Col("Target", lambda r: r.name),
    Col("Bar", lambda r: r.target),
    Col("Measured", lambda r: r.measured),
    Col("Verdict", lambda r: r.verdict),
)
MATMUL_COLUMNS = (
    Col("Precision", lambda r: r["precision"]),
    Col("n", lambda r: r["n"], "r"),
    Col("Median ms (min–max)", lambda r: fmt_stat(r["time"]), "r"),
    Col("GFLOP/s (median)", lambda r: fmt_num(r["flops_per_s"] / 1e9), "r"),
    Col(
        "GFLOP/s range",
        lambda r: f"{fmt_num(r['flops_per_s_min'] / 1e9)}–{fmt_num(r['flops_per_s_max'] / 1e9)}",
        "r",
    ),
)
SETTING_COLUMNS = (
    Col("Config", lambda r: r["config"]),
    Col("Input", lambda r: _size(r["size"])),
    Col("Batch", lambda r: r["batch"]),
    Col("Precision", lambda r: r["precision"]),
)


def tower_columns(results: dict[str, Any]) -> tuple[Col, ...]:
    return (
        *SETTING_COLUMNS[:3],
        Col("Precision", lambda r: r["precision"], "r"),
        Col("Median ms (min–max)", lambda r: fmt_stat(r["time"]), "r"),
        Col("GFLOPs", lambda r: fmt_num(r["flops"] / 1e9), "r"),
        Col("GFLOP/s", lambda r: fmt_num(r["flops"] / r["time"]["median"] / 1e9), "r"),
        Col("% of matmul peak", lambda r: _peak_pct(results, r, r["time"]["median"]), "r"),
    )


def targets_table(rows: Sequence[TargetRow]) -> str:
    return table(TARGET_COLUMNS, rows)


def floor_tables(results: dict[str, Any]) -> str:
    floor = results.get("floor")
    if not floor:
        return "_not run_"
    best = ", ".join(
        f"{p}: {fmt_num(b['flops_per_s'] / 1e9)} GFLOP/s (n = {b['n']})"
        for p, b in floor["matmul"]["best"].items()
    )
    return "\n".join(
        [
            "Matrix products (`torch.mm`, square n x n, 2n³ FLOPs):",
            "",
            table(MATMUL_COLUMNS, floor["matmul"]["runs"]),
            "",
            f"Measured peak (best median): {best}.",
            "",
            "Plain open_clip visual tower (`VisionTransformer` built for the input size, pooled output):",
            "",
            table(tower_columns(results), floor["visual"]),
        ]
    )


STAGE_COLUMNS = (
    ("text_cold", "text cold"),
    ("text_cached", "text cached"),
    ("backbone", "backbone"),
    ("dlg", "DLG"),
    ("decoder", "decoder"),
    ("upsample", "upsample (graph)"),
    ("whole", "whole graph"),
    ("upsample_argmax", "upsample+argmax to 2048x1024"),
)


def _request_rows(req: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(stage, time, what) of the per-request stages, which do not depend on the model."""
    image = f"{req['image']} ({_size(req['image_size'])}, {req['bytes']:,} bytes)"
    rows = [("decode", fmt_stat(req.get("decode")), image)]
    if "caption_miss" in req:
        rows.append(("caption (cache miss)", fmt_stat(req["caption_miss"]), req.get("captioner", "")))
        rows.append(("caption (cache hit)", fmt_stat(req["caption_hit"]), "content-hash cache"))
    else:
        rows.append(("caption", "n/a", req.get("caption_error", "")))
    rows.append(("PNG encode (label map)", fmt_stat(req.get("png_encode")), "2048x1024 uint8, zlib level 1"))
    return rows


def stage_columns(results: dict[str, Any]) -> tuple[Col, ...]:
    def over_tower(r: dict[str, Any]) -> str:
        tower = _tower_row(results, r["config"], r["size"], r["batch"], r["precision"])
        return f"{r['times']['whole']['median'] / tower['time']['median']:.2f}x" if tower else "n/a"

    def time_col(key: str, label: str) -> Col:
        return Col(label, lambda r: fmt_stat(r["times"].get(key)), "r")

    return (
        *SETTING_COLUMNS,
        *(time_col(key, label) for key, label in STAGE_COLUMNS),
        Col(
            "backbone GFLOP/s",
            lambda r: fmt_num(r["backbone_flops"] / r["times"]["backbone"]["median"] / 1e9),
            "r",
        ),
        Col("% of matmul peak", lambda r: _pct(backbone_fraction(results, r)), "r"),
        Col("graph / plain tower", over_tower, "r"),
    )


def stage_tables(results: dict[str, Any]) -> str:
    stages = results.get("stages")
    if not stages:
        return "_not run_"
    return "\n".join(
        [
            "Per request (independent of the model):",
            "",
            markdown_table(("Stage", "Median ms (min–max)", "What"), _request_rows(stages["request"]), "lrl"),
            "",
            "Per model setting (ms, median (min–max); upsample+argmax is per image):",
            "",
            table(stage_columns(results), stages["rows"]),
        ]
    )


def _unless_error(cell: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """A cell that stays empty in a row that records an error (the error goes in the last column)."""
    return lambda r: "" if r.get("error") else cell(r)


def _speedup(value: float | None) -> str:
    return f"{value:.2f}x" if value else "n/a"


def backend_columns(m: dict[str, Any]) -> tuple[Col, ...]:
    bmax, chosen = max(m["batches"]), m["chosen"]

    def agreement(key: str) -> Callable[[dict[str, Any]], str]:
        return _unless_error(lambda r: f"{r['agreement'][key] * 100:.3f} %")

    return (
        Col("Backend", lambda r: r["backend"] + (" **(default)**" if r["backend"] == chosen else "")),
        Col("Build + first call s", _unless_error(lambda r: fmt_num(r.get("build_s"))), "r"),
        Col("Batch 1 ms", _unless_error(lambda r: fmt_stat(r.get("latency_b1"))), "r"),
        Col(
            f"Batch {bmax} ms per image", _unless_error(lambda r: fmt_stat(r.get(f"per_image_b{bmax}"))), "r"
        ),
        Col("Speed-up b1", _unless_error(lambda r: _speedup(r.get("speedup_b1"))), "r"),
        Col(f"Speed-up b{bmax}", _unless_error(lambda r: _speedup(r.get(f"speedup_b{bmax}"))), "r"),
        Col("Agreement (gated)", agreement("argmax_agreement"), "r"),
        Col("Agreement (all px)", agreement("argmax_agreement_all"), "r"),
        Col("Max abs err", _unless_error(lambda r: fmt_num(r["agreement"]["max_abs_error"])), "r"),
        Col(
            "≥ 99.5 %",
            lambda r: (
                r["error"]
                if r.get("error")
                else ("yes" if r["agreement"]["argmax_agreement"] >= AGREEMENT else "no")
            ),
        ),
    )


def _backend_intro(m: dict[str, Any]) -> str:
    weights = (
        f"checkpoint `{m['checkpoint']}`"
        if m.get("checkpoint")
        else "random weights (no trained checkpoint: agreement is only indicative)"
    )
    written = (
        f", written to `{m['choice_written']}`"
        if m.get("choice_written")
        else " (not written; `--write-choice`)"
    )
    return (
        f"**{m['model']}** at {_size(m['size'])}, K = {m['num_classes']}, L = {m['caption_length']}, "
        f"{weights}, sha256 {m['checkpoint_sha256'][:12]}; gated agreement over pixels whose fp32 top-2 "
        f"margin > {m['margin']}; images: {len(m['agreement_images'])} shared fixture frame(s) "
        f"({m['agreement_pixels_per_image']:,} px each at the working size). CPU features: "
        f"{m['cpu_features']}. Default (fastest at batch 1 with ≥ 99.5 %): **{m['chosen']}**{written}."
    )


def backend_tables(results: dict[str, Any]) -> str:
    backends = results.get("backends")
    if not backends:
        return "_not run_"
    parts = []
    for m in backends["models"]:
        parts += [_backend_intro(m), "", table(backend_columns(m), m["rows"]), ""]
    if not backends.get("gpu"):
        parts.append(f"Torch-TensorRT (tensorrt-fp16, tensorrt-bf16): {NO_GPU}.")
    return "\n".join(parts)


def _trim_rows(before: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
    """Rows of the server that trims the heap after every batch (the earlier policy), if measured."""
    if not before or "latency" not in before or "inprocess_latency" not in before:
        return []
    overhead = before["latency"]["median"] / before["inprocess_latency"]["median"] - 1.0
    return [
        (
            "before: in-process, alternating with the next row",
            fmt_stat(before["inprocess_latency"]),
            before["inprocess_latency"]["n"],
        ),
        (
            f"before: HTTP, heap trimmed after every batch (SEMIDAVIL_TRIM_SLACK_MB=0): {overhead * 100:+.1f} %",
            fmt_stat(before["latency"]),
            before["latency"]["n"],
        ),
    ]


def _latency_rows(http: dict[str, Any]) -> list[tuple[str, str, Any]]:
    output, batched = http.get("output", "json"), http["batched"]
    server = batched.get("server_total")
    return [
        (
            f"in-process `Predictor.predict` + {output} response (alternating with the next row)",
            fmt_stat(http["inprocess"]["latency"]),
            http["inprocess"]["latency"]["n"],
        ),
        (
            f"HTTP POST /segment (output={output})",
            fmt_stat(batched.get("latency")),
            (batched.get("latency") or {}).get("n", ""),
        ),
        (
            "of which the predictor inside the server (response `timings_ms.total`)",
            fmt_stat(server) if server else "n/a",
            (server or {}).get("n", ""),
        ),
        *_trim_rows(http.get("trim_every_batch")),
    ]


def throughput_columns(http: dict[str, Any]) -> tuple[Col, ...]:
    def level(kind: str, c: int) -> Any:
        return http[kind]["throughput"].get(str(c))

    def cell(kind: str, make: Callable[[dict[str, Any]], str], empty: str = "") -> Callable[[int], str]:
        return lambda c: make(got) if (got := level(kind, c)) else empty

    return (
        Col("Concurrency", lambda c: c, "r"),
        Col("Batching: req/s", cell("batched", lambda b: fmt_stat(b["requests_per_s"], 1.0), "n/a"), "r"),
        Col(
            "mean batch", cell("batched", lambda b: f"{b['mean_batch']:.2f} (max {b['max_batch_seen']})"), "r"
        ),
        Col("latency ms", cell("batched", lambda b: fmt_stat(b["latency_median_s"])), "r"),
        Col(
            "No batching (max batch 1): req/s",
            cell("unbatched", lambda u: fmt_stat(u["requests_per_s"], 1.0), "n/a"),
            "r",
        ),
        Col("latency ms", cell("unbatched", lambda u: fmt_stat(u["latency_median_s"])), "r"),
    )


def http_tables(results: dict[str, Any]) -> str:
    http = results.get("http")
    if not http:
        return "_not run_"
    inp, settings = http["inprocess"], http["settings"]
    weights = "random weights" if inp["random_weights"] else inp["checkpoint"]
    return "\n".join(
        [
            f"Image: `{http['image']}` ({http['image_bytes']:,} bytes); backend {http['backend']}; model {inp['model']} "
            f"at {_size(inp['working_size'])} ({weights}); "
            f"captioner off, caption given; server: `bentoml serve` on 127.0.0.1, {http['threads']} OpenMP thread(s).",
            "",
            markdown_table(("Path", "Median ms (min–max)", "n"), _latency_rows(http), "lrr"),
            "",
            f"Throughput ({settings['requests']} requests per round, {settings.get('rounds', 1)} round(s), "
            "median (min–max) over rounds; latency = median per round):",
            "",
            table(throughput_columns(http), settings["concurrencies"]),
        ]
    )


def _memory(r: dict[str, Any]) -> str:
    mem = f"RSS peak {r['rss_peak_bytes'] / 2**20:,.0f} MiB (+{r['rss_increase_bytes'] / 2**20:,.0f} MiB while training)"
    return f"CUDA peak {r['cuda_peak_bytes'] / 2**30:.2f} GiB; " + mem if "cuda_peak_bytes" in r else mem


TRAINING_COLUMNS = (
    Col("Config", lambda r: r["config"]),
    Col("Device", lambda r: r["device"] if r.get("error") else f"{r['device']}, amp {r['amp']}"),
    Col(
        "Crop, batch (source+labeled+unlabeled)",
        lambda r: (
            f"{_size(r['crop'])}, batch " + "+".join(f"{k[0]}{v}" for k, v in r["batch"].items())
            if "crop" in r
            else ""
        ),
    ),
    Col(
        "it/s (range)",
        _unless_error(
            lambda r: f"{r['it_per_s']:.3g} ({r['it_per_s_range'][0]:.3g}–{r['it_per_s_range'][1]:.3g})"
        ),
        "r",
    ),
    Col("Step ms", _unless_error(lambda r: fmt_stat(r["step_s"])), "r"),
    Col("Warm-up + timed", _unless_error(lambda r: f"{r['warmup']} + {r['iters']}"), "r"),
    Col("Memory", lambda r: r["error"] if r.get("error") else _memory(r)),
)
NO_GPU_TRAINING = {
    "config": "semidavil-vitb16",
    "device": "cuda",
    "crop": (512, 512),
    "batch": {"source": 2, "labeled": 2, "unlabeled": 2},
    "error": NO_GPU,
}


def training_table(results: dict[str, Any]) -> str:
    tr = results.get("training")
    if not tr:
        return "_not run_"
    rows = tr["rows"] if tr.get("gpu") else [*tr["rows"], NO_GPU_TRAINING]
    return table(TRAINING_COLUMNS, rows)


def _captioner_rows(cap: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(captioner, params, batch 1 miss, batch 4 miss, hit, what): tiny ones, then the sized ones."""
    rows: list[tuple[Any, ...]] = [
        (
            f"tiny {r['kind']} (random)",
            f"{r['params']:,}",
            fmt_stat(r["miss_b1"]),
            fmt_stat(r["miss_b4"]),
            fmt_stat(r["hit_b1"]),
            "Captioner path (processor, greedy generate ≤ 20 tokens, decode, cache)",
        )
        for r in cap["tiny"]
    ]
    for r in cap["sized"]:
        name = f"{r['kind']}-sized (random, bf16)"
        if r.get("error"):
            rows.append((name, "", "", "", "", r["error"]))
        else:
            what = f"`generate(pixel_values)`, exactly {r['tokens']} new tokens, batch 1"
            rows.append((name, f"{r['params']:,}", fmt_stat(r["b1"]), "", "", what))
    if not cap["sized"]:
        rows.append(
            (
                "BLIP / BLIP-2 sized",
                "",
                "",
                "",
                "",
                "not run (quick mode; full run: `--captioner-sized blip,blip2`)",
            )
        )
    return rows


def captioner_table(results: dict[str, Any]) -> str:
    cap = results.get("captioner")
    if not cap:
        return "_not run_"
    header = ("Captioner", "Params", "Batch 1 ms (miss)", "Batch 4 ms (miss)", "Cache hit ms", "What")
    return markdown_table(header, _captioner_rows(cap), "lrrrrl")


def _first_call(row: dict[str, Any]) -> str:
    first = row.get("first_call_s")
    return f"first call {first['before']:.0f} s / {first['after']:.0f} s" if first else ""


CHANGE_COLUMNS = (
    Col("Change", lambda r: r["change"]),
    Col("Timed", lambda r: r["what"]),
    Col("Before ms", lambda r: fmt_stat(r["before"])),
    Col("After ms", lambda r: fmt_stat(r["after"])),
    Col("Speed-up", lambda r: f"{r['before']['median'] / r['after']['median']:.2f}x", "r"),
    Col("Note", _first_call),
)


def changes_table(results: dict[str, Any]) -> str:
    """Before/after of each speed change (bench/changes.py), interleaved rounds in one process."""
    data = results.get("changes")
    if not data:
        return "Not run."
    intro = (
        f"{data['config']} at {_size(data['size'])}, batch {data['batch']} unless the row says otherwise; "
        "before and after alternate "
        "in each round (same process, same inputs), so both see the same machine state."
    )
    return intro + "\n\n" + table(CHANGE_COLUMNS, data["rows"])


def same_run_sentence(results: dict[str, Any]) -> str:
    """Whether every figure comes from this run, or which modules `--reuse` took from an earlier one."""
    reused = (results.get("reused") or {}).get("modules")
    if not reused:
        return "All figures come from the same run, on the same machine, side by side."
    dates = results["reused"].get("dates", {})
    listed = ", ".join(f"{m} ({dates.get(m, 'earlier')})" for m in reused)
    return (
        f"Modules {listed} come from earlier runs with the same plan and machine (`--reuse`); "
        "the others were re-run now."
    )


def _settings(results: dict[str, Any], plan: dict[str, Any], machine: dict[str, Any]) -> str:
    return (
        f"threads: {machine['torch_threads']} intra-op (torch), same for ONNX Runtime and the server; "
        f"repeats: {plan['repeats']} timed after {plan['warmup']} warm-up (warm-up excluded); figures are "
        "medians with (min–max) over the timed repeats; random weights (seed 0) unless a checkpoint is named; "
        "`torch.inference_mode()`; bf16 = `torch.autocast(bfloat16)` over the graph's bf16 inference copy "
        "(`model.fast.inference_copy`, as the eager-bf16 backend runs it). " + same_run_sentence(results)
    )


def render(results: dict[str, Any], plan: dict[str, Any], machine: dict[str, Any], command: str) -> str:
    quick = plan.get("quick")
    banner = "\n**Quick mode (smoke test, tiny sizes, few repeats): not for comparison.**\n" if quick else ""
    errors = results.get("errors") or {}
    durations = results.get("durations_s") or {}
    cpu = f" (CPU class: {machine['cpu_class']})" if machine.get("cpu_class") else ""
    stand_in = " (the quick run's stand-in for semidavil-vitb16 at 512x1024)." if quick else "."
    target_setting = f"Target setting: {plan['target_config']} at {_size(plan['target_size'])}{stand_in}"
    parts = [
        *section_header(
            "## Benchmark suite: stages, floor, backends, HTTP, training, captioner" + cpu,
            banner,
            command,
            _settings(results, plan, machine),
            machine,
        ),
        "Module run times: " + ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()) + ".",
        "",
        *sections(("Targets", targets_table(evaluate_targets(results, plan)) + "\n\n" + target_setting)),
        *sections(
            ("Floor: matrix-product throughput and the plain open_clip visual tower", floor_tables(results)),
            ("Stages", stage_tables(results)),
            ("Speed changes: before / after", changes_table(results)),
            ("Backends (same inputs; agreement with eager fp32)", backend_tables(results)),
            (
                "HTTP: /segment vs in-process, throughput with and without adaptive batching",
                http_tables(results),
            ),
            ("Training", training_table(results)),
            ("Captioner", captioner_table(results)),
        ),
    ]
    if errors:
        parts += ["### Modules that failed", "", *(f"- {k}: {v}" for k, v in errors.items()), ""]
    return "\n".join(parts)
