"""SemiDAViL checkpoints: safetensors weights plus a JSON header. No pickle anywhere.

The header (safetensors metadata key `semidavil`) holds the format version, the model config,
class names, training config, metrics, code version and a SHA-256 of the tensor bytes, so a
file that is truncated, corrupt or built for another config is refused with a message naming
the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from model.atomic import atomic_path
from model.config import ModelConfig
from model.segmentor import SemiDAViL

FORMAT = "semidavil-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "semidavil"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


def code_version() -> str:
    """The package version (plus the git commit when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("semidavil-serve")
    except PackageNotFoundError:
        ver = "unknown"
    head = Path(__file__).resolve().parents[1] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{ver}+{ref[:12]}"
    except OSError:
        return ver


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of all tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)  # 1-D: plain strides for any layout
        digest.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_tensors(model: SemiDAViL) -> dict[str, torch.Tensor]:
    """The model's state dict with shared storage resolved (safetensors refuses aliasing)."""
    return {k: standard_layout(v) for k, v in model.state_dict().items()}


def standard_layout(t: torch.Tensor) -> torch.Tensor:
    """A CPU copy with plain row-major strides (channels-last weights are stored as NCHW)."""
    return t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def stored_as(tensors: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """Floating tensors cast to the storage dtype (fp32 ones only; integer buffers unchanged).

    float16 halves a shipped checkpoint; loading casts back to the model's fp32 (`load_state_dict`
    copies across dtypes). A value float16 cannot hold (|x| > 65504) is refused, not saturated.
    """
    dtype = STORAGE_DTYPES[storage]
    out = {}
    for name, t in tensors.items():
        if t.dtype == torch.float32 and dtype != torch.float32:
            cast = t.to(dtype)
            if not torch.isfinite(cast).all() and torch.isfinite(t).all():
                raise ValueError(f"tensor {name} does not fit {storage} (|x| up to {t.abs().max():.3g})")
            t = cast
        out[name] = t
    return out


def save_checkpoint(
    path: str | Path,
    model: SemiDAViL,
    class_names: list[str] | tuple[str, ...],
    training_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    storage: str = "float32",
) -> dict[str, Any]:
    """Write `model` atomically (temp file in the same folder, then rename); returns the header.

    `storage`: "float32" (training checkpoints: exact) or "float16" (shipped checkpoints: half the
    size; the header says which, and loading restores fp32 parameters)."""
    path = Path(path)
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {sorted(STORAGE_DTYPES)}, got {storage!r}")
    tensors = stored_as(model_tensors(model), storage)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "storage_dtype": storage,
        "model_config": model.config.to_dict(),
        "class_names": list(class_names),
        "training_config": training_config or {},
        "metrics": metrics or {},
        "code_version": code_version(),
        "tensors_sha256": tensors_digest(tensors),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: json.dumps(header, sort_keys=True)})
    return header


def read_header(path: str | Path) -> dict[str, Any]:
    """Read and validate only the JSON header (cheap: tensors are not loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt): {err}"
        ) from err
    if HEADER_KEY not in meta:
        raise CheckpointError(
            f"{path}: safetensors file has no SemiDAViL header (is it a checkpoint of this project?)"
        )
    try:
        header = json.loads(meta[HEADER_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: checkpoint header is not valid JSON: {err}") from err
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {header.get('format')!r} v{header.get('format_version')}"
        )
    return header


def load_tensors(path: str | Path, header: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Load all tensors and check them against the header's digest."""
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: tensor data unreadable (truncated or corrupt): {err}") from err
    if tensors_digest(tensors) != header.get("tensors_sha256"):
        raise CheckpointError(f"{path}: tensor data is corrupt (SHA-256 does not match the header)")
    return tensors


def _header_config(
    path: str | Path, expected: str | ModelConfig | None
) -> tuple[dict[str, Any], ModelConfig]:
    header = read_header(path)
    try:
        cfg = ModelConfig.from_dict(header["model_config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: checkpoint model config is invalid: {err}") from err
    _check_expected(path, cfg, expected)
    return header, cfg


def load_model(
    path: str | Path, expected_config: str | ModelConfig | None = None, map_location: str = "cpu"
) -> tuple[SemiDAViL, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights: -> (model in eval mode, header).

    `expected_config`: a config name or ModelConfig the checkpoint must match, else CheckpointError.
    """
    from model.factory import create_model

    header, cfg = _header_config(path, expected_config)
    model = create_model(cfg)
    tensors = load_tensors(path, header)
    _check_fit(path, {k: tuple(v.shape) for k, v in model.state_dict().items()}, tensors)
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location).eval(), header


def verify_checkpoint_file(
    path: str | Path, expected_config: str | ModelConfig | None = None
) -> dict[str, Any]:
    """Every check `load_model` makes (header, config, tensor digest, names and shapes), without
    building the model: the shapes come from the cached weight signature (model/signature.py), so
    a process that only vets the file does not import open_clip. -> the header."""
    from model.signature import weight_signature

    header, cfg = _header_config(path, expected_config)
    tensors = load_tensors(path, header)
    _check_fit(path, weight_signature(cfg), tensors)
    return header


def _check_expected(path: str | Path, cfg: ModelConfig, expected: str | ModelConfig | None) -> None:
    if expected is None:
        return
    if isinstance(expected, str):
        if cfg.name != expected:
            raise CheckpointError(f"{path}: checkpoint is for config {cfg.name!r}, expected {expected!r}")
    elif cfg != expected:
        diff = [k for k, v in expected.to_dict().items() if cfg.to_dict().get(k) != v]
        raise CheckpointError(f"{path}: checkpoint config differs from the expected one in {diff}")


def _check_fit(path: str | Path, own: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor]) -> None:
    """CheckpointError unless `tensors` has exactly the names and shapes of `own`."""
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k] != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{label}: {names[:5]}{' ...' if len(names) > 5 else ''}"
                 for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
                 if names]  # fmt: skip
        raise CheckpointError(f"{path}: weights do not match the model config ({'; '.join(parts)})")
