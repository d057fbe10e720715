"""Reports of the synthetic benchmark: rows x seeds, paired targets, RESULTS.md section and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.synthetic_benchmark import (
    BY_KEY,
    ROWS,
    paired,
    parse_args,
    rarest_classes,
    record_finished,
    write_results,
)

CLASSES = ["road", "car", "rider", "bicycle", "pole", "sky", "bus"]
META = {
    "classes": CLASSES,
    "counts": {"source/train": 4},
    "settings": {"height": 64, "width": 128, "seed": 0},
    "pixel_share": {"target/train": {"road": 0.5, "car": 0.2, "rider": 0.001, "bicycle": 0.002,
                                      "pole": 0.01, "sky": 0.28, "bus": 0.0}},
}  # fmt: skip


def _run(runs: Path, key: str, seed: int, miou: float, seconds: float = 300) -> None:
    d = runs / BY_KEY[key].experiment(seed)
    d.mkdir(parents=True)
    iou = dict.fromkeys(CLASSES, miou)
    (d / "eval_final.json").write_text(json.dumps({"miou": miou, "iou": iou}))
    (d / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))


def _args(tmp_path: Path, *extra: str):
    """Report-only arguments in tmp_path; the run folders written so far are recorded first."""
    args = parse_args(
        ["--runs", str(tmp_path / "runs"), "--records", str(tmp_path / "records"), "--results", str(tmp_path / "R.md"),
         "--json", str(tmp_path / "results" / "synthetic.json"), "--report-only", *extra]
    )  # fmt: skip
    record_finished(args)
    return args


def test_rows_are_the_issues_and_rare_classes_skip_absent_ones():
    assert [r.name for r in ROWS] == [
        "source only", "target only", "CT", "CT+DyCE", "CT+VLP", "CT+VLP+DLG", "full", "full shuffled captions",
    ]  # fmt: skip
    assert rarest_classes(META, CLASSES, 3) == ["rider", "bicycle", "pole"]  # bus absent: not counted


def test_paired_differences_use_only_common_seeds():
    results = {
        "full": {0: {"miou": 30.0}, 1: {"miou": 32.0}, 2: {"miou": 31.0}},
        "ct": {0: {"miou": 20.0}, 2: {"miou": 25.0}},
    }
    mean, sd, n = paired(results, "full", "ct")
    assert n == 2 and mean == pytest.approx(8.0) and sd == pytest.approx(2.8284, abs=1e-3)
    assert paired(results, "full", "ct_vlp") is None


def test_report_and_json_from_run_folders(tmp_path):
    runs = tmp_path / "runs"
    scores = {"source_only": 10, "target_only": 20, "ct": 21, "ct_dyce": 22, "ct_vlp": 23, "ct_vlp_dlg": 24,
              "full": 30, "full_shuffled": 29.5}  # fmt: skip
    for key, base in scores.items():
        for seed in (0, 1, 2):
            _run(runs, key, seed, base + 0.5 * seed)
    (tmp_path / "R.md").write_text(
        "# Results\n\n<!-- BEGIN real-frames -->\nreal rows\n<!-- END real-frames -->\n"
    )
    text = write_results(_args(tmp_path), META)
    written = (tmp_path / "R.md").read_text()
    assert text in written and "real rows" in written  # its own section; the other one is kept
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 30.5 +- 0.5 |" in lines["full"]
    assert "PASS" in lines["full - source only >= 15, gap > paired sd"]
    assert "PASS" in lines["full - target only >= 5, gap > paired sd"]
    assert "FAIL" in lines["full - full shuffled captions >= 1, gap > paired sd"]  # +0.5 only
    data = json.loads((tmp_path / "results" / "synthetic.json").read_text())
    full = data["rows"]["full"]
    assert full["seeds"] == [30.0, 30.5, 31.0] and full["miou_mean"] == pytest.approx(30.5)
    assert full["miou_sd"] == pytest.approx(0.5) and full["minutes"] == pytest.approx(5.0)
    assert set(data["rows"]) == {r.name for r in ROWS} and "commit" in data and "cpu_model" in data["machine"]


def test_missing_rows_are_not_run_and_one_seed_is_marked(tmp_path):
    _run(tmp_path / "runs", "full", 0, 30)
    _run(tmp_path / "runs", "ct", 0, 20)
    text = write_results(_args(tmp_path), META)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "PASS (1 seed)" in lines["full - CT > 0, gap > paired sd"]
    assert "not run" in lines["CT+DyCE - CT > 0, gap > paired sd"]


def test_analysis_notes_are_included_only_when_present(tmp_path):
    _run(tmp_path / "runs", "full", 0, 40)
    notes = tmp_path / "notes.md"
    assert "## Analysis" not in write_results(_args(tmp_path, "--notes", str(notes)), META)
    notes.write_text("DyCE helps the rare classes because ...\n")
    text = write_results(_args(tmp_path, "--notes", str(notes)), META)
    assert "## Analysis\n\nDyCE helps the rare classes because ...\n" in text
    assert text.index("## Analysis") < text.index("## Machine")


def test_finished_runs_are_recorded_once_and_records_outlive_run_folders(tmp_path):
    """A finished run folder becomes results/synthetic/<experiment>.json; the report reads the
    records, so it survives the run folder's removal; an unfinished folder is not recorded."""
    import shutil

    _run(tmp_path / "runs", "full", 0, 30, seconds=120)
    (tmp_path / "runs" / BY_KEY["ct"].experiment(0)).mkdir(parents=True)  # started, not finished
    args = _args(tmp_path)
    record = tmp_path / "records" / "synthetic_full_s0.json"
    assert json.loads(record.read_text())["minutes"] == pytest.approx(2.0)
    assert record_finished(args) == []  # already recorded: nothing rewritten
    assert not (tmp_path / "records" / "synthetic_ct_s0.json").exists()
    shutil.rmtree(tmp_path / "runs")
    text = write_results(args, META)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 30.0 +- n/a |" in lines["full"]
