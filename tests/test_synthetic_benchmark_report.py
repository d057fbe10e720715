"""RESULTS.md of the synthetic benchmark: rows, rare classes and target verdicts from run folders."""

from __future__ import annotations

import json
from pathlib import Path

from bench.synthetic_benchmark import parse_args, rarest_classes, write_results

CLASSES = ["road", "car", "rider", "bicycle", "pole", "sky", "bus"]
META = {
    "classes": CLASSES,
    "counts": {"source/train": 4},
    "settings": {"height": 64, "width": 128, "seed": 0},
    "pixel_share": {"target/train": {"road": 0.5, "car": 0.2, "rider": 0.001, "bicycle": 0.002,
                                      "pole": 0.01, "sky": 0.28, "bus": 0.0}},
}  # fmt: skip


def _row(runs: Path, row: str, iou: dict[str, float], seconds: float) -> None:
    d = runs / f"synthetic_{row}"
    d.mkdir(parents=True)
    miou = sum(iou.values()) / len(iou)
    (d / "eval_final.json").write_text(json.dumps({"miou": miou, "iou": iou}))
    (d / "wall_seconds.json").write_text(json.dumps({"seconds": seconds}))


def test_report_rows_rare_classes_and_verdicts(tmp_path):
    runs = tmp_path / "runs"
    base = dict.fromkeys(CLASSES, 10.0)
    _row(runs, "source_only", base, 100)
    _row(runs, "target_only", dict.fromkeys(CLASSES, 37.0), 100)
    _row(runs, "ct", {**base, "rider": 1.0}, 100)
    _row(runs, "ct_dyce", {**base, "rider": 9.0}, 100)
    _row(runs, "full", dict.fromkeys(CLASSES, 40.0), 1000)
    args = parse_args(["--runs", str(runs), "--results", str(tmp_path / "R.md"), "--report-only"])
    assert rarest_classes(META, CLASSES, 3) == ["rider", "bicycle", "pole"]  # bus absent: not counted
    (tmp_path / "R.md").write_text(
        "# Results\n\n<!-- BEGIN real-frames -->\nreal rows\n<!-- END real-frames -->\n"
    )
    text = write_results(args, META)
    written = (tmp_path / "R.md").read_text()
    assert text in written and "real rows" in written  # its own section; the other one is kept
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 40.0 |" in lines["CT + DyCE + DLG (full)"]
    assert "PASS" in next(v for k, v in lines.items() if k.startswith("CT + DyCE + DLG (full) - source only"))
    assert "FAIL" in next(v for k, v in lines.items() if k.startswith("CT + DyCE + DLG (full) - target only"))
    assert "PASS" in next(v for k, v in lines.items() if k.startswith("DyCE raises rare-5 mIoU: CT + DyCE >"))
    assert "not run" in next(v for k, v in lines.items() if "full) > CT + DLG" in k)
    assert "FAIL" in lines["each row <= 15 min wall"]


def test_analysis_notes_are_included_only_when_present(tmp_path):
    runs = tmp_path / "runs"
    _row(runs, "full", dict.fromkeys(CLASSES, 40.0), 100)
    notes = tmp_path / "notes.md"
    argv = ["--runs", str(runs), "--results", str(tmp_path / "R.md"), "--report-only", "--notes", str(notes)]
    assert "## Analysis" not in write_results(parse_args(argv), META)
    notes.write_text("DyCE helps the rare classes because ...\n")
    text = write_results(parse_args(argv), META)
    assert "## Analysis\n\nDyCE helps the rare classes because ...\n" in text
    assert text.index("## Analysis") < text.index("## Machine")
