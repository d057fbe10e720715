"""Backends of the segmentation graph behind one interface (`Backend`); build them with `create_backend`.

The factory's names load on first use (PEP 562): the factory imports every backend, and the compiled
one imports open_clip (with transformers, torchvision and torch._dynamo: seconds), which importers
of `serving.backends.base` alone (serving.settings and serving.options, through the agreement gate's
default threshold) do not need; nor does the service's arbiter, which vets the checkpoint against
the cached weight signature (model/signature.py) before any worker starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from serving.backends.base import Backend, BackendUnavailable, ShapeProfile

if TYPE_CHECKING:
    from serving.backends.factory import (
        BACKEND_NAMES,
        artifact_stem,
        choose_default_backend,
        create_backend,
        default_backend_name,
    )

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailable",
    "ShapeProfile",
    "artifact_stem",
    "choose_default_backend",
    "create_backend",
    "default_backend_name",
]
_FACTORY_NAMES = frozenset(__all__) - {"Backend", "BackendUnavailable", "ShapeProfile"}


def __getattr__(name: str) -> Any:
    if name in _FACTORY_NAMES:
        return getattr(importlib.import_module("serving.backends.factory"), name)
    raise AttributeError(f"module 'serving.backends' has no attribute {name!r}")
