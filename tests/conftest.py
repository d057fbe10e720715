"""Shared test fixtures. Importing `model` first sets offline env defaults and the torchvision shim."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Under pytest-xdist (`make test`: two workers on the 2-core machine) each worker and the processes it
# starts run torch single-threaded: two 2-thread OpenMP pools on 2 cores thrash (a test took 10-50x
# longer beside a busy process). Set before torch is imported (by `model` just below).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

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


@pytest.fixture(scope="session")
def reliability_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One API-only server (no captioner, the bad-input table's tight limits) for the bad-input table
    and the load test: the load mix's images (at most 320x160, ~150 KB) fit those limits, and both
    check that no request got a 500, so one start (~20 s) serves both modules."""
    from reliability.cases import SERVER_ENV
    from tests.server import API_ONLY, running_server

    with running_server(tmp_path_factory.mktemp("reliability"), {**SERVER_ENV, **API_ONLY}) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic benchmark (testkit.tiny_data) of the training and publish tests."""
    from testkit.tiny_data import write_tiny_benchmark

    return write_tiny_benchmark(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="session")
def straight_run(tiny_bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """One finished tiny training run of STRAIGHT_ITERS steps in a subprocess, never interrupted:
    (run folder, completed process). The kill-9 test's reference weights and progress lines, and
    the run the publish tests publish; both only read it (one ~10 s training start fewer)."""
    from tests.helpers import STRAIGHT_ITERS, run_training, tiny_config

    out = tmp_path_factory.mktemp("straight")
    done = run_training(tiny_config(tiny_bench, out, **{"optim.iters": STRAIGHT_ITERS}))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "t", done


@pytest.fixture(scope="session")
def vitb16_model():
    """The paper's model with random weights (seed 0), in eval mode: built once per test run (~8 s
    on 2 cores) for the shape tests and the export test, which only read it."""
    import torch

    from model import create_model

    torch.manual_seed(0)
    return create_model("semidavil-vitb16").eval()


@pytest.fixture(scope="session")
def onnx_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m serving.compile --backend onnxruntime` at 128x256, batch <= 4, on the random tiny
    weights (no default checkpoint): the one ONNX export of the default suite (~25 s), checked by
    test_serving_backends.py, whose last test has the predictor find and re-use it."""
    from serving.compile import main

    out = tmp_path_factory.mktemp("artifacts")
    argv = ["--backend", "onnxruntime", "--height", "128", "--width", "256", "--max-batch", "4"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("serving.loading.DEFAULT_CHECKPOINT", Path("/nonexistent/default.safetensors"))
        assert main([*argv, "--margin", "0", "--out", str(out)]) == 0
    return out


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "gpu" in item.keywords:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (none on this machine)")
