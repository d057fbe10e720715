"""Real target frames: run the rows of `training/configs/real_*.yaml` and write RESULTS.md's section.

    python -m bench.real_frames                       # every row, resumable; then the report
    python -m bench.real_frames --rows full target_only --report-only

Synthetic source -> real Cityscapes target in miniature (../shared/fixtures/real, read in place):
8 labelled train frames, 170 unlabelled frames, evaluated on the 3 labelled frankfurt val frames at
full label resolution. Each row is `training/run.py --config training/configs/real_<row>.yaml`
with `--set seed=<s> --set experiment=real_<row>[_s<s>]`; a killed row resumes from its state file
when this command is run again, a finished row is reused. The report gives per-row mIoU (mean over
seeds) both as the official script computes it (a class counts when it is in the labels or in the
predictions) and over the classes present in the val labels, the per-class table, wall times,
the issue's targets, and writes picture grids (input | prediction | ground truth) of the val
frames and of `other/` (input | prediction) into the best row's run folder (not committed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

REAL = ROOT.parent / "shared" / "fixtures" / "real"
NOTES = ROOT / "bench" / "real_frames_notes.md"
BIG_FIVE = ("road", "building", "vegetation", "sky", "car")


@dataclass(frozen=True)
class Row:
    """One table row: a config and the seeds it runs with."""

    key: str
    title: str
    seeds: tuple[int, ...]

    def experiment(self, seed: int) -> str:
        return f"real_{self.key}" + ("" if seed == 0 else f"_s{seed}")


ROWS = (
    Row("source_only", "source only", (0,)),
    Row("target_only", "target only (same 8 labels)", (0, 1)),
    Row("ct_dyce", "CT + DyCE", (0,)),
    Row("full", "full (CT + DyCE + DLG)", (0, 1)),
)
ROW_KEYS = tuple(r.key for r in ROWS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, default=RECORDS, help="finished rows' evaluations (committed)")
    p.add_argument("--rows", nargs="+", default=list(ROW_KEYS), choices=ROW_KEYS, help="rows to run")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "real", help="run folders go here")
    p.add_argument("--results", type=Path, default=ROOT / "RESULTS.md", help="Markdown report (a section)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every row")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--no-grids", action="store_true", help="skip the picture grids")
    return p.parse_args(argv)


# A finished row's evaluation (eval_final.json plus its wall time) is also kept here, committed: run
# folders (runs/, weights and state) are not, and a fresh clone should not re-train a finished row to
# rebuild the table.
RECORDS = ROOT / "results" / "real"
# Records of earlier models' rows, kept for comparison: (folder under RECORDS, what the model was)
ARCHIVES = (
    (
        "cnn-gen-v1",
        "`semidavil-small-cnn` on generator version 1's source scenes (the rows and the default before"
        " 2026-12-07's re-run on version 2; target only reads no source, so its rows are the same runs)",
    ),
    (
        "vit-small",
        "`semidavil-small` (ViT/16 tower from its mini-VLP towers; the model of the rows before 2026-12-07)",
    ),
)


def record_path(records: Path, row: Row, seed: int) -> Path:
    return records / f"{row.experiment(seed)}.json"


def run_row(row: Row, seed: int, args: argparse.Namespace) -> None:
    """Train + evaluate one (row, seed) in a subprocess unless it is finished (resumes otherwise),
    then record its evaluation in `args.records`."""
    run_dir, record = args.runs / row.experiment(seed), record_path(args.records, row, seed)
    if record.is_file():
        return
    if not (run_dir / "eval_final.json").is_file():
        sets = [f"output_dir={args.runs}", f"experiment={row.experiment(seed)}", f"seed={seed}", *args.set]
        cmd = training_command(ROOT / "training" / "configs" / f"real_{row.key}.yaml", sets)
        subprocess.run(cmd, check=True, cwd=ROOT)
    record_run(run_dir, record)


VLP_RUN = ROOT / "pretrained" / "vlp-small"  # clip.safetensors and report.json are committed (.gitignore)


def ensure_towers(out: Path = VLP_RUN) -> None:
    """The rows' pre-trained towers (model.pretrained in real_base.yaml): run the mini-VLP once."""
    ensure_pretrained("semidavil-small", out, "--val-size", "256", "512")


def run_order(keys: list[str]) -> list[tuple[Row, int]]:
    """(row, seed) in the order asked for: every row's first seed, then the further seeds."""
    rows = [next(r for r in ROWS if r.key == key) for key in keys]
    return [(r, r.seeds[0]) for r in rows] + [(r, s) for r in rows for s in r.seeds[1:]]


def present_miou(report: dict[str, Any]) -> tuple[float, list[str]]:
    """mIoU (%) over the classes with ground-truth pixels in the val labels, and those classes."""
    matrix = np.asarray(report["confusion_matrix"], dtype=np.int64)
    names = list(report["iou"])
    present = [n for i, n in enumerate(names) if matrix[i].sum() > 0]
    return float(np.mean([report["iou"][n] for n in present])), present


def load_runs(row: Row, runs: Path, records: Path) -> list[dict[str, Any]]:
    """The finished seeds of a row: their records (eval_final.json plus `minutes`) plus `seed`,
    `miou_present` and `run_dir` (None when the run folder is gone)."""
    out = []
    for seed in row.seeds:
        run_dir, path = runs / row.experiment(seed), record_path(records, row, seed)
        has_run = (run_dir / "eval_final.json").is_file()
        if has_run and not path.is_file():
            record_run(run_dir, path)  # finished before records existed
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        report["miou_present"], report["present"] = present_miou(report)
        # the grids need the run's weights, which only the run folder has
        report["seed"], report["run_dir"] = seed, run_dir if has_run else None
        out.append(report)
    return out


