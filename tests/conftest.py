"""Shared test fixtures. Importing `model` first sets offline env defaults and the torchvision shim."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import model  # noqa: F401  (side effects: env defaults, torchvision shim)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEMIDAVIL_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
CITYSCAPES_FIXTURES = FIXTURES / "pix2pixHD" / "datasets" / "cityscapes"
MMSEG_CITYSCAPES = FIXTURES / "mmsegmentation" / "tests" / "data" / "pseudo_cityscapes_dataset"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The read-only Cityscapes-format fixtures in ../shared/fixtures (never copied into the repo)."""
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "gpu" in item.keywords:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (none on this machine)")
