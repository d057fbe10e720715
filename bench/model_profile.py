"""Per-stage parameters, GFLOPs and eager CPU fp32 latency of the segmentation graph.

Stages of `SemiDAViL.seg` (see model/segmentor.py):
  backbone  seg.features(images)           = seg.visual (+ seg.conv_skip when the config has one)
  DLG       seg.dlg(dense, caption_feats, caption_mask)
  decoder   seg.decoder(fused, class_embeds, skips)
  upsample  F.interpolate(logits, input size, bilinear)   (no parameters)
The frozen CLIP text tower (`model.text`) runs outside the graph; its parameters are listed on
their own line and it is not timed here.

FLOPs come from `torch.utils.flop_counter.FlopCounterMode` and are reported as GFLOPs = 2 x MACs
(FlopCounterMode's convention). It counts matrix products and convolutions only; this script adds a
formula for `scaled_dot_product_attention` when the installed torch has none for the op that runs
on CPU (torch 2.13 has none), and lists the ops that ran without being counted.

The issue's target: "DLG plus decoder cost no more than 25 % of the backbone's time at 512x1024 on
CPU, eager fp32, batch 1" -> (DLG + decoder) / backbone median time, PASS when <= 25 %.

Run from the repository root:  python -m bench.model_profile [--help]
Writes the `model_profile` section of BENCHMARKS.md (unless --no-write) and prints it.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import model
from bench.common import (
    BENCHMARKS_MD,
    Col,
    command_line,
    machine_info,
    markdown_table,
    median_time,
    parse_size,
    section_header,
    split_list,
    synthetic_inputs,
    table,
    write_section,
)
from bench.flops import (
    STAGES,
    attention_flop_mapping,
    count_flops,
    count_parameters,
    expected_backbone_attention_flops,
    op_name,
    stage_fns,
)

ROOT = Path(__file__).resolve().parents[1]

SECTION = "model_profile"
SCRIPT = "bench.model_profile"
DEFAULT_CONFIGS = ("semidavil-vitb16", "semidavil-tiny")
DEFAULT_SIZES = ("512x512", "512x1024")
QUICK_CONFIGS = ("semidavil-tiny",)
QUICK_SIZES = ("128x128", "128x256")
TARGET_SIZE = (512, 1024)
TARGET_CONFIG = "semidavil-vitb16"  # the tiny model's decoder outweighs its tiny backbone by design
TARGET_RATIO = 0.25
STAGE_LABELS = {
    "backbone": "backbone",
    "dlg": "DLG",
    "decoder": "decoder",
    "upsample": "final upsample",
}
STAGE_MODULES = {
    "backbone": "seg.visual + seg.conv_skip",
    "dlg": "seg.dlg",
    "decoder": "seg.decoder",
    "upsample": "F.interpolate (bilinear)",
}


def profile_config(
    name: str, sizes: Sequence[tuple[int, int]], args: argparse.Namespace, custom: dict[Any, Any]
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    net = model.create_model(name).eval()
    cfg = net.config
    params = count_parameters(net)
    runs = []
    for height, width in sizes:
        print(f"[model_profile] {name} {height}x{width} ...", file=sys.stderr, flush=True)
        inputs = synthetic_inputs(
            1, height, width, args.classes, args.caption_length, cfg.embed_dim, seed=args.seed
        )
        with torch.inference_mode():
            fns, whole = stage_fns(net.seg, *inputs)
            flops = {stage: count_flops(fn, custom) for stage, fn in fns.items()}
            whole_flops = count_flops(whole, custom)
            times = {stage: median_time(fn, args.repeats, args.warmup) for stage, fn in fns.items()}
            whole_time = median_time(whole, args.repeats, args.warmup)
        backbone, dlg, decoder = (times[s]["median"] for s in ("backbone", "dlg", "decoder"))
        runs.append(
            {
                "config": name,
                "size": (height, width),
                "flops": flops,
                "whole_flops": whole_flops,
                "expected_backbone_attention_flops": expected_backbone_attention_flops(cfg, height, width),
                "times": times,
                "whole_time": whole_time,
                "ratio": (dlg + decoder) / backbone,
                "ratio_min": (times["dlg"]["min"] + times["decoder"]["min"]) / times["backbone"]["min"],
                "ratio_with_upsample": (dlg + decoder + times["upsample"]["median"]) / backbone,
            }
        )
        del fns, whole, inputs
        gc.collect()
    del net
    gc.collect()
    return {"config": name, "params": params, "runs": runs}


# -------------------------------------------------------------------------------------------- markdown


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _g(flops: int) -> str:
    g = flops / 1e9
    return "0" if flops == 0 else (f"{g:.2f}" if g >= 1 else f"{g:.4f}")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


# One parameter row per (label, modules, key of the counts, shown only when non-zero).
PARAM_ROWS = (
    *((STAGE_LABELS[s], STAGE_MODULES[s], s, False) for s in STAGES),
    ("other (graph)", "seg, outside the stages", "seg_other", True),
    ("**graph total**", "seg", "seg", False),
    ("text tower (frozen)", "model.text, outside the graph", "text", False),
    ("other (model)", "model, outside seg and text", "model_other", True),
    ("**model total**", "seg + text", "model", False),
)


def params_table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for res in results:
        for label, modules, key, if_any in PARAM_ROWS:
            counts = res["params"][key]
            if counts["all"] or not if_any:
                rows.append([res["config"], label, modules, f"{counts['all']:,}", f"{counts['trainable']:,}"])
    return markdown_table(["Config", "Stage", "Modules", "Params", "Trainable"], rows, "lllrr")


def _cost_row(
    config: str, run: dict[str, Any], label: str, flops: dict[str, Any], t: Any, share: str
) -> list[str]:
    """One row of the cost table; `t` is a timing dict, or a bare sum of medians (no spread)."""
    spread = (
        ["", ""]
        if isinstance(t, float)
        else [f"{_ms(t['min'])}–{_ms(t['max'])}", f"{_ms(t['p25'])}–{_ms(t['p75'])}"]
    )
    median = t if isinstance(t, float) else t["median"]
    return [
        config,
        _size(run["size"]),
        label,
        _g(flops["flops"]),
        _g(flops["attention_flops"]),
        _ms(median),
        *spread,
        share,
    ]


def cost_table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for res in results:
        for run in res["runs"]:
            stage_sum = sum(run["times"][s]["median"] for s in STAGES)
            for stage in STAGES:
                t = run["times"][stage]
                share = _pct(t["median"] / stage_sum) if stage_sum else "-"
                rows.append(_cost_row(res["config"], run, STAGE_LABELS[stage], run["flops"][stage], t, share))
            total = {key: sum(run["flops"][s][key] for s in STAGES) for key in ("flops", "attention_flops")}
            rows.append(_cost_row(res["config"], run, "sum of stages", total, float(stage_sum), "100.0 %"))
            rows.append(
                _cost_row(
                    res["config"], run, "whole graph (seg forward)", run["whole_flops"], run["whole_time"], ""
                )
            )
    header = [
        "Config",
        "Input",
        "Stage",
        "GFLOPs",
        "of which SDPA attention",
        "Median ms",
        "Min–max ms",
        "IQR ms",
        "Time share",
    ]
    return markdown_table(header, rows, "lllrrrrrr")


def _verdict(config: str, run: dict[str, Any]) -> str:
    if config != TARGET_CONFIG:
        return "(info: the target is for the paper model)"
    if tuple(run["size"]) != TARGET_SIZE:
        return "(info: not the target size)"
    return "PASS" if run["ratio"] <= TARGET_RATIO else "FAIL"


def _stage_ms(stage: str, label: str) -> Col:
    return Col(f"{label} ms", lambda cr: _ms(cr[1]["times"][stage]["median"]), "r")


TARGET_COLUMNS = (
    Col("Config", lambda cr: cr[0]),
    Col("Input", lambda cr: _size(cr[1]["size"])),
    _stage_ms("backbone", "Backbone"),
    _stage_ms("dlg", "DLG"),
    _stage_ms("decoder", "Decoder"),
    Col("(DLG + decoder) / backbone", lambda cr: _pct(cr[1]["ratio"]), "r"),
    Col("same, from min times", lambda cr: _pct(cr[1]["ratio_min"]), "r"),
    Col("incl. final upsample", lambda cr: _pct(cr[1]["ratio_with_upsample"]), "r"),
    Col(f"vs {TARGET_RATIO:.0%}", lambda cr: _verdict(*cr)),
)


def target_table(results: Sequence[dict[str, Any]]) -> str:
    return table(TARGET_COLUMNS, [(res["config"], run) for res in results for run in res["runs"]])


def notes(results: Sequence[dict[str, Any]], custom: dict[Any, Any]) -> str:
    uncounted: dict[str, set[str]] = defaultdict(set)
    checks = []
    for res in results:
        for run in res["runs"]:
            for stage in STAGES:
                uncounted[stage].update(run["flops"][stage]["uncounted_ops"])
            got = run["flops"]["backbone"]["attention_flops"]
            want = run["expected_backbone_attention_flops"]
            status = "ok" if got == want else "MISMATCH"
            checks.append(
                f"{res['config']} {_size(run['size'])}: {_g(got)} counted vs {_g(want)} analytic ({status})"
            )
    added = ", ".join(f"`aten.{op_name(op)}`" for op in custom) or "none needed"
    lines = [
        "- GFLOPs are `torch.utils.flop_counter.FlopCounterMode` totals, i.e. 2 x multiply-accumulates "
        "(a multiply and an add each count as one FLOP). Counted: matrix products (`mm`, `addmm`, `bmm`, "
        "`baddbmm`: `nn.Linear`, `@`, `einsum`) and convolutions (incl. the patch embedding and the "
        "transposed convolutions), plus scaled-dot-product attention (below).",
        f"- Attention: this torch's FlopCounterMode has no formula for the CPU attention op, so one is "
        f"added for {added}: 2·B·H·Sq·Sk·(Dq + Dv) (same formula torch uses for its CUDA kernels; "
        "softmax not counted). The DLG's attention is written as explicit matmuls and is counted "
        "natively. Check of the ViT self-attention (every block but the last, which takes the value "
        "path without q-k attention; N = 1 + h·w tokens, D = width) against 4·N²·D per block: "
        + "; ".join(checks)
        + ".",
        "- Not counted (elementwise, normalisation, softmax, pooling, resampling; ops that ran, by stage): "
        + "; ".join(
            f"{STAGE_LABELS[s]}: {', '.join(f'`{o}`' for o in sorted(uncounted[s])) or 'none'}"
            for s in STAGES
        )
        + ". In particular the final bilinear upsample (`upsample_bilinear2d`) counts as 0 GFLOPs "
        "(analytically about 7 FLOPs per output value: 7·K·H·W ≈ 0.07 GFLOPs for K = 19 at 512x1024) and "
        "the positional-embedding resize (bicubic) is not counted.",
        "- Stage times are measured separately on fixed stage inputs (each stage's input computed once), "
        "so the sum of stages and the whole-graph time differ slightly (allocations, caches).",
        "- Parameters: `Trainable` = `requires_grad` under the config's fine-tuning rule (`spatial` "
        "for the ViT: attention projections and positional embedding only). The text tower is frozen and "
        "runs outside the graph (class and caption embeddings are inputs), so it is neither in the graph's "
        "FLOPs nor timed. Weights are random (seed); latency does not depend on their values.",
    ]
    return "\n".join(lines)


def render(
    results: Sequence[dict[str, Any]],
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    machine: dict[str, Any],
    custom: dict[Any, Any],
) -> str:
    quick = "\n**Quick mode (smoke test): not for comparison.**\n" if args.quick else ""
    settings = (
        f"eager CPU, fp32, batch 1, K = {args.classes} classes, caption length L = {args.caption_length} "
        f"(all tokens real), `torch.inference_mode()`, random weights (seed {args.seed}); "
        f"{args.warmup} warm-up + {args.repeats} timed repeat(s) per stage, median, min–max and IQR "
        f"(p25–p75) in ms; {machine['torch_threads']} intra-op thread(s)."
    )
    return "\n".join(
        [
            *section_header(
                "## Model profile: parameters, GFLOPs and CPU latency per stage",
                quick,
                command_line(SCRIPT, argv),
                settings,
                machine,
            ),
            "### Parameters",
            "",
            params_table(results),
            "",
            "### GFLOPs and latency",
            "",
            cost_table(results),
            "",
            f"### Target: (DLG + decoder) time ≤ {TARGET_RATIO:.0%} of the backbone's at "
            f"{_size(TARGET_SIZE)} (CPU, eager fp32, batch 1)",
            "",
            target_table(results),
            "",
            "Ratios use median times; the verdict applies at the target size only."
            + (
                ""
                if any(tuple(run["size"]) == TARGET_SIZE for res in results for run in res["runs"])
                else f" {_size(TARGET_SIZE)} was not measured in this run: no verdict."
            ),
            "",
            "### What is counted",
            "",
            notes(results, custom),
            "",
        ]
    )


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description=(
            "Parameters, GFLOPs and eager CPU fp32 latency per stage (backbone, DLG, decoder, final "
            "upsample) of the SemiDAViL segmentation graph, and the issue's target ratio "
            "(DLG + decoder) / backbone time <= 25 % at 512x1024. Prints a Markdown report and writes it "
            "into the `model_profile` section of BENCHMARKS.md."
        ),
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"model configs to profile (space- or comma-separated); default {','.join(DEFAULT_CONFIGS)} "
        f"({','.join(QUICK_CONFIGS)} with --quick)",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=None,
        metavar="HxW",
        help=f"input sizes, height x width, multiples of 16; default {','.join(DEFAULT_SIZES)} "
        f"({','.join(QUICK_SIZES)} with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per stage (median reported); default 5 (1 with --quick)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per stage (default 1)")
    parser.add_argument(
        "--classes", type=int, default=19, help="number of classes K (class embeddings; default 19)"
    )
    parser.add_argument(
        "--caption-length", type=int, default=20, help="caption length L in tokens, all real (default 20)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: leave torch's default)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the random weights and inputs (default 0)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {','.join(QUICK_CONFIGS)} only, sizes {','.join(QUICK_SIZES)}, 1 repeat "
        "(explicit --configs/--sizes/--repeats still win); output marked as quick",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=BENCHMARKS_MD,
        help="Markdown file whose `model_profile` section is written (default: BENCHMARKS.md at the repository root)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the report only, do not touch --output"
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.configs = split_list(args.configs) or list(QUICK_CONFIGS if args.quick else DEFAULT_CONFIGS)
    size_texts = split_list(args.sizes) or list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    try:
        args.sizes = [parse_size(s) for s in size_texts]
    except ValueError as err:
        parser.error(str(err))
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    known = model.list_models()
    for name in args.configs:
        if name not in known:
            parser.error(f"unknown config {name!r}; known: {', '.join(known)}")
    for h, w in args.sizes:
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            parser.error(f"size {h}x{w}: height and width must be positive multiples of 16")
    if args.repeats < 1 or args.warmup < 0 or args.classes < 1 or args.caption_length < 1:
        parser.error("--repeats, --classes and --caption-length must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Profile, print the report, write it (unless --no-write); returns the results and the Markdown."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine = machine_info()
    custom = attention_flop_mapping()
    results = [profile_config(name, args.sizes, args, custom) for name in args.configs]
    text = render(results, args, argv, machine, custom)
    print(text)
    output = None
    if not args.no_write:
        output = write_section(args.output, SECTION, text)
        print(f"[model_profile] wrote section {SECTION!r} of {output}", file=sys.stderr)
    return {"results": results, "markdown": text, "machine": machine, "output": output, "args": args}


if __name__ == "__main__":
    main()
