"""bench/real_frames.py's report: present-class mIoU, seeds, targets, its RESULTS.md section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import real_frames
from bench.real_frames import ROWS, load_runs, parse_args, present_miou, run_row, targets, write_report

CLASSES = ["road", "sidewalk", "building", "vegetation", "sky", "car", "bus"]


def _report(ious: dict[str, float | None], present: set[str]) -> dict:
    k = len(CLASSES)
    matrix = [[0] * k for _ in range(k)]
    for i, name in enumerate(CLASSES):
        matrix[i][i] = 10 if name in present else 0
    official = [v for v in ious.values() if v is not None]
    return {"miou": sum(official) / len(official), "iou": ious, "confusion_matrix": matrix}


def _write(runs: Path, experiment: str, report: dict, seconds: float) -> None:
    run = runs / experiment
    run.mkdir(parents=True)
    (run / "eval_final.json").write_text(json.dumps(report))
    (run / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))


def test_present_class_miou_leaves_out_classes_absent_from_the_labels():
    ious = {**dict.fromkeys(CLASSES[:6], 60.0), "bus": 0.0}  # bus: predicted, never in the labels
    miou, present = present_miou(_report(ious, set(CLASSES[:6])))
    assert present == CLASSES[:6] and miou == 60.0


def test_rows_seeds_targets_and_section(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "records"
    full = {**dict.fromkeys(CLASSES[:6], 70.0), "sidewalk": 10.0, "bus": 0.0}
    _write(runs, "real_full", _report(full, set(CLASSES[:6])), 600)
    _write(runs, "real_full_s1", _report({**full, "car": 50.0}, set(CLASSES[:6])), 900)
    _write(runs, "real_target_only", _report(dict.fromkeys(CLASSES, 40.0), set(CLASSES[:6])), 300)
    rows = {r.key: r for r in ROWS}
    loaded = load_runs(rows["full"], runs, records)
    assert [r["seed"] for r in loaded] == [0, 1] and loaded[1]["minutes"] == 15.0
    results = {key: load_runs(row, runs, records) for key, row in rows.items()}
    verdicts = {t[0]: t for t in targets(results)}
    assert verdicts["full >= 35 mIoU"][1:] == ["58.3", "PASS"]  # mean of 60.0 and 56.7
    assert verdicts["full >= target only + 3"][2] == "PASS"
    assert verdicts["full: car IoU >= 60"][1:] == ["60.0", "PASS"]
    assert verdicts["full: road IoU >= 60"][2] == "PASS"
    results_md = tmp_path / "R.md"
    results_md.write_text("# Results\n\n<!-- BEGIN synthetic -->\nsynthetic rows\n<!-- END synthetic -->\n")
    args = parse_args(["--runs", str(runs), "--results", str(results_md), "--report-only"])
    body = write_report(args, results)
    text = results_md.read_text()
    assert "synthetic rows" in text and body in text
    line = next(x for x in body.splitlines() if x.startswith("| full"))
    assert "| 0,1 |" in line and "60.0 / 56.7" in line
    assert "| not run |" in next(x for x in body.splitlines() if x.startswith("| CT + DyCE"))


def test_finished_rows_are_recorded_and_outlive_their_run_folders(tmp_path, monkeypatch):
    """The committed records rebuild the table after runs/ is gone, and a recorded row is not re-trained."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    row = next(r for r in ROWS if r.key == "target_only")
    _write(runs, "real_target_only", _report(dict.fromkeys(CLASSES, 40.0), set(CLASSES[:6])), 300)
    first = load_runs(row, runs, records)  # a run finished before records existed gets one
    assert (records / "real_target_only.json").is_file() and first[0]["run_dir"] == runs / "real_target_only"
    shutil.rmtree(runs)
    again = load_runs(row, runs, records)
    assert again[0]["miou_present"] == 40.0 and again[0]["minutes"] == 5.0 and again[0]["run_dir"] is None

    def no_training(*_a, **_k):
        raise AssertionError("a recorded row was trained again")

    monkeypatch.setattr(real_frames.subprocess, "run", no_training)
    args = parse_args(["--runs", str(runs), "--records", str(records)])
    run_row(row, 0, args)  # recorded: returns without training
    with pytest.raises(AssertionError, match="trained again"):
        run_row(row, 1, args)  # seed 1 has neither a record nor a run folder


def test_earlier_models_records_get_their_own_table(tmp_path):
    """Rows of a replaced model stay in the report, under their own heading, from their records."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    _write(runs, "old_full", _report(dict.fromkeys(CLASSES, 20.0), set(CLASSES[:6])), 1200)
    real_frames.record_run(runs / "old_full", records / "vit-small" / "real_full.json")
    _write(runs, "real_full", _report(dict.fromkeys(CLASSES, 50.0), set(CLASSES[:6])), 600)
    rows = {r.key: r for r in ROWS}
    results = {key: load_runs(row, runs, records) for key, row in rows.items()}
    args = parse_args(["--runs", str(runs), "--records", str(records), "--results", str(tmp_path / "R.md")])
    body = write_report(args, results)
    current, earlier = body.split("### Earlier model")
    assert "| full (CT + DyCE + DLG) | 0 | **50.0** |" in current
    assert "| full (CT + DyCE + DLG) | 0 | **20.0** |" in earlier and "| 20.0 |" in earlier
    assert "| target only (same 8 labels) | not run |" in earlier
