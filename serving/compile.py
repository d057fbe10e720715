"""Build, gate, save and re-load compiled backends; `python -m serving.compile` is the command line.

Every compiled artefact (torch.compile, ONNX, TensorRT) is compared with eager fp32 on the same
inputs before it is used or saved (`serving.agreement`), and refused below the threshold. A saved
artefact sits next to a JSON manifest (backend, shapes, agreement numbers, checkpoint SHA-256,
library versions); `load_backend` refuses a file whose manifest does not match the checkpoint, the
shape profile or the library versions it was built with.

    python -m serving.compile --checkpoint run/model.safetensors --backend onnxruntime \
        --height 512 --width 1024 --max-batch 8 --out artifacts/
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.class_sets import ClassSet
from model.hardware import resolve_device
from model.segmentor import SegmentationGraph, SemiDAViL
from model.text import TextEmbedder, pad_token_features
from serving.agreement import (
    DEFAULT_THRESHOLD,
    RANDOM_WEIGHTS_MARGIN,
    AgreementError,
    check_agreement,
    default_margin,
    images_to_inputs,
    smooth_images,
)
from serving.backends.base import Backend, BackendUnavailable, Inputs, ShapeProfile
from serving.backends.eager import EagerBackend
from serving.backends.factory import BACKEND_NAMES, COMPILED_BACKENDS, artifact_stem, create_backend
from serving.backends.onnx import ONNXRuntimeBackend
from serving.backends.tensorrt import TensorRTBackend
from serving.logs import configure_logging

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "semidavil-serving-artifact"
MANIFEST_VERSION = 1
AGREEMENT_CAPTIONS = (
    "a city street with cars parked along the road and tall buildings on both sides",
    "a road through green trees under a blue sky",
    "",
)
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


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Agreement inputs


def agreement_inputs(
    model: SemiDAViL,
    profile: ShapeProfile,
    class_set: ClassSet | None = None,
    images: Sequence[np.ndarray] | None = None,
    embedder: TextEmbedder | None = None,
    batches: Sequence[int] = (1, 3),
    seed: int = 0,
) -> list[Inputs]:
    """Inputs for the gate: real class embeddings and caption features from the model's text tower.

    Images: `images` (uint8 [H, W, 3] at the working size, e.g. the shared fixtures) cycled, else
    smooth synthetic ones. Class embeddings: `class_set` if it has `profile.num_classes` classes,
    else random unit vectors. Captions cycle through AGREEMENT_CAPTIONS (one is empty).
    """
    embedder = embedder or TextEmbedder(model.text)
    g = torch.Generator().manual_seed(seed)
    if class_set is not None and len(class_set) == profile.num_classes:
        class_embeds = embedder.class_embeddings(class_set.prompts()).cpu()
    else:
        dim = model.config.embed_dim
        class_embeds = torch.nn.functional.normalize(
            torch.randn(profile.num_classes, dim, generator=g), dim=-1
        )
    out: list[Inputs] = []
    offset = 0
    for b in sorted({min(max(1, b), profile.max_batch) for b in batches}):
        captions = [AGREEMENT_CAPTIONS[(offset + i) % len(AGREEMENT_CAPTIONS)] for i in range(b)]
        feats, mask = caption_inputs(embedder, captions, profile.caption_length)
        if images:
            picked = [images[(offset + i) % len(images)] for i in range(b)]
            out.append(images_to_inputs(picked, feats.cpu(), mask.cpu(), class_embeds))
        else:
            out.append(
                (smooth_images(b, profile.height, profile.width, g), feats.cpu(), mask.cpu(), class_embeds)
            )
        offset += b
    return out


def caption_inputs(
    embedder: TextEmbedder, captions: Sequence[str], length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (feats [B, length, c], mask [B, length]); token features beyond `length` are cut."""
    per_caption = [embedder.caption_tokens(c)[:length] for c in captions]
    return pad_token_features(per_caption, min_length=length)


