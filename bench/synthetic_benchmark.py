"""Table 3 in miniature on the synthetic benchmark: every ablation row, 3 seeds, RESULTS.md + JSON.

    python -m bench.synthetic_benchmark                 # data, pre-trained towers, every row x seed
    python -m bench.synthetic_benchmark --rows full ct --seeds 0 --set optim.iters=300
    python -m bench.synthetic_benchmark --report-only   # rebuild the reports from finished runs

Each (row, seed) is `training/run.py --config training/configs/synthetic_<row>.yaml --set seed=S`
in `runs/synthetic/synthetic_<row>_s<S>` (resumes when interrupted); a finished one is recorded in
`results/synthetic/synthetic_<row>_s<S>.json` (committed; a recorded run is never re-run, and the
reports are built from the records, so they survive checkouts without run folders). The VLP
rows load the mini-VLP towers (`runs/vlp-tiny`), the "w/o VLP" rows a vision-only visual tower
(`runs/vision-tiny`) beside the same text tower; both are pre-trained first when missing
(`python -m training.pretrain`). Reports: the `synthetic` section of RESULTS.md (mean +- sd over
seeds, rare-5 mIoU, paired differences with the issue's targets) and `results/synthetic.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_INTRO,
    RESULTS_TITLE,
    ensure_pretrained,
    fmt_fixed,
    format_machine,
    machine_info,
    markdown_table,
    mean_of,
    record_run,
    training_command,
    write_section,
)

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "bench" / "synthetic_benchmark_notes.md"

SEEDS = (0, 1, 2)
RECORDS = ROOT / "results" / "synthetic"
TOWERS = {"clip": ROOT / "runs" / "vlp-tiny", "vision": ROOT / "runs" / "vision-tiny"}


@dataclass(frozen=True)
class Row:
    """A table row: its config key and the name in the tables and in results/synthetic.json."""

    key: str
    name: str

    def experiment(self, seed: int) -> str:
        return f"synthetic_{self.key}_s{seed}"


ROWS = (
    Row("source_only", "source only"),
    Row("target_only", "target only"),
    Row("ct", "CT"),
    Row("ct_dyce", "CT+DyCE"),
    Row("ct_vlp", "CT+VLP"),
    Row("ct_vlp_dlg", "CT+VLP+DLG"),
    Row("full", "full"),
    Row("full_shuffled", "full shuffled captions"),
)
ROW_KEYS = tuple(r.key for r in ROWS)
BY_KEY = {r.key: r for r in ROWS}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rows", nargs="+", default=list(ROW_KEYS), choices=ROW_KEYS, help="rows to run (default: all)"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds per row")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic", help="benchmark data folder")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "synthetic", help="run folders go here")
    p.add_argument("--records", type=Path, default=RECORDS, help="finished runs' evaluations (committed)")
    p.add_argument("--results", type=Path, default=ROOT / "RESULTS.md", help="Markdown report (a section)")
    p.add_argument(
        "--json", type=Path, default=ROOT / "results" / "synthetic.json", help="machine-readable results"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every row")
    p.add_argument("--report-only", action="store_true", help="only rebuild the reports from finished runs")
    p.add_argument("--notes", type=Path, default=NOTES, help="hand-written analysis appended if it exists")
    return p.parse_args(argv)


def ensure_data(data: Path) -> dict[str, Any]:
    """Generate the benchmark with its default protocol if it is not there (idempotent)."""
    from training.synthetic.writer import generate_benchmark

    return generate_benchmark(data, progress=True)


def ensure_towers() -> None:
    """Pre-train the rows' towers once (`model.pretrained` / `model.visual_pretrained` of the rows)."""
    for objective, out in TOWERS.items():
        ensure_pretrained("semidavil-tiny", out, "--objective", objective)


def record_path(records: Path, row: Row, seed: int) -> Path:
    return records / f"{row.experiment(seed)}.json"


def run_row(row: Row, seed: int, args: argparse.Namespace) -> None:
    """Train + evaluate one (row, seed) in a subprocess unless it is recorded (resumes otherwise),
    then record its evaluation in `args.records`."""
    run_dir, record = args.runs / row.experiment(seed), record_path(args.records, row, seed)
    if record.is_file():
        return
    if not (run_dir / "eval_final.json").is_file():
        train_row(row, seed, args)
    record_run(run_dir, record)


