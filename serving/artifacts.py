"""Compiled backends as artefacts: build, gate, save with a manifest, and re-load.

Every compiled artefact (torch.compile, ONNX, TensorRT) is compared with eager fp32 on the same
inputs before it is used or saved (`serving.agreement`), and refused below the threshold. A saved
artefact sits next to a JSON manifest (backend, shapes, agreement numbers, checkpoint SHA-256,
library versions); `load_backend` refuses a file whose manifest does not match the checkpoint, the
shape profile or the library versions it was built with. `python -m serving.compile` is the
command line; `obtain_backend` is what the predictor calls.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from model.atomic import atomic_write_text
from model.segmentor import SegmentationGraph
from serving.agreement import DEFAULT_THRESHOLD, check_agreement
from serving.backends.base import Backend, Inputs, ShapeProfile
from serving.backends.eager import EagerBackend
from serving.backends.factory import COMPILED_BACKENDS, artifact_stem, backend_class, create_backend

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "semidavil-serving-artifact"
MANIFEST_VERSION = 1
_VERSIONED_PACKAGES = {"onnxruntime": ("onnxruntime",), "tensorrt": ("torch_tensorrt", "torch-tensorrt")}


class ArtifactMismatch(ValueError):
    """A saved artefact does not fit the checkpoint, shape profile or installed libraries."""


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def library_versions(backend_name: str) -> dict[str, str | None]:
    """Versions an artefact depends on: torch always, plus onnxruntime or torch_tensorrt."""
    versions: dict[str, str | None] = {"torch": torch.__version__}
    for prefix, names in _VERSIONED_PACKAGES.items():
        if backend_name.startswith(prefix):
            versions[names[0]] = _package_version(*names)
    return versions


def manifest_path(out_dir: str | os.PathLike[str], name: str, profile: ShapeProfile) -> Path:
    return Path(out_dir) / f"{artifact_stem(name, profile)}.json"


def _move_artifact(backend: Backend, out_dir: Path) -> str | None:
    """Move a staged artefact file into out_dir; returns its file name (None if there is none)."""
    path = getattr(backend, "path", None)
    if path is None:
        return None
    target = out_dir / Path(path).name
    os.replace(path, target)
    backend.path = target  # type: ignore[attr-defined]
    return target.name


def build_backend(
    graph: SegmentationGraph,
    name: str,
    profile: ShapeProfile,
    device: torch.device,
    inputs: Sequence[Inputs],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    checkpoint_sha256: str = "",
    model_name: str = "",
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = 0.0,
) -> tuple[Backend, dict[str, Any]]:
    """Create `name`, gate it against eager fp32 on `inputs`, and (with out_dir) save it + manifest.

    Raises AgreementError (nothing is saved) or BackendUnavailable.
    """
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # e.g. the probe's cache on a first start
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir)) if out_dir else None
    try:
        start = time.perf_counter()
        candidate = create_backend(name, graph, profile, device, artifacts_dir=staging)
        reference = EagerBackend(graph, "fp32", device, profile)
        report = check_agreement(candidate, reference, inputs, threshold, margin)
        seconds = time.perf_counter() - start
        logger.info("%s built and checked in %.1f s: %s", name, seconds, report.summary())
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "backend": name,
            "precision": candidate.precision,
            "profile": profile.to_dict(),
            "agreement": report.to_dict(),
            "checkpoint_sha256": checkpoint_sha256,
            "model": model_name,
            "versions": library_versions(name),
            "exporter": getattr(candidate, "exporter", None),
            "build_seconds": round(seconds, 2),
            "created_unix": int(time.time()),
            "artifact": None,
        }
        if out_dir is not None:
            manifest["artifact"] = _move_artifact(candidate, Path(out_dir))
            text = json.dumps(manifest, indent=2, sort_keys=True)
            atomic_write_text(manifest_path(out_dir, name, profile), text)
        return candidate, manifest
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ArtifactMismatch(f"{path}: no manifest") from err
    except (OSError, ValueError) as err:
        raise ArtifactMismatch(f"{path}: unreadable manifest: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactMismatch(f"{path}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def verify_manifest(
    manifest: dict[str, Any],
    name: str,
    profile: ShapeProfile,
    checkpoint_sha256: str,
    where: str = "manifest",
) -> None:
    """ArtifactMismatch naming every field that differs from what the caller needs."""
    problems = []
    if manifest.get("backend") != name:
        problems.append(f"backend {manifest.get('backend')!r} != {name!r}")
    if manifest.get("checkpoint_sha256") != checkpoint_sha256:
        problems.append(
            f"checkpoint sha256 {str(manifest.get('checkpoint_sha256'))[:12]} != {checkpoint_sha256[:12]}"
        )
    built = manifest.get("profile") or {}
    for key in ("height", "width", "caption_length", "num_classes", "max_batch"):
        if built.get(key) != getattr(profile, key):
            problems.append(f"{key} {built.get(key)} != {getattr(profile, key)}")
    if not (manifest.get("agreement") or {}).get("passed"):
        problems.append("agreement check did not pass")
    for package, built_version in (manifest.get("versions") or {}).items():
        installed = library_versions(name).get(package)
        if installed != built_version:
            problems.append(f"{package} {built_version} != installed {installed}")
    if problems:
        raise ArtifactMismatch(f"{where}: refusing artefact: " + "; ".join(problems))


def load_backend(
    out_dir: str | os.PathLike[str],
    name: str,
    profile: ShapeProfile,
    checkpoint_sha256: str,
    device: torch.device,
    *,
    graph: SegmentationGraph | None = None,
) -> Backend:
    """Re-load a saved backend after checking its manifest; ArtifactMismatch if it does not fit.

    ONNX and TensorRT load their files; torch.compile has no file (the manifest only records that it
    passed with these library versions) and is re-created from `graph`.
    """
    path = manifest_path(out_dir, name, profile)
    manifest = read_manifest(path)
    verify_manifest(manifest, name, profile, checkpoint_sha256, str(path))
    artifact = Path(out_dir) / manifest["artifact"] if manifest.get("artifact") else None
    cls, precision = backend_class(name)
    if cls.artifact_suffix is not None and (artifact is None or not artifact.is_file()):
        raise ArtifactMismatch(f"{path}: artefact file {artifact} is missing")
    if cls.artifact_suffix is None and graph is None:
        raise ArtifactMismatch(f"{path}: {name} keeps no file; pass the graph to re-create it")
    return cls.reload(artifact, profile, precision, device, graph, manifest)


def obtain_backend(
    graph: SegmentationGraph,
    name: str,
    profile: ShapeProfile,
    device: torch.device,
    inputs_fn: Callable[[], Sequence[Inputs]],
    *,
    artifacts_dir: str | os.PathLike[str] | None = None,
    checkpoint_sha256: str = "",
    model_name: str = "",
    threshold: float = DEFAULT_THRESHOLD,
    margin: float = 0.0,
) -> Backend:
    """The backend the service runs: eager as is; compiled ones re-loaded if a matching artefact
    exists in `artifacts_dir`, else built, gated (AgreementError) and saved there."""
    if name not in COMPILED_BACKENDS:
        return create_backend(name, graph, profile, device)
    if artifacts_dir is not None and manifest_path(artifacts_dir, name, profile).is_file():
        try:
            return load_backend(artifacts_dir, name, profile, checkpoint_sha256, device, graph=graph)
        except ArtifactMismatch as err:
            logger.warning("%s; rebuilding", err)
    backend, _ = build_backend(
        graph,
        name,
        profile,
        device,
        inputs_fn(),
        out_dir=artifacts_dir,
        checkpoint_sha256=checkpoint_sha256,
        model_name=model_name,
        threshold=threshold,
        margin=margin,
    )
    return backend
