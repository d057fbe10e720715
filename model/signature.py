"""The weight signature of a model config: parameter and buffer name -> shape, cached on disk.

A checkpoint fits a config exactly when its tensors have these names and shapes (what a strict
`load_state_dict` checks). Computing the signature means building the model, which imports
open_clip (seconds: it pulls in transformers and torchvision); processes that only check a
checkpoint (the arbiter of `bentoml serve`, before any worker starts) read it from a small JSON
cache instead. The cache key covers the config, the source of this package and the open_clip
version, so any change to how the model is built computes a new signature.

    shapes = weight_signature(cfg)       # {"seg.visual.conv1.weight": (192, 3, 16, 16), ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from model._env import cache_dir
from model.atomic import atomic_write_text
from model.config import ModelConfig

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
Signature = dict[str, tuple[int, ...]]


@lru_cache(maxsize=1)
def _source_digest() -> str:
    # Every module of the package can change what create_model builds; hashing ~30 small files
    # costs a few milliseconds.
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _open_clip_version() -> str:
    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return "unknown"


def signature_key(cfg: ModelConfig) -> str:
    """Hex key of (config, package source, open_clip version)."""
    payload = json.dumps(
        {"config": cfg.to_dict(), "source": _source_digest(), "open_clip": _open_clip_version()},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def compute_signature(cfg: ModelConfig) -> Signature:
    """Build the model (random weights) and read its state dict's shapes."""
    from model.factory import create_model

    return {name: tuple(t.shape) for name, t in create_model(cfg).state_dict().items()}


def _read_cached(path: Path) -> Signature | None:
    try:
        raw = json.loads(path.read_text())
        return {str(name): tuple(int(d) for d in shape) for name, shape in raw["shapes"].items()}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        # A damaged cache entry is recomputed, never trusted.
        logger.warning("%s: ignoring a broken weight-signature cache entry (%s)", path, err)
        return None


def weight_signature(cfg: ModelConfig, cache: Path | None = None) -> Signature:
    """name -> shape of every tensor a checkpoint of `cfg` must hold; cached under `cache`
    (default `cache_dir()`); an unwritable cache only costs the recomputation next time."""
    path = (cache or cache_dir()) / "signatures" / f"{cfg.name}-{signature_key(cfg)}.json"
    cached = _read_cached(path)
    if cached is not None:
        return cached
    shapes = compute_signature(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"config": cfg.name, "shapes": shapes}))
    except OSError as err:
        logger.info("weight-signature cache not written (%s): %s", path, err)
    return shapes
