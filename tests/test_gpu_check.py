"""`make gpu-check DRY_RUN=1`: the GPU check's code on CPU with the tiny model (the GPU plan runs
the same steps; no GPU here)."""

from __future__ import annotations

import json

import pytest
import torch

from bench.gpu_check import PLANS, main


# The rehearsal of the GPU script (`make gpu-check DRY_RUN=1`, run before a GPU session): each of its
# steps is tested on its own elsewhere (floor, backends, trainer, predictor), so the whole script's
# ~20 s run is under -m slow.
@pytest.mark.slow
def test_dry_run_measures_every_step_and_writes_json_and_markdown(tmp_path):
    assert main(["--dry-run", "--out", str(tmp_path)]) == 0  # 1 if any step failed
    results = json.loads((tmp_path / "gpu_check_dry.json").read_text())
    steps = results["steps"]
    assert set(steps) == {"floor", "backends", "training", "predictor"}
    assert all(s["error"] is None and s["result"] for s in steps.values()), {
        k: s["error"] for k, s in steps.items()
    }
    assert steps["floor"]["result"]["matmul_tflops"]["bf16"] > 0
    rows = {r["backend"]: r for r in steps["backends"]["result"]["rows"]}
    assert rows["eager-bf16"]["agreement"]["argmax_agreement"] > 0.9
    assert steps["training"]["result"]["it_per_s"] > 0
    assert steps["predictor"]["result"]["size"] == [1024, 2048]
    text = (tmp_path / "gpu_check.md").read_text()
    assert (
        "<!-- BEGIN gpu-check -->" in text and "argmax agreement vs fp32" in text and "Training step" in text
    )


def test_the_gpu_plan_is_the_papers_model_at_full_size():
    gpu = PLANS["gpu"]
    assert (gpu["config"], gpu["size"], gpu["batches"]) == ("semidavil-vitb16", (512, 1024), (1, 8))
    assert {"eager-fp32", "eager-bf16", "compile-bf16", "tensorrt-bf16"} == set(gpu["backends"])
    assert gpu["train"] == "PAPER"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the GPU plan would run")
def test_the_gpu_plan_refuses_without_a_gpu(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
