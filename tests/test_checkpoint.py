"""Checkpoints: bit-exact round trip; corrupt, truncated and mismatched files refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from model import CheckpointError, create_model, load_model, save_checkpoint
from model.checkpoint import read_header, verify_checkpoint_file
from model.class_sets import CITYSCAPES_CLASSES
from model.config import DLGConfig, get_model_config
from tests.helpers import random_inputs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    m = create_model("semidavil-tiny").eval()
    torch.nn.init.normal_(m.seg.dlg.gamma)  # make DLG active so its weights matter
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, m, CITYSCAPES_CLASSES, {"iters": 3}, {"miou": 12.5})
    return m, path


def test_round_trip_is_bit_exact(saved):
    m, path = saved
    loaded, header = load_model(path, expected_config="semidavil-tiny")
    assert header["class_names"] == list(CITYSCAPES_CLASSES)
    assert header["metrics"] == {"miou": 12.5} and header["training_config"] == {"iters": 3}
    assert loaded.config == m.config
    own, other = m.state_dict(), loaded.state_dict()
    assert own.keys() == other.keys()
    for k in own:
        assert torch.equal(own[k], other[k]), k
    inputs = random_inputs(1, 128, 128, 19, 5, m.config.embed_dim)
    with torch.no_grad():
        assert torch.equal(m(*inputs), loaded(*inputs))
    assert not list(path.parent.glob("*.tmp")), "atomic write left a temp file"


def test_truncated_file_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (len(data) // 2, 100, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut\d+\.safetensors: .*(truncated|corrupt)"):
            load_model(bad)


def test_corrupt_tensor_bytes_are_refused(saved, tmp_path):
    _, path = saved
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0xFF  # flip bits inside the tensor data, header intact
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="flipped.safetensors: tensor data is corrupt"):
        load_model(bad)


def test_corrupt_header_json_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "header.safetensors"
    bad.write_bytes(data.replace(b'"format_version', b'"format_versi\xff\xfe', 1))
    with pytest.raises(CheckpointError, match="header.safetensors"):
        load_model(bad)


def test_mismatched_config_is_refused(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="for config 'semidavil-tiny', expected 'semidavil-vitb16'"):
        load_model(path, expected_config="semidavil-vitb16")
    other = get_model_config("semidavil-tiny", dlg=DLGConfig(mode="off"))
    with pytest.raises(CheckpointError, match=r"differs from the expected one in \['dlg'\]"):
        load_model(path, expected_config=other)


def test_weights_that_do_not_fit_the_config_are_refused(saved, tmp_path):
    m, path = saved
    header = read_header(path)
    header["model_config"]["decoder"]["channels"] = 48  # claims another architecture
    from model.checkpoint import HEADER_KEY, model_tensors

    bad = tmp_path / "lying.safetensors"
    tensors = model_tensors(m)
    save_file(tensors, bad, metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(CheckpointError, match="lying.safetensors: weights do not match the model config"):
        load_model(bad)


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="no SemiDAViL header"):
        load_model(plain)
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_file)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(pickle_file)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_verifying_without_building_refuses_what_loading_refuses(saved, tmp_path, monkeypatch):
    m, path = saved
    monkeypatch.setenv("SEMIDAVIL_CACHE_DIR", str(tmp_path / "cache"))
    assert verify_checkpoint_file(path, expected_config="semidavil-tiny") == read_header(path)
    header = read_header(path)
    header["model_config"]["decoder"]["channels"] = 48
    from model.checkpoint import HEADER_KEY, model_tensors

    bad = tmp_path / "lying.safetensors"
    save_file(model_tensors(m), bad, metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(CheckpointError, match="lying.safetensors: weights do not match the model config"):
        verify_checkpoint_file(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        verify_checkpoint_file(cut)
    with pytest.raises(CheckpointError, match="expected 'semidavil-small'"):
        verify_checkpoint_file(path, expected_config="semidavil-small")
