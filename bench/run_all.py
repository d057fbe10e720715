"""Run the whole benchmark suite and write BENCHMARKS.md (one command; `--quick` in a few minutes).

    python -m bench.run_all            # full: semidavil-vitb16 at 512x512 and 512x1024, batch 1 and 8
    python -m bench.run_all --quick    # smoke test: semidavil-tiny at small sizes, few repeats
    python -m bench.run_all --only stages,floor --write-choice

Modules, one concern each, each returning structured results (bench/<module>.py):
  stages     per-stage latency (decode, caption, text cold/cached, backbone, DLG, decoder,
             upsample/argmax, PNG encode) and backbone FLOPs
  floor      bf16 / fp32 matmul throughput and the plain open_clip visual tower
  changes    before/after of each speed change, interleaved in one process (bench/changes.py)
  backends   eager fp32 / bf16, torch.compile, ONNX Runtime (Torch-TensorRT on a GPU) with argmax
             agreement against eager fp32 on the shared fixtures; `--write-choice` records the
             fastest passing one in serving/backend_choice.json (backend="auto")
  http       /segment over HTTP vs in-process; throughput at concurrency 1/4/8 with/without batching
  training   iterations/s and peak memory of the real trainer
  captioner  tiny BLIP / BLIP-2, and BLIP / BLIP-2 sized random models (full mode)
  profile    bench/model_profile.py (its own `model_profile` section: parameters, GFLOPs per stage)
All figures are medians over timed repeats (warm-up excluded) with their min–max. The
`suite-<CPU class>` section of BENCHMARKS.md (amx, avx512_bf16, plain, cuda) is rewritten; other
sections, other classes' included, are left alone. `--json` saves the raw results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import model  # noqa: F401  (offline env defaults and the torchvision shim first)
from bench import report
from bench.common import BENCHMARKS_MD, command_line, machine_info, split_list, write_section

ROOT = Path(__file__).resolve().parents[1]

SECTION = "suite"  # + "-<CPU class>": one section per class of CPU (amx, avx512_bf16, plain, cuda)
SCRIPT = "bench.run_all"
MODULES = ("floor", "stages", "changes", "backends", "http", "training", "captioner", "profile")


def make_plan(quick: bool) -> dict[str, Any]:
    """Every setting of a run; quick = tiny sizes and few repeats (a smoke test, < 5 min on 2 cores)."""
    if quick:
        return {
            "quick": True,
            "repeats": 3,
            "warmup": 1,
            "configs": ["semidavil-tiny"],
            "sizes": [[128, 128], [128, 256]],
            "batches": [1, 2],
            "precisions": ["fp32", "bf16"],
            "matmul_sizes": [512, 1024],
            "target_config": "semidavil-tiny",
            "target_size": [128, 256],
            "backend_models": [["checkpoint", None]],
            "backend_target_model": None,  # set from the checkpoint's model
            "backend_batches": [1, 2],
            "backends": ["eager-fp32", "eager-bf16", "compile-bf16", "onnxruntime"],
            "http": {"concurrencies": [1, 4, 8], "requests": 8, "rounds": 1, "repeats": 3},
            "training": {"iters": 4, "warmup": 1},
            "captioner": {"sized": [], "tokens": 20},
            "profile_argv": ["--quick"],
            "changes_freezing": False,
        }
    return {
        "quick": False,
        "repeats": 5,
        "warmup": 1,
        "configs": ["semidavil-vitb16"],
        "sizes": [[512, 512], [512, 1024]],
        "batches": [1, 8],
        "precisions": ["fp32", "bf16"],
        "matmul_sizes": [1024, 2048, 4096],
        "target_config": "semidavil-vitb16",
        "target_size": [512, 1024],
        "backend_models": [["semidavil-vitb16", [512, 1024]], ["checkpoint", None]],
        "backend_target_model": "semidavil-vitb16",
        "backend_batches": [1, 8],
        "backends": None,  # every backend for the device
        "http": {"concurrencies": [1, 4, 8], "requests": 32, "rounds": 3, "repeats": 30},
        "training": {"iters": 20, "warmup": 3},
        "captioner": {"sized": ["blip", "blip2"], "tokens": 20},
        "profile_argv": [],
        "changes_freezing": True,
    }


def _modules(plan: dict[str, Any], args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    from bench import (
        backends,
        captioner_bench,
        changes,
        floor,
        http_bench,
        model_profile,
        stages,
        training_bench,
    )

    sizes = [tuple(s) for s in plan["sizes"]]
    r, w = plan["repeats"], plan["warmup"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "floor": lambda: floor.run(
            plan["configs"], sizes, [1], plan["precisions"], plan["matmul_sizes"], r, w
        ),
        "stages": lambda: stages.run(
            plan["configs"], sizes, plan["batches"], plan["precisions"], r, w, fixtures=args.fixtures
        ),
        "changes": lambda: changes.run(
            plan["target_config"], tuple(plan["target_size"]), r, w, plan["changes_freezing"]
        ),
        "backends": lambda: backends.run(
            [(spec, tuple(size) if size else None) for spec, size in plan["backend_models"]],
            plan["backends"],
            plan["backend_batches"],
            r,
            w,
            fixtures=args.fixtures,
            write=args.write_choice,
            device=device if args.backend_device == "auto" else args.backend_device,
        ),
        "http": lambda: http_bench.run(
            plan["http"]["repeats"],
            w,
            plan["http"]["concurrencies"],
            plan["http"]["requests"],
            plan["http"]["rounds"],
            args.http_backend,
            fixtures=args.fixtures,
        ),
        "training": lambda: training_bench.run(plan["training"]["iters"], plan["training"]["warmup"]),
        "captioner": lambda: captioner_bench.run(
            r, w, plan["captioner"]["sized"], plan["captioner"]["tokens"], fixtures=args.fixtures
        ),
        # --no-write holds for the profile's own section too
        "profile": lambda: {
            "markdown_written": str(
                model_profile.main(
                    [
                        *plan["profile_argv"],
                        "--output",
                        str(args.output),
                        *(["--no-write"] if args.no_write else []),
                    ]
                )["output"]
            )
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SCRIPT, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: tiny model, small sizes, few repeats"
    )
    parser.add_argument(
        "--only", nargs="+", default=None, help=f"modules to run (default all: {','.join(MODULES)})"
    )
    parser.add_argument("--skip", nargs="+", default=None, help="modules to leave out")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 3)")
    parser.add_argument(
        "--captioner-sized",
        default=None,
        help="real-sized random captioners to time: blip,blip2 (default: both in full mode, none in quick)",
    )
    parser.add_argument(
        "--write-choice",
        action="store_true",
        help="write the fastest backend with >= 99.5 %% agreement to serving/backend_choice.json",
    )
    parser.add_argument("--backend-device", default="auto", help="device for the backend benchmark (auto)")
    parser.add_argument(
        "--http-backend",
        default=None,
        help="serving backend for the HTTP benchmark (default: the eager fallback)",
    )
    parser.add_argument(
        "--fixtures", default=None, help="shared fixtures folder (default ../shared/fixtures)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--output", type=Path, default=BENCHMARKS_MD, help="Markdown file (default BENCHMARKS.md)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also save the raw results as JSON here")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="a --json file of an earlier run: modules not selected now are taken from it (same plan)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the report only")
    parser.add_argument(
        "--section",
        help="BENCHMARKS.md section to rewrite (default suite-<CPU class of this machine>, e.g. "
        "suite-amx, suite-avx512_bf16: a run on one class of CPU leaves the others' figures alone)",
    )
    args = parser.parse_args(argv)
    args.only = split_list(args.only) or list(MODULES)
    args.skip = split_list(args.skip)
    unknown = [m for m in [*args.only, *args.skip] if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {', '.join(MODULES)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


# Plan entries that only one module reads: a run that re-measures that module may change them and
# still reuse the other modules' figures (their settings are unchanged).
MODULE_PLAN_KEYS = {
    "http": ("http",),
    "training": ("training",),
    "captioner": ("captioner",),
    "profile": ("profile_argv",),
    "changes": ("changes_freezing",),
}
SAME_MACHINE_KEYS = ("cpu_model", "cpu_flags", "usable_cpus", "torch_threads", "torch", "libraries", "python")


def reused_results(
    path: Path | None, plan: dict[str, Any], machine: dict[str, Any], selected: Sequence[str]
) -> dict[str, Any]:
    """Results of the modules not `selected`, from an earlier run's --json file (None: start empty).

    The earlier run must have used the same plan (sizes, repeats, ...), else its figures would not
    be side by side with the new ones; a mismatch is an error, not a silent mix. Entries read only
    by a module selected now (MODULE_PLAN_KEYS) may differ: that module is measured anew.
    """
    results: dict[str, Any] = {"errors": {}, "durations_s": {}}
    if path is None:
        return results
    saved = json.loads(path.read_text())
    own = {key for name in selected for key in MODULE_PLAN_KEYS.get(name, ())}

    def shared(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k not in own}

    if shared(saved.get("plan") or {}) != shared(json.loads(json.dumps(plan))):
        raise SystemExit(f"{path}: its plan differs from this run's; run every module instead")
    now = json.loads(json.dumps(machine, default=str))
    differ = [k for k in SAME_MACHINE_KEYS if saved.get("machine", {}).get(k) != now.get(k)]
    if differ:
        raise SystemExit(f"{path}: measured on another machine or software ({', '.join(differ)} differ)")
    old = saved["results"]
    reused = [name for name in MODULES if name not in selected and name in old]
    earlier = (old.get("reused") or {}).get("dates", {})  # a reused run may itself reuse older figures
    run_date = saved.get("machine", {}).get("date")
    results["reused"] = {"modules": reused, "dates": {m: earlier.get(m, run_date) for m in reused}}
    for name in reused:
        results[name] = old[name]
        results["durations_s"][name] = old.get("durations_s", {}).get(name, 0.0)
        if name in old.get("errors", {}):
            results["errors"][name] = old["errors"][name]
    return results


def cpu_class() -> str:
    """The class of machine whose figures a run writes: "amx", "avx512_bf16" or "plain" (CPU), or
    "cuda" when the backends run on a GPU; the same key as serving/backend_choice.json's."""
    from model.hardware import resolve_device
    from serving.backends.factory import cpu_feature_key

    return cpu_feature_key(resolve_device("auto"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = make_plan(args.quick)
    if args.repeats:
        plan["repeats"] = args.repeats
    if args.captioner_sized is not None:
        plan["captioner"]["sized"] = split_list([args.captioner_sized])
    if plan["backend_target_model"] is None:
        from serving.loading import load_serving_model

        plan["backend_target_model"] = load_serving_model(None).name
    machine = machine_info()
    machine["cpu_class"] = cpu_class()
    section = args.section or f"{SECTION}-{machine['cpu_class']}"
    print(
        f"[run_all] {'quick' if args.quick else 'full'} run, {machine['torch_threads']} torch thread(s), "
        f"modules: {', '.join(m for m in args.only if m not in args.skip)}",
        file=sys.stderr,
        flush=True,
    )
    modules = _modules(plan, args)
    selected = [m for m in MODULES if m in args.only and m not in args.skip]
    results = reused_results(args.reuse, plan, machine, selected)
    start_all = time.perf_counter()
    for name in selected:
        start = time.perf_counter()
        try:
            results[name] = modules[name]()
        except Exception as err:  # one broken module must not lose the others' numbers
            traceback.print_exc()
            results["errors"][name] = f"{type(err).__name__}: {str(err)[:500]}"
        results["durations_s"][name] = time.perf_counter() - start
        print(f"[run_all] {name}: {results['durations_s'][name]:.0f} s", file=sys.stderr, flush=True)
    results["durations_s"]["total"] = sum(v for k, v in results["durations_s"].items() if k != "total")
    results["durations_s"]["this_run"] = time.perf_counter() - start_all
    text = report.render(results, plan, machine, command_line(SCRIPT, argv))
    print(text)
    if not args.no_write:
        write_section(args.output, section, text)
        print(f"[run_all] wrote section {section!r} of {args.output}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"plan": plan, "machine": machine, "results": results}, indent=1, default=str)
        )
    return {"results": results, "plan": plan, "markdown": text, "machine": machine}


if __name__ == "__main__":
    main()
