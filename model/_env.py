"""Process-wide switches that must be set before the hub, BentoML or Gradio libraries are imported.

`HF_HUB_OFFLINE` only takes effect if it is set before `huggingface_hub` is first imported (set
later, `open_clip.create_model(..., pretrained="openai")` spends most of a minute in retries before failing).
We default to offline and no telemetry; a user who wants downloads sets `SEMIDAVIL_ONLINE=1`.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def apply_env_defaults() -> None:
    """Set offline and no-telemetry defaults unless the user already chose a value."""
    online = os.environ.get("SEMIDAVIL_ONLINE", "0") == "1"
    for key, value in OFFLINE_DEFAULTS.items():
        if online and key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            continue
        os.environ.setdefault(key, value)


def hub_is_offline() -> bool:
    """True when the Hugging Face hub may not be contacted."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def cache_dir() -> Path:
    """Where this project caches derived files (weight signatures, compiled artefacts):
    SEMIDAVIL_CACHE_DIR, else $XDG_CACHE_HOME/semidavil, else ~/.cache/semidavil."""
    explicit = os.environ.get("SEMIDAVIL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semidavil"


def install_torchvision_shim() -> None:
    """Let the registry's CUDA-built torchvision 0.28 import on CPU-only torch.

    torchvision registers two op schemas without a guard; when its `_C.so` cannot load (CPU torch)
    `import torchvision` fails with "operator torchvision::nms does not exist", which also breaks
    open_clip and transformers' image models. Defining the schemas first makes the import work; only
    torchvision's C++ ops (nms, roi_align), which this project never uses, stay unavailable.
    """
    import warnings

    import torch

    # torchvision's own C extension cannot load on CPU torch; that is expected, say it once here.
    warnings.filterwarnings("ignore", message=r"Failed to load '.*' extension", category=UserWarning)
    try:
        torch.ops.torchvision.nms  # noqa: B018 - attribute access is the probe
    except (AttributeError, RuntimeError):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _KEEP_ALIVE.append(lib)


_KEEP_ALIVE: list[object] = []
