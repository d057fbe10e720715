"""Run the synthetic driving-scene benchmark end to end and write RESULTS.md.

    python bench/synthetic_benchmark.py                 # generate data if needed, run every row
    python bench/synthetic_benchmark.py --rows full source_only --set optim.iters=300

Each row is `training/run.py --config training/configs/synthetic_<row>.yaml` (the same trainer as
the paper rows); runs resume if interrupted. RESULTS.md gets per-class IoU, mIoU, the mean IoU of
the five rarest classes (by target-train pixel share), wall time per row, the targets of the
training issue with PASS/FAIL, and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "bench" / "synthetic_benchmark_notes.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import format_machine, machine_info, markdown_table, training_command, write_section  # noqa: E402

RESULTS_TITLE = "# Results"
RESULTS_INTRO = (
    "Accuracy of the training recipes on this machine: the synthetic benchmark"
    " (`python bench/synthetic_benchmark.py`) and the real Cityscapes frames (`python bench/real_frames.py`)."
)

ROWS = ("source_only", "target_only", "ct", "ct_dyce", "ct_dlg", "full")
ROW_TITLES = {
    "source_only": "source only",
    "target_only": "target only (same labeled images)",
    "ct": "CT",
    "ct_dyce": "CT + DyCE",
    "ct_dlg": "CT + DLG",
    "full": "CT + DyCE + DLG (full)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to run (default: all)")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic", help="benchmark data folder")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "synthetic", help="run folders go here")
    p.add_argument("--results", type=Path, default=ROOT / "RESULTS.md", help="Markdown report to write")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every row")
    p.add_argument("--fresh", action="store_true", help="restart rows instead of resuming/reusing them")
    p.add_argument("--report-only", action="store_true", help="only rebuild RESULTS.md from finished runs")
    p.add_argument(
        "--notes", type=Path, default=NOTES, help="hand-written analysis appended to the report if it exists"
    )
    return p.parse_args(argv)


def ensure_data(data: Path) -> dict[str, Any]:
    """Generate the benchmark with its default protocol if it is not there (idempotent)."""
    from training.synthetic.writer import generate_benchmark

    return generate_benchmark(data, progress=True)


def run_row(row: str, args: argparse.Namespace) -> float:
    """Train + evaluate one row in a subprocess; returns wall seconds (0 if reused)."""
    run_dir = args.runs / f"synthetic_{row}"
    if (run_dir / "eval_final.json").is_file() and not args.fresh:
        return 0.0
    sets = [
        f"output_dir={args.runs}",
        f"data.source.root={args.data / 'source'}",
        f"data.target.root={args.data / 'target'}",
    ]
    cmd = training_command(ROOT / "training" / "configs" / f"synthetic_{row}.yaml", [*sets, *args.set])
    if args.fresh:
        cmd.append("--fresh")
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    (run_dir / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def rarest_classes(meta: dict[str, Any], classes: list[str], n: int = 5) -> list[str]:
    share = meta["pixel_share"]["target/train"]
    present = [c for c in classes if share.get(c, 0) > 0]
    return sorted(present, key=lambda c: share[c])[:n]


def load_row(row: str, runs: Path) -> dict[str, Any] | None:
    run_dir = runs / f"synthetic_{row}"
    path = run_dir / "eval_final.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    wall = run_dir / "wall_seconds.json"
    report["seconds"] = json.loads(wall.read_text())["seconds"] if wall.is_file() else None
    return report


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _fmt(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def targets(res: dict[str, dict[str, Any]], rare: list[str]) -> list[list[str]]:
    """The training issue's targets as table rows (claim, numbers, PASS/FAIL/not run)."""

    def miou(row: str) -> float | None:
        return res[row]["miou"] if row in res else None

    def rare_miou(row: str) -> float | None:
        return _mean([res[row]["iou"].get(c) for c in rare]) if row in res else None

    def verdict(ok: bool | None) -> str:
        return "not run" if ok is None else ("PASS" if ok else "FAIL")

    def gap(a: str, b: str, need: float) -> list[str]:
        x, y = miou(a), miou(b)
        ok = None if x is None or y is None else x - y >= need
        return [f"{ROW_TITLES[a]} - {ROW_TITLES[b]} >= {need:g} mIoU", f"{_fmt(x)} - {_fmt(y)}", verdict(ok)]

    def rare_gain(a: str, b: str) -> list[str]:
        x, y = rare_miou(a), rare_miou(b)
        ok = None if x is None or y is None else x > y
        return [
            f"DyCE raises rare-5 mIoU: {ROW_TITLES[a]} > {ROW_TITLES[b]}",
            f"{_fmt(x, 2)} vs {_fmt(y, 2)}",
            verdict(ok),
        ]

    rows = [gap("full", "source_only", 15.0), gap("full", "target_only", 5.0)]
    rows += [rare_gain("ct_dyce", "ct"), rare_gain("full", "ct_dlg")]
    slow = [r for r, v in res.items() if v.get("seconds") and v["seconds"] > 900]
    timed = [r for r, v in res.items() if v.get("seconds")]
    rows.append(["each row <= 15 min wall", ", ".join(f"{r} {res[r]['seconds'] / 60:.1f}" for r in timed) or "n/a",
                 verdict(None if not timed else not slow)])  # fmt: skip
    return rows