def row_table(results: dict[str, list[dict[str, Any]]], classes: list[str]) -> str:
    header = ["row", "seeds", "mIoU (present classes)", "per seed", "mIoU (official)", "minutes", *classes]
    rows = []
    for row in ROWS:
        runs = results.get(row.key) or []
        if not runs:
            rows.append([row.title, "not run", *[""] * (len(header) - 2)])
            continue
        per_seed = " / ".join(f"{r['miou_present']:.1f}" for r in runs)
        ious = [fmt_fixed(mean_of([r["iou"][c] for r in runs])) for c in classes]
        rows.append([
            row.title, ",".join(str(r["seed"]) for r in runs), f"**{mean_of([r['miou_present'] for r in runs]):.1f}**",
            per_seed, fmt_fixed(mean_of([r["miou"] for r in runs])), fmt_fixed(mean_of([r["minutes"] for r in runs])), *ious,
        ])  # fmt: skip
    return markdown_table(header, rows)


def targets(results: dict[str, list[dict[str, Any]]]) -> list[list[str]]:
    """The issue's targets: full >= 35; full >= target only + 3; the big five classes >= 60 in full."""

    def miou(key: str) -> float | None:
        return mean_of([r["miou_present"] for r in results.get(key) or []])

    def verdict(ok: bool | None) -> str:
        return "not run" if ok is None else ("PASS" if ok else "FAIL")

    full, target = miou("full"), miou("target_only")
    rows = [["full >= 35 mIoU", fmt_fixed(full), verdict(None if full is None else full >= 35)]]
    ok = None if full is None or target is None else full >= target + 3
    rows.append(["full >= target only + 3", f"{fmt_fixed(full)} vs {fmt_fixed(target)}", verdict(ok)])
    for name in BIG_FIVE:
        iou = mean_of([r["iou"][name] for r in results.get("full") or []])
        rows.append([f"full: {name} IoU >= 60", fmt_fixed(iou), verdict(None if iou is None else iou >= 60)])
    return rows


def write_report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    any_run = next((r for runs in results.values() for r in runs), None)
    classes = list(any_run["iou"]) if any_run else []
    present = any_run["present"] if any_run else []
    body = "\n".join([
        "## Real frames",
        "",
        "Synthetic source (the generator's source look, version 2, 1000 scenes) -> **real Cityscapes frames**",
        "(`../shared/fixtures/real`): 8 labelled train frames, 170 unlabelled frames (145 sequence +",
        "25 single), evaluated on the 3 labelled frankfurt val frames at full label resolution, whole",
        "image at 256x512, EMA teacher. Model `semidavil-small-cnn`: a convolutional CLIP visual tower",
        "(timm regnetx_002) from random weights (no CLIP or ImageNet weights offline, and the mini-VLP",
        "towers exist for the ViT only: every row is \"w/o VLP\"), under the frozen text tower of the",
        "mini-VLP (`pretrained/vlp-small`, synthetic crop-caption pairs only); full adds the DLG, which sees",
        "only the source captions (the real frames have none offline). Rows: `training/configs/real_*.yaml`.",
        "",
        "Command: `python -m bench.real_frames` (resumable; wall times are training + evaluation on 2 cores).",
        "",
        "Main metric: mean IoU over the classes with pixels in the val labels"
        f" ({len(present)} of 19: {', '.join(present)}). `mIoU (official)` is the project evaluator,",
        "equal to the official script: a class also counts (as 0) when it is absent from the labels but",
        "predicted somewhere, which on 3 frames penalises every stray pixel of a class that is not there.",
        "",
        row_table(results, classes),
        "",
        "### Targets",
        "",
        markdown_table(["target", "numbers", "result"], targets(results)),
        "",
        *archive_lines(args.records, classes),
        *notes_lines(),
        "### Machine",
        "",
        format_machine(machine_info()),
    ])  # fmt: skip
    write_section(args.results, "real-frames", body, title=RESULTS_TITLE, intro=RESULTS_INTRO)
    return body


def archive_lines(records: Path, classes: list[str]) -> list[str]:
    """The same table for each earlier model whose records are kept under `records/<folder>`."""
    lines = []
    for folder, what in ARCHIVES:
        # records only: an archived model's run folders are gone (a path that does not exist)
        runs = {row.key: load_runs(row, records / folder / "no-runs", records / folder) for row in ROWS}
        if any(runs.values()):
            lines += [f"### Earlier model: {what}", "", row_table(runs, classes), ""]
    return lines


def notes_lines() -> list[str]:
    """Hand-written analysis (bench/real_frames_notes.md), if it exists."""
    return [NOTES.read_text().strip(), ""] if NOTES.is_file() else []


def best_run(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    runs = [r for key in ("full", "ct_dyce") for r in results.get(key) or []]
    return max(runs, key=lambda r: r["miou_present"]) if runs else None


def main(argv: list[str] | None = None) -> int:
    import model  # noqa: F401  (offline env defaults)

    args = parse_args(argv)
    if not args.report_only:
        ensure_towers()
        for row, seed in run_order(args.rows):
            run_row(row, seed, args)
    results = {row.key: load_runs(row, args.runs, args.records) for row in ROWS}
    print(write_report(args, results))
    best = best_run(results)
    if best is None or args.no_grids:
        return 0
    if best["run_dir"] is None:
        print(f"no picture grids: the best row's run folder ({args.runs}) is not here")
        return 0
    from bench.real_grids import write_grids

    for path in write_grids(best["run_dir"], REAL):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
