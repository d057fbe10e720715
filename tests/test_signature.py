"""The cached weight signature: what a strict load checks, computed once, recomputed when stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model import create_model, save_checkpoint
from model import signature as sig
from model.class_sets import CITYSCAPES_CLASSES
from model.config import get_model_config

ROOT = Path(__file__).resolve().parents[1]


def test_signature_is_the_state_dict_shapes_and_is_cached(tmp_path, monkeypatch):
    cfg = get_model_config("semidavil-tiny")
    shapes = sig.weight_signature(cfg, tmp_path)
    assert shapes == {k: tuple(v.shape) for k, v in create_model(cfg).state_dict().items()}
    monkeypatch.setattr(sig, "compute_signature", lambda cfg: pytest.fail("rebuilt despite the cache"))
    assert sig.weight_signature(cfg, tmp_path) == shapes


def test_a_broken_cache_entry_is_recomputed_and_rewritten(tmp_path):
    cfg = get_model_config("semidavil-tiny")
    shapes = sig.weight_signature(cfg, tmp_path)
    (entry,) = (tmp_path / "signatures").iterdir()
    entry.write_text('{"shapes": {"a": "not a shape"')
    assert sig.weight_signature(cfg, tmp_path) == shapes
    assert json.loads(entry.read_text())["shapes"].keys() == shapes.keys()


def test_the_key_follows_the_config_and_the_package_source(monkeypatch):
    tiny, small = get_model_config("semidavil-tiny"), get_model_config("semidavil-small")
    assert sig.signature_key(tiny) != sig.signature_key(small)
    before = sig.signature_key(tiny)
    monkeypatch.setattr(sig, "_source_digest", lambda: "edited")
    assert sig.signature_key(tiny) != before


def test_an_unwritable_cache_still_gives_the_signature(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = get_model_config("semidavil-tiny")
    assert sig.weight_signature(cfg, blocker)  # computed; the write fails quietly


def test_vetting_a_checkpoint_with_a_warm_cache_does_not_import_open_clip(tmp_path):
    """What the arbiter of `bentoml serve` does at start, before any worker."""
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, create_model("semidavil-tiny").eval(), CITYSCAPES_CLASSES, {}, {})
    sig.weight_signature(get_model_config("semidavil-tiny"), tmp_path / "cache")  # warm, in this process
    code = (
        "import sys; from serving.loading import verify_checkpoint; "
        f"verify_checkpoint({str(path)!r}); print(sorted(m for m in ('open_clip', 'torchvision') if m in sys.modules))"
    )
    env = {"SEMIDAVIL_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    warm = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.strip() == "[]", warm.stdout
