"""One prepared GPU check: everything a few minutes on one GPU should measure, in one command.

    make gpu-check                    # python -m bench.gpu_check (CUDA; about 5-8 min on one H200)
    make gpu-check DRY_RUN=1          # the same code on CPU, tiny model, small sizes (< 2 min)
    python -m bench.gpu_check --wheels /path/to/wheels   # a GPU host without a package registry

Steps (each one's failure is recorded and the next one runs, so one bad step costs no GPU time):
  floor      the GPU's measured bf16 / fp32 matmul peak (TFLOP/s) and the plain open_clip visual tower
  backends   the segmentation graph of semidavil-vitb16 at 512x1024, batch 1 and 8: eager fp32, eager
             bf16, torch.compile bf16, Torch-TensorRT bf16 (where it imports; otherwise the row says
             why); latency and argmax agreement against eager fp32 (bench/backends.py)
  training   one training step at the paper's crop and batch (512x512; source + labelled + unlabelled,
             2 each), bf16: it/s and peak memory (bench/training_bench.py)
  predictor  the end-to-end Predictor on a 2048x1024 fixture frame (decode .. label map)
Writes `results/gpu_check.json` and the `gpu-check` section of BENCHMARKS.md (a dry run writes
under --out only, so it never replaces a GPU section).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# What the GPU host lacks (no registry there): installed from --wheels before anything imports them.
GPU_HOST_PACKAGES = (
    "open_clip_torch",
    "ftfy",
    "regex",
    "safetensors",
    "timm",
    "opencv-python-headless",
    "pyyaml",
)
PLANS: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda",
        "config": "semidavil-vitb16",
        "size": (512, 1024),
        "batches": (1, 8),
        "backends": ("eager-fp32", "eager-bf16", "compile-bf16", "tensorrt-bf16"),
        "repeats": 10,
        "warmup": 3,
        "matmul": (4096, 8192),
        "train": "PAPER",
        "train_iters": (10, 3),
        "train_amp": "bf16",
    },
    "dry": {
        "device": "cpu",
        "config": "semidavil-tiny",
        "size": (128, 256),
        "batches": (1, 2),
        "backends": ("eager-fp32", "eager-bf16"),
        "repeats": 2,
        "warmup": 1,
        "matmul": (256,),
        "train": "TINY",
        "train_iters": (2, 1),
        # The rehearsal runs the trainer's code path in fp32: CPU bf16 autocast is not the CUDA one
        # it would rehearse, and without AVX512-BF16 it took 18 s here against 8 s in fp32.
        "train_amp": "off",
    },
}
FIXTURE_FRAME = ROOT.parent / "shared" / "fixtures" / "real" / "cityscapes" / "leftImg8bit" / "val"


def install_wheels(folder: Path) -> None:
    """pip install the packages the GPU host lacks from a folder of wheels (no index)."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(folder)]
    for package in GPU_HOST_PACKAGES:  # one at a time: one the host already has is simply satisfied
        subprocess.run([*cmd, package], check=True)


def _sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def matmul_peak(device: str, sizes: Sequence[int], repeats: int) -> dict[str, float]:
    """Best measured TFLOP/s of torch.mm per precision over `sizes` on `device` (bench/floor.py)."""
    from bench.floor import matmul_throughput

    best = matmul_throughput(sizes, ("fp32", "bf16"), repeats, 1, device=device)["best"]
    return {precision: b["flops_per_s"] / 1e12 for precision, b in best.items()}


def plain_tower(config: str, size: tuple[int, int], batch: int, device: str, repeats: int) -> dict[str, Any]:
    """open_clip's own visual tower of the config, bf16 autocast, batch `batch`: latency."""
    import torch

    from bench.common import median_time
    from bench.floor import plain_visual_tower

    tower = plain_visual_tower(config, size).to(device)
    x = torch.randn(batch, 3, *size, device=device)
    sync = _sync(device)
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        stat = median_time(lambda: (tower(x), sync()), repeats, 1)
    return {"config": config, "size": list(size), "batch": batch, "time": stat}


def predictor_end_to_end(device: str, repeats: int) -> dict[str, Any]:
    """The Predictor (embedded default checkpoint, eager fp32) on a 2048x1024 fixture frame."""
    from bench.common import median_time
    from serving.predictor import Predictor

    frame = next(iter(sorted(FIXTURE_FRAME.rglob("*_leftImg8bit.*"))), None)
    if frame is None:
        raise FileNotFoundError(f"no fixture frame under {FIXTURE_FRAME}")
    data = frame.read_bytes()
    predictor = Predictor.from_checkpoint(None, backend="eager-fp32", device=device, captioner="none")
    pred = predictor.predict(data, caption="a city street")
    stat = median_time(lambda: predictor.predict(data, caption="a city street"), repeats, 1)
    return {"frame": frame.name, "size": list(pred.input_size), "time": stat, "stages_ms": pred.timings_ms}


