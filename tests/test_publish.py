"""training.publish: a finished run becomes a serving checkpoint with its metrics in the header."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model import load_model
from model.checkpoint import read_header
from serving.loading import load_serving_model, trained_on_line
from tests.helpers import STRAIGHT_ITERS
from training.publish import ROOT, PublishError, _strip_host_paths, publish


@pytest.fixture(scope="module")
def finished_run(straight_run) -> Path:
    """conftest.py's finished tiny run (also the kill-9 test's reference; read only here)."""
    return straight_run[0]


def test_published_checkpoint_has_the_run_metrics_and_the_same_weights(finished_run, tmp_path):
    out = tmp_path / "default.safetensors"
    header = publish(finished_run, out)
    evaluation = json.loads((finished_run / "eval_final.json").read_text())
    assert read_header(out)["metrics"] == header["metrics"]
    assert header["metrics"]["miou"] == evaluation["miou"]
    assert header["metrics"]["iou"] == evaluation["iou"]
    assert header["metrics"]["iters"] == STRAIGHT_ITERS
    assert not Path(header["metrics"]["dataset"]).is_absolute()
    original, _ = load_model(finished_run / "model.safetensors")
    published, _ = load_model(out)
    for (k, a), (_, b) in zip(original.state_dict().items(), published.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    served = load_serving_model(None, default_checkpoint=out)
    assert not served.random_weights


def test_unfinished_run_is_refused(finished_run, tmp_path):
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((finished_run / "model.safetensors").read_bytes())
    with pytest.raises(PublishError, match="eval_final.json: missing"):
        publish(broken, tmp_path / "out.safetensors")


def test_size_limit_is_enforced(finished_run, tmp_path):
    out = tmp_path / "out.safetensors"
    with pytest.raises(PublishError, match="over the 0.001 MB limit"):
        publish(finished_run, out, max_mb=0.001)
    assert not out.exists() and not list(tmp_path.glob(".*publish*"))


def test_repository_paths_in_the_training_config_become_relative():
    cfg = {
        "output_dir": str(ROOT / "runs" / "synthetic"),
        "data": {"roots": [str(ROOT / "data" / "x"), "/elsewhere"]},
    }
    assert _strip_host_paths(cfg) == {
        "output_dir": "runs/synthetic",
        "data": {"roots": ["data/x", "/elsewhere"]},
    }


def test_header_says_what_the_model_was_trained_on(finished_run, tmp_path):
    card = tmp_path / "card.yaml"
    fields = {k: f"the {k}" for k in ("name", "source_domain", "target_domain", "val", "sources", "terms")}
    card.write_text(json.dumps(fields))  # JSON is YAML
    header = publish(finished_run, tmp_path / "out.safetensors", card=card)
    metrics = header["metrics"]
    trained = metrics["trained_on"]
    split = json.loads((finished_run / "split.json").read_text())
    assert {k: trained[k] for k in fields} == fields
    assert trained["images"]["labeled"] == len(split["labeled"]) == 2
    assert trained["images"]["unlabeled"] == len(split["unlabeled"]) > 0
    assert trained["images"]["source"] > 0
    assert f"{len(split['labeled'])} labelled + {len(split['unlabeled'])} unlabelled" in trained["summary"]
    assert metrics["benchmark"] == "the val"
    assert metrics["commit"] != "unknown" and len(metrics["commit"]) >= 12
    assert read_header(tmp_path / "out.safetensors")["metrics"]["trained_on"] == trained
    # what the service's /model and the demo say about it, in one line
    line = trained_on_line(load_serving_model(None, default_checkpoint=tmp_path / "out.safetensors"))
    assert trained["summary"] in line and f"mIoU {metrics['miou']:.1f} on the val" in line


def test_a_malformed_data_card_is_refused_by_name(finished_run, tmp_path):
    from training.data_card import DataCardError

    card = tmp_path / "bad_card.yaml"
    card.write_text("name: only a name\n")
    with pytest.raises(DataCardError, match="bad_card.yaml"):
        publish(finished_run, tmp_path / "out.safetensors", card=card)
    with pytest.raises(DataCardError, match="not found"):
        publish(finished_run, tmp_path / "out.safetensors", card=tmp_path / "none.yaml")