def record_finished(args: argparse.Namespace) -> list[Path]:
    """Record every finished run folder of the asked rows and seeds that has no record yet (a run
    finished by an earlier version of this script, or by `training.run` by hand); the new records."""
    written = []
    for row in (BY_KEY[k] for k in args.rows):
        for seed in args.seeds:
            run_dir, record = args.runs / row.experiment(seed), record_path(args.records, row, seed)
            if (run_dir / "eval_final.json").is_file() and not record.is_file():
                record_run(run_dir, record)
                written.append(record)
    return written


def train_row(row: Row, seed: int, args: argparse.Namespace) -> None:
    """`training.run` of one (row, seed) with the benchmark's data and run folders."""
    sets = [
        f"output_dir={args.runs}",
        f"experiment={row.experiment(seed)}",
        f"seed={seed}",
        f"data.source.root={args.data / 'source'}",
        f"data.target.root={args.data / 'target'}",
    ]
    cmd = training_command(ROOT / "training" / "configs" / f"synthetic_{row.key}.yaml", [*sets, *args.set])
    subprocess.run(cmd, check=True, cwd=ROOT)


def rarest_classes(meta: dict[str, Any], classes: list[str], n: int = 5) -> list[str]:
    """The n classes with the smallest non-zero pixel share in target train."""
    share = meta["pixel_share"]["target/train"]
    present = [c for c in classes if share.get(c, 0) > 0]
    return sorted(present, key=lambda c: share[c])[:n]


