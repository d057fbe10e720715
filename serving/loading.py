"""Which model the service runs: a checkpoint, the embedded default, or random tiny weights.

`load_serving_model(path)` -> `ServingModel`. A CLIP weights file (both towers, no decoder: the
mini-VLP's `clip.safetensors`) is served as dense zero-shot segmentation, flagged `zero_shot`.
With no path it uses the embedded default checkpoint
(`serving/default_checkpoint.safetensors`, shipped in the Bento); if that file does not exist it
builds `semidavil-tiny` with random weights (seed 0) and flags `random_weights`, which every
response then reports, so nobody mistakes its output for a trained model's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import load_model, model_tensors, tensors_digest, verify_checkpoint_file
from model.class_sets import CLASS_SETS, ClassSet, custom_class_set
from model.factory import create_model
from model.segmentor import SemiDAViL
from model.zero_shot import is_clip_weights, zero_shot_model

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default_checkpoint.safetensors"
RANDOM_MODEL = "semidavil-tiny"
RANDOM_SEED = 0
# Working size when the checkpoint header does not say how it was evaluated.
FALLBACK_WORKING_SIZE: dict[str, tuple[int, int]] = {"semidavil-tiny": (128, 256)}
DEFAULT_WORKING_SIZE = (512, 1024)


@dataclass
class ServingModel:
    """A model ready to serve plus what responses report about it."""

    model: SemiDAViL
    header: dict[str, Any]
    checkpoint_path: Path | None
    checkpoint_sha256: str
    random_weights: bool
    class_names: tuple[str, ...] = field(default_factory=tuple)
    zero_shot: bool = False  # CLIP towers only: MaskCLIP dense zero-shot, no trained decoder

    @property
    def name(self) -> str:
        return self.model.config.name

    @property
    def open_vocabulary(self) -> bool:
        """Whether custom class prompts can mean anything: the text tower came from pre-trained
        weights (or the file is CLIP weights). False for random weights and for checkpoints trained
        from a random text tower (`training_config.model.pretrained` null), whose prompt embeddings
        only ever met the training classes' prompts; True when the header does not say."""
        if self.random_weights:
            return False
        if self.zero_shot:
            return True
        model_cfg = (self.header.get("training_config") or {}).get("model") or {}
        return "pretrained" not in model_cfg or model_cfg["pretrained"] is not None

    @property
    def metrics(self) -> dict[str, Any]:
        """The header's `metrics` (evaluation, what it was trained on, commit); {} if none."""
        metrics = self.header.get("metrics")
        return metrics if isinstance(metrics, dict) else {}


def trained_on_line(served: ServingModel) -> str:
    """One line for people: what the checkpoint was trained on and its evaluation mIoU."""
    if served.random_weights:
        return "random weights: not trained on anything"
    if served.zero_shot:
        name = served.checkpoint_path.name if served.checkpoint_path else "CLIP weights"
        return f"zero-shot: CLIP towers of {name} only, no segmentation training (MaskCLIP dense features x class prompts)"
    m = served.metrics
    trained = m.get("trained_on") or {}
    what = (
        trained.get("summary") or m.get("experiment") or "unknown data (the checkpoint header does not say)"
    )
    if isinstance(m.get("miou"), (int, float)):
        what += f" · mIoU {m['miou']:.1f} on {m.get('benchmark') or 'its validation set'}"
    return what


def random_model(name: str = RANDOM_MODEL, seed: int = RANDOM_SEED) -> SemiDAViL:
    """A model with random weights from a fixed seed, without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name).eval()


def load_serving_model(
    path: str | os.PathLike[str] | None = None, default_checkpoint: Path | None = None
) -> ServingModel:
    """Load `path`, else the embedded default checkpoint, else random `semidavil-tiny` weights.

    `default_checkpoint` defaults to DEFAULT_CHECKPOINT (read at call time). Raises
    model.CheckpointError for a corrupt or mismatched file.
    """
    path = resolve_checkpoint_path(path, default_checkpoint)
    if path is None:
        model = random_model()
        digest = tensors_digest(model_tensors(model))
        header = {"model_config": model.config.to_dict(), "class_names": list(CLASS_SETS["cityscapes"].names)}
        return ServingModel(model, header, None, digest, True, CLASS_SETS["cityscapes"].names)
    if is_clip_weights(path):
        return zero_shot_serving_model(Path(path))
    model, header = load_model(path)
    names = tuple(header.get("class_names") or CLASS_SETS["cityscapes"].names)
    return ServingModel(model, header, Path(path), str(header["tensors_sha256"]), False, names)


def zero_shot_serving_model(path: Path) -> ServingModel:
    """Serve a CLIP weights file (towers, no decoder) as dense zero-shot segmentation."""
    model = zero_shot_model(path)
    names = CLASS_SETS["cityscapes"].names
    header = {"model_config": model.config.to_dict(), "class_names": list(names), "zero_shot": True}
    digest = tensors_digest(model_tensors(model))
    return ServingModel(model, header, path, digest, False, names, zero_shot=True)


def resolve_checkpoint_path(
    path: str | os.PathLike[str] | None, default_checkpoint: Path | None = None
) -> Path | None:
    """The file `load_serving_model(path)` would read: `path`, else the embedded default, else None."""
    default_checkpoint = default_checkpoint or DEFAULT_CHECKPOINT
    if path is None and default_checkpoint.is_file():
        return default_checkpoint
    return Path(path) if path is not None else None


def verify_checkpoint(
    path: str | os.PathLike[str] | None, default_checkpoint: Path | None = None
) -> Path | None:
    """Fully check the checkpoint the service would load (header, tensor digest, config, weights),
    without building the model (the names and shapes come from the cached weight signature).

    Returns its path (None: random weights, nothing to check); raises model.CheckpointError, whose
    message names the file and the problem, for a missing, truncated, corrupt or mismatched file.
    """
    resolved = resolve_checkpoint_path(path, default_checkpoint)
    if resolved is not None and not is_clip_weights(resolved):
        verify_checkpoint_file(resolved)
    return resolved


def default_class_set(class_names: tuple[str, ...]) -> ClassSet:
    """The named class set whose names match the checkpoint's, else a custom set of those names."""
    for class_set in CLASS_SETS.values():
        if class_set.names == tuple(class_names):
            return class_set
    return custom_class_set(list(class_names))


def _eval_size(header: dict[str, Any]) -> Any:
    for source in (header.get("training_config") or {}, header.get("metrics") or {}):
        size = (source.get("eval") or {}).get("size") if isinstance(source, dict) else None
        if size:
            return size
    return None


def working_size_for(serving_model: ServingModel) -> tuple[int, int]:
    """(H, W) the model runs at: the checkpoint's evaluation size, else a per-model default."""
    size = _eval_size(serving_model.header)
    if size is None:
        size = FALLBACK_WORKING_SIZE.get(serving_model.name, DEFAULT_WORKING_SIZE)
    h, w = (int(v) for v in size)
    check_working_size((h, w), serving_model.model.seg.visual.patch_size)
    return h, w


def check_working_size(size: tuple[int, int], patch_size: int) -> None:
    """ValueError unless both sides are positive multiples of the patch size."""
    h, w = size
    if h < patch_size or w < patch_size or h % patch_size or w % patch_size:
        raise ValueError(f"working size {h}x{w} must be positive multiples of the patch size {patch_size}")
