"""Backends of the segmentation graph behind one interface (`Backend`); build them with `create_backend`."""

from serving.backends.base import Backend, BackendUnavailable, ShapeProfile
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