def load_runs(row: Row, records: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """The recorded seeds of a row: {seed: eval_final.json plus `minutes` (the trainer's wall time)}."""
    out = {}
    for seed in seeds:
        path = record_path(records, row, seed)
        if path.is_file():
            out[seed] = json.loads(path.read_text())
    return out


def _sd(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def row_summary(runs: dict[int, dict[str, Any]], rare: list[str]) -> dict[str, Any]:
    """mIoU mean and sd over seeds, per-seed mIoU, rare-5 mean, minutes (mean per seed)."""
    seeds = sorted(runs)
    mious = [float(runs[s]["miou"]) for s in seeds]
    rare5 = [mean_of([runs[s]["iou"].get(c) for c in rare]) for s in seeds]
    minutes = [runs[s]["minutes"] for s in seeds if runs[s].get("minutes")]
    return {
        "miou_mean": mean_of(mious),
        "miou_sd": _sd(mious),
        "seeds": mious,
        "seed_ids": seeds,
        "rare5_mean": mean_of(rare5),
        "minutes": mean_of(minutes),
    }


def paired(
    results: dict[str, dict[int, dict[str, Any]]], a: str, b: str
) -> tuple[float, float | None, int] | None:
    """Mean and sd of mIoU(a) - mIoU(b) over the seeds both rows finished, and their count."""
    common = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    if not common:
        return None
    diffs = [float(results[a][s]["miou"]) - float(results[b][s]["miou"]) for s in common]
    return statistics.fmean(diffs), _sd(diffs), len(common)


# (row a, row b, required mean gap): each also needs the gap larger than its paired sd
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("ct_dyce", "ct", 0.0),
    ("ct_vlp", "ct", 0.0),
    ("ct_vlp_dlg", "ct_vlp", 0.0),
    ("full", "source_only", 15.0),
    ("full", "target_only", 5.0),
    ("full", "full_shuffled", 1.0),
    ("full", "ct", 0.0),
    ("full", "ct_dyce", 0.0),
    ("full", "ct_vlp", 0.0),
    ("full", "ct_vlp_dlg", 0.0),
)


def target_rows(results: dict[str, dict[int, dict[str, Any]]]) -> list[list[str]]:
    """Each target as [claim, mean gap +- paired sd (n seeds), verdict]."""
    rows = []
    for a, b, need in TARGETS:
        claim = f"{BY_KEY[a].name} - {BY_KEY[b].name} {'>' if need == 0 else '>='} {need:g}, gap > paired sd"
        p = paired(results, a, b)
        if p is None:
            rows.append([claim, "n/a", "not run"])
            continue
        mean, sd, n = p
        ok = (mean > need if need == 0 else mean >= need) and (sd is None or mean > sd)
        verdict = ("PASS" if ok else "FAIL") + ("" if n >= 3 else f" ({n} seed{'s' if n > 1 else ''})")
        rows.append([claim, f"{mean:+.1f} +- {fmt_fixed(sd)} (n={n})", verdict])
    return rows


def results_json(
    summaries: dict[str, dict[str, Any]], commit: str, machine: dict[str, Any]
) -> dict[str, Any]:
    """The machine-readable results: {"rows": {name: {...}}, "machine": {...}, "commit": "..."}."""
    keep = ("miou_mean", "miou_sd", "seeds", "rare5_mean", "minutes")
    rows = {BY_KEY[k].name: {f: s[f] for f in keep} for k, s in summaries.items()}
    return {"rows": rows, "machine": machine, "commit": commit}


def analysis(notes: Path) -> list[str]:
    """The hand-written analysis (what the logs show, why a target is missed) as report lines."""
    if not notes.is_file():
        return []
    return ["## Analysis", "", notes.read_text().strip(), ""]


def write_results(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """Write RESULTS.md's `synthetic` section and results/synthetic.json; returns the section text."""
    results = {r.key: runs for r in ROWS if (runs := load_runs(r, args.records, args.seeds))}
    classes = meta["classes"]
    rare = rarest_classes(meta, classes)
    summaries = {k: row_summary(v, rare) for k, v in results.items()}
    header = ["row", "mIoU mean +- sd", "per seed", "rare-5 mIoU", "minutes", *classes]
    table = []
    for key, runs in results.items():
        s = summaries[key]
        per_class = [fmt_fixed(mean_of([runs[seed]["iou"].get(c) for seed in runs])) for c in classes]
        seeds = ", ".join(f"{m:.1f}" for m in s["seeds"])
        table.append([BY_KEY[key].name, f"{fmt_fixed(s['miou_mean'])} +- {fmt_fixed(s['miou_sd'])}", seeds,
                      fmt_fixed(s["rare5_mean"], 2), fmt_fixed(s["minutes"]), *per_class])  # fmt: skip
    machine = machine_info()
    cfg_note = " ".join(f"--set {s}" for s in args.set) or "(defaults)"
    text = "\n".join([
        "# Synthetic driving-scene benchmark: Table 3 in miniature",
        "",
        "Source look (game engine) -> target look (camera) on procedurally generated driving scenes, the",
        "tiny model, the paper rows' trainer and recipe. Target val mIoU (%) of the EMA teacher, whole-image",
        "inference at 128x256, mean +- sd over seeds. VLP rows start from the mini-VLP towers",
        "(`runs/vlp-tiny`), w/o VLP rows from a vision-only visual tower (`runs/vision-tiny`) with the same",
        "text tower; every row of one seed starts from the same decoder weights. Rows:",
        f"`training/configs/synthetic_*.yaml`; data: {meta['counts']} images of "
        f"{meta['settings']['height']}x{meta['settings']['width']} px, generator version {meta.get('version', '1')}, "
        f"seed {meta['settings']['seed']}.",
        "",
        f"Command: `python -m bench.synthetic_benchmark {cfg_note}`",
        "",
        markdown_table(header, table),
        "",
        f"Rarest five target classes by pixel share: {', '.join(rare)}.",
        "",
        "## Targets (paired over seeds)",
        "",
        markdown_table(["target", "mean gap +- sd", "result"], target_rows(results)),
        "",
        *analysis(args.notes),
        "## Machine",
        "",
        format_machine(machine),
        "",
    ])  # fmt: skip
    # one section of RESULTS.md (headings one level down), so the other sections stay
    text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
    write_section(args.results, "synthetic", text, title=RESULTS_TITLE, intro=RESULTS_INTRO)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(results_json(summaries, machine.get("git", "unknown"), machine), indent=1)
    )
    return text


def main(argv: list[str] | None = None) -> int:
    import model  # noqa: F401  (offline env defaults)

    args = parse_args(argv)
    meta = ensure_data(args.data)
    record_finished(args)
    if not args.report_only:
        ensure_towers()
        for seed in args.seeds:  # every row's seed 0 first: a partial table is already a table
            for key in args.rows:
                run_row(BY_KEY[key], seed, args)
    print(write_results(args, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