# --------------------------------------------------------------------------------------------
# Build, save, load


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
            _write_json(manifest_path(out_dir, name, profile), manifest)
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
    if name == "onnxruntime":
        if artifact is None or not artifact.is_file():
            raise ArtifactMismatch(f"{path}: artefact file {artifact} is missing")
        return ONNXRuntimeBackend(artifact, profile, device, exporter=manifest.get("exporter"))
    if name.startswith("tensorrt"):
        if artifact is None or not artifact.is_file():
            raise ArtifactMismatch(f"{path}: artefact file {artifact} is missing")
        return TensorRTBackend.load(artifact, profile, name.partition("-")[2])
    if graph is None:
        raise ArtifactMismatch(f"{path}: {name} keeps no file; pass the graph to re-create it")
    return create_backend(name, graph, profile, device)


def obtain_backend(
    graph: SegmentationGraph,
    name: str,
    profile: ShapeProfile,
    device: torch.device,
    inputs_fn: Callable[[], Sequence[Inputs]],
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
            return load_backend(artifacts_dir, name, profile, checkpoint_sha256, device, graph)
        except ArtifactMismatch as err:
            logger.warning("%s; rebuilding", err)
    backend, _ = build_backend(
        graph,
        name,
        profile,
        device,
        inputs_fn(),
        artifacts_dir,
        checkpoint_sha256,
        model_name,
        threshold,
        margin,
    )
    return backend


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.compile",
        description="Build a compiled backend of a checkpoint's segmentation graph, check it against eager "
        "fp32 (argmax agreement gate) and save it with a JSON manifest.",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="SemiDAViL .safetensors checkpoint (default: the "
        "embedded default checkpoint, else random semidavil-tiny weights)",
    )
    parser.add_argument("--backend", required=True, choices=BACKEND_NAMES, help="backend to build")
    parser.add_argument(
        "--height", type=int, default=None, help="working height in pixels (default: checkpoint's)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="working width in pixels (default: checkpoint's)"
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="largest batch the artefact accepts (default 8)"
    )
    parser.add_argument("--opt-batch", type=int, default=None, help="batch TensorRT tunes for (default: max)")
    parser.add_argument("--caption-length", type=int, default=77, help="caption tokens L (default 77)")
    parser.add_argument(
        "--class-set",
        default=None,
        help="class set whose embeddings feed the check (default: the checkpoint's classes)",
    )
    parser.add_argument("--out", required=True, help="folder for the artefact and its manifest")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="min argmax agreement (0.995)"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=None,
        help="compare only pixels whose fp32 top-2 logit margin exceeds this (default: 0, all pixels; "
        f"{RANDOM_WEIGHTS_MARGIN} for random weights, whose logits are near-ties everywhere)",
    )
    parser.add_argument(
        "--images",
        nargs="*",
        default=[],
        help="image files or globs for the check (default: synthetic images)",
    )
    return parser.parse_args(argv)


def _load_images(patterns: Sequence[str], size: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    from serving.decode import Limits, decode_image

    files = sorted({f for p in patterns for f in glob.glob(p)})
    limits = Limits(max_body_bytes=1 << 30, max_pixels=1 << 28, max_side=1 << 16)
    return [
        cv2.resize(
            decode_image(Path(f).read_bytes(), limits).rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR
        )
        for f in files
    ]


def main(argv: Sequence[str] | None = None) -> int:
    from model.class_sets import get_class_set
    from serving.loading import default_class_set, load_serving_model, working_size_for

    args = parse_args(argv)
    configure_logging()
    served = load_serving_model(args.checkpoint)
    h, w = working_size_for(served)
    size = (args.height or h, args.width or w)
    class_set = get_class_set(args.class_set) if args.class_set else default_class_set(served.class_names)
    profile = ShapeProfile(
        size[0], size[1], args.caption_length, args.max_batch, len(class_set), args.opt_batch
    )
    device = resolve_device(args.device)
    served.model.to(device)
    inputs = agreement_inputs(served.model, profile, class_set, _load_images(args.images, size) or None)
    try:
        _, manifest = build_backend(
            served.model.seg,
            args.backend,
            profile,
            device,
            inputs,
            args.out,
            served.checkpoint_sha256,
            served.name,
            args.threshold,
            default_margin(served.random_weights) if args.margin is None else args.margin,
        )
    except AgreementError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BackendUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    print(json.dumps(manifest, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