def analysis(notes: Path) -> list[str]:
    """The hand-written analysis (what the logs show, why a target is missed) as report lines."""
    if not notes.is_file():
        return []
    return ["## Analysis", "", notes.read_text().strip(), ""]


def write_results(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    res = {row: r for row in ROWS if (r := load_row(row, args.runs)) is not None}
    classes = meta["classes"]
    rare = rarest_classes(meta, classes)
    header = ["row", "mIoU", "rare-5 mIoU", "minutes", *classes]
    rows = []
    for row, r in res.items():
        per_class = [_fmt(r["iou"].get(c)) for c in classes]
        minutes = f"{r['seconds'] / 60:.1f}" if r.get("seconds") else "n/a"
        rows.append(
            [
                ROW_TITLES[row],
                _fmt(r["miou"]),
                _fmt(_mean([r["iou"].get(c) for c in rare])),
                minutes,
                *per_class,
            ]
        )
    cfg_note = " ".join(f"--set {s}" for s in args.set) or "(defaults)"
    text = "\n".join([
        "# Synthetic driving-scene benchmark: results",
        "",
        "Source look (game engine) -> target look (camera) on procedurally generated driving scenes in",
        "Cityscapes train ids, the tiny model (`semidavil-tiny`), the same trainer and recipe as the paper",
        "rows. Target val mIoU (%) of the EMA teacher, whole-image inference at 128x256.",
        "CLIP weights cannot be downloaded here, so the CLIP towers start from random weights: the",
        "**VLP ingredient cannot be shown** on this benchmark, and absolute numbers say nothing about the",
        "paper's. Rows and data: `training/configs/synthetic_*.yaml`,",
        f"{meta['counts']} images of {meta['settings']['height']}x{meta['settings']['width']} px, seed {meta['settings']['seed']}.",
        "",
        f"Command: `python bench/synthetic_benchmark.py {cfg_note}`",
        "",
        markdown_table(header, rows),
        "",
        f"Rarest five target classes by pixel share: {', '.join(rare)}.",
        "",
        "## Targets",
        "",
        markdown_table(["target", "numbers", "result"], targets(res, rare)),
        "",
        *analysis(args.notes),
        "## Machine",
        "",
        format_machine(machine_info()),
        "",
    ])  # fmt: skip
    # one section of RESULTS.md (headings one level down), so the real-frames section stays
    text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
    write_section(args.results, "synthetic", text, title=RESULTS_TITLE, intro=RESULTS_INTRO)
    return text


def main(argv: list[str] | None = None) -> int:
    import model  # noqa: F401  (offline env defaults)

    args = parse_args(argv)
    meta = ensure_data(args.data)
    if not args.report_only:
        for row in args.rows:
            seconds = run_row(row, args)
            print(f"{row}: {seconds / 60:.1f} min", flush=True)
    print(write_results(args, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