def run_steps(plan: dict[str, Any]) -> dict[str, Any]:
    """Every step of the plan; a failing step is recorded with its error and the others still run."""
    from bench import backends, training_bench

    device, config, size = plan["device"], plan["config"], plan["size"]
    steps: dict[str, Callable[[], Any]] = {
        "floor": lambda: {
            "matmul_tflops": matmul_peak(device, plan["matmul"], plan["repeats"]),
            "plain_tower": [plain_tower(config, size, b, device, plan["repeats"]) for b in plan["batches"]],
        },
        "backends": lambda: backends.bench_model(
            config, size, plan["backends"], plan["batches"], plan["repeats"], plan["warmup"], device=device
        ),
        "training": lambda: training_bench.measure(
            config, getattr(training_bench, plan["train"]), *plan["train_iters"], device, plan["train_amp"]
        ),
        "predictor": lambda: predictor_end_to_end(device, plan["repeats"]),
    }
    out: dict[str, Any] = {}
    for name, step in steps.items():
        start = time.perf_counter()
        print(f"[gpu-check] {name} ...", file=sys.stderr, flush=True)
        try:
            out[name] = {"result": step(), "error": None}
        except Exception as err:  # a result, not a crash: the remaining steps still run
            out[name] = {
                "result": None,
                "error": f"{type(err).__name__}: {err}",
                "trace": traceback.format_exc(),
            }
        out[name]["seconds"] = round(time.perf_counter() - start, 1)
    return out


def render(results: dict[str, Any], plan_name: str) -> str:
    """The BENCHMARKS.md section: one table per step, errors stated where a step failed."""
    from bench.common import format_machine, markdown_table

    s = results["steps"]
    lines = [
        f"## GPU check ({plan_name}: `python -m bench.gpu_check{' --dry-run' if plan_name == 'dry' else ''}`)",
        "",
    ]
    for name, step in s.items():
        if step["error"]:
            lines += [f"- **{name}** failed after {step['seconds']} s: `{step['error'][:300]}`"]
    floor = (s.get("floor") or {}).get("result")
    if floor:
        mm = floor["matmul_tflops"]
        lines += [
            "",
            f"Measured matmul peak: bf16 {mm['bf16']:.3g} TFLOP/s, fp32 {mm['fp32']:.3g} TFLOP/s.",
            "",
        ]
        rows = [[r["batch"], f"{1000 * r['time']['median']:.2f}"] for r in floor["plain_tower"]]
        lines += [markdown_table(["plain open_clip visual tower, bf16: batch", "ms"], rows, "rr"), ""]
    back = (s.get("backends") or {}).get("result")
    if back:
        rows = []
        for r in back["rows"]:
            lat = [
                f"{1000 * r[f'latency_b{b}']['median']:.2f}" if r.get(f"latency_b{b}") else "-"
                for b in back["batches"]
            ]
            agree = r.get("agreement", {}).get("agreement")
            rows.append(
                [r["backend"], *lat, "-" if agree is None else f"{100 * agree:.3f} %", r["error"] or ""]
            )
        header = ["backend", *(f"batch {b} ms" for b in back["batches"]), "argmax agreement vs fp32", "note"]
        lines += [f"Segmentation graph, {back['model']} at {back['size'][0]}x{back['size'][1]}:", ""]
        lines += [markdown_table(header, rows, "l" + "r" * (len(header) - 2) + "l"), ""]
    train = (s.get("training") or {}).get("result")
    if train:
        peak = train.get("cuda_peak_bytes")
        mem = f", peak memory {peak / 2**30:.1f} GiB" if peak else ""
        lines += [
            f"Training step ({train['config']}, crop {train['crop']}, {train['amp']}): {train['it_per_s']:.2f} it/s{mem}.",
            "",
        ]
    pred = (s.get("predictor") or {}).get("result")
    if pred:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in pred["stages_ms"].items())
        lines += [
            f"Predictor on {pred['frame']} ({pred['size'][1]}x{pred['size'][0]}): {1000 * pred['time']['median']:.1f} ms ({stages} ms).",
            "",
        ]
    lines += ["Machine:", "", format_machine(results["machine"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (< 2 min)")
    p.add_argument(
        "--wheels", type=Path, help="install the packages the GPU host lacks from this folder first"
    )
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON (and, dry, the Markdown)")
    args = p.parse_args(argv)
    if args.wheels:
        install_wheels(args.wheels)
    import model  # noqa: F401  (offline env defaults, torchvision shim)
    from bench.common import machine_info, write_section

    plan_name = "dry" if args.dry_run else "gpu"
    plan = PLANS[plan_name]
    if plan["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA GPU here; use --dry-run for the CPU rehearsal", file=sys.stderr)
            return 2
    results = {"plan": plan_name, "machine": machine_info(), "steps": run_steps(plan)}
    out = args.out or (ROOT / "results" if plan_name == "gpu" else Path("gpu-check-dry"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_check_{plan_name}.json").write_text(json.dumps(results, indent=1, default=str))
    markdown = ROOT / "BENCHMARKS.md" if plan_name == "gpu" else out / "gpu_check.md"
    write_section(markdown, "gpu-check", render(results, plan_name))
    failed = [k for k, v in results["steps"].items() if v["error"]]
    print(
        f"wrote {out / f'gpu_check_{plan_name}.json'} and {markdown}"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
