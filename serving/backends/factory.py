"""`create_backend(name, graph, profile, device)` and the default-backend rule.

Names: eager-fp32, eager-bf16, compile-fp32, compile-bf16, onnxruntime, tensorrt-fp16, tensorrt-bf16.

Default ("auto"): the issue's rule is "the fastest backend that keeps at least 99.5 % argmax
agreement with fp32 eager on the shared fixtures". That is a measurement, so it lives in data:
`serving/backend_choice.json`, written by the benchmark in `bench/`. Until the file names a choice
for this device, the fallback rule is: CPU -> eager-bf16 where bf16 is fast (AVX512-BF16/AMX) else
eager-fp32; CUDA -> tensorrt-bf16 if torch_tensorrt imports, else eager-bf16.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from model.hardware import fast_bf16
from model.segmentor import SegmentationGraph
from serving.backends.base import Backend, ShapeProfile
from serving.backends.compiled import TorchCompileBackend
from serving.backends.eager import EagerBackend
from serving.backends.onnx import ONNXRuntimeBackend
from serving.backends.tensorrt import TensorRTBackend

__all__ = [
    "BACKEND_NAMES",
    "ShapeProfile",
    "choose_default_backend",
    "create_backend",
    "default_backend_name",
    "matching_choice",
]

logger = logging.getLogger(__name__)

BACKEND_NAMES: tuple[str, ...] = (
    "eager-fp32",
    "eager-bf16",
    "compile-fp32",
    "compile-bf16",
    "onnxruntime",
    "tensorrt-fp16",
    "tensorrt-bf16",
)
COMPILED_BACKENDS = frozenset(BACKEND_NAMES) - {"eager-fp32", "eager-bf16"}
# One registry: a name's kind (before the "-") -> the class that creates and re-loads it.
BACKEND_KINDS: dict[str, type[Backend]] = {
    "eager": EagerBackend,
    "compile": TorchCompileBackend,
    "onnxruntime": ONNXRuntimeBackend,
    "tensorrt": TensorRTBackend,
}
CHOICE_FILE = Path(__file__).resolve().parents[1] / "backend_choice.json"


def artifact_stem(name: str, profile: ShapeProfile) -> str:
    """File stem of a backend's artefact: e.g. onnxruntime-512x1024-L77-K19-b8."""
    p = profile
    return f"{name}-{p.height}x{p.width}-L{p.caption_length}-K{p.num_classes}-b{p.max_batch}"


def create_backend(
    name: str,
    graph: SegmentationGraph,
    profile: ShapeProfile | None,
    device: str | torch.device = "cpu",
    artifacts_dir: str | os.PathLike[str] | None = None,
) -> Backend:
    """Build a backend by name. Compiled ones export/compile now (torch.compile: at first call).

    ONNX and TensorRT files go to `artifacts_dir` (a temporary folder when None), named by
    `artifact_stem`. This does not check agreement: `serving.artifacts.obtain_backend` does.
    Raises ValueError for an unknown name and BackendUnavailable where the backend cannot run.
    """
    device = torch.device(device)
    cls, precision = backend_class(name)
    if cls.fixed_shapes and profile is None:
        raise ValueError(f"{name} is built for fixed shapes: it needs a ShapeProfile")
    cls.check_device(device)  # before the artefact folder: a refused backend leaves no temporary folder
    artifact = None
    if cls.artifact_suffix is not None and profile is not None:
        folder = Path(artifacts_dir) if artifacts_dir else Path(tempfile.mkdtemp(prefix="semidavil-"))
        artifact = folder / f"{artifact_stem(name, profile)}{cls.artifact_suffix}"
    return cls.create(graph, profile, precision, device, artifact)


def backend_class(name: str) -> tuple[type[Backend], str]:
    """(the registered class, its precision) for a backend name; ValueError for an unknown name."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; known: {list(BACKEND_NAMES)}")
    kind, _, precision = name.partition("-")
    return BACKEND_KINDS[kind], precision or "fp32"


def tensorrt_importable() -> bool:
    """True if torch_tensorrt is installed and CUDA is available (without importing it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("torch_tensorrt") is not None


def default_backend_name(device: str | torch.device) -> str:
    """The fallback rule (no measurement available): see the module docstring."""
    device = torch.device(device)
    if device.type == "cuda":
        return "tensorrt-bf16" if tensorrt_importable() else "eager-bf16"
    return "eager-bf16" if fast_bf16(device) else "eager-fp32"


def cpu_feature_key(device: torch.device) -> str:
    """What distinguishes CPUs for the choice file: "amx", "avx512_bf16" or "plain"."""
    if device.type != "cpu":
        return device.type
    if torch.cpu._is_amx_tile_supported():
        return "amx"
    return "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else "plain"


def _read_choices(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        logger.warning("ignoring unreadable backend choice file %s: %s", path, err)
        return []
    choices = data.get("choices", []) if isinstance(data, dict) else []
    return [c for c in choices if isinstance(c, dict) and c.get("backend") in BACKEND_NAMES]


def matching_choice(
    device: str | torch.device,
    model_name: str | None = None,
    choice_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any] | None:
    """The choice file's first entry for this device (and CPU class and model), or None.

    A choice matches on `device` ("cpu"/"cuda"), optionally `cpu_features` and `model`; entries
    naming a TensorRT backend are skipped where torch_tensorrt cannot be used.
    """
    device = torch.device(device)
    for choice in _read_choices(Path(choice_file) if choice_file else CHOICE_FILE):
        if choice.get("device") != device.type:
            continue
        if choice.get("cpu_features") not in (None, cpu_feature_key(device)):
            continue
        if choice.get("model") not in (None, model_name):
            continue
        if choice["backend"].startswith("tensorrt") and not tensorrt_importable():
            continue
        return choice
    return None


def choose_default_backend(
    device: str | torch.device,
    model_name: str | None = None,
    choice_file: str | os.PathLike[str] | None = None,
) -> str:
    """The backend "auto" means without probing: a measured choice from the choice file if one
    matches (`matching_choice`), else the rule."""
    choice = matching_choice(device, model_name, choice_file)
    return str(choice["backend"]) if choice else default_backend_name(device)
