"""`render_scene`: one deterministic driving scene as (image, train ids, caption).

Seeding: a seed tuple (non-negative ints, e.g. `(seed, domain_code, split_code, index)` as the
benchmark writer uses) fixes the scene. The geometry, the label map and the caption depend on
the tuple only; the appearance additionally on the domain. Hence the same tuple rendered in
"source" and "target" gives the SAME label map and caption under two looks (a paired view used by
the tests); the benchmark itself puts the domain into the tuple, so its domains hold different
scenes drawn from the same distribution. No global random state is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.synthetic.appearance import DOMAINS, paint
from training.synthetic.captions import caption_scene
from training.synthetic.layout import Scene, sample_scene
from training.synthetic.raster import Raster

SeedLike = int | Sequence[int] | np.random.Generator
_GEOMETRY_STREAM = 0
_APPEARANCE_STREAM = 1
DOMAIN_CODES: dict[str, int] = {name: i for i, name in enumerate(DOMAINS)}


@dataclass
class Rendered:
    """Everything `render_scene` computes: the image, labels and caption plus the scene internals."""

    image: np.ndarray
    train_ids: np.ndarray
    caption: str
    scene: Scene
    raster: Raster


def _check(domain: str, height: int, width: int) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if height < 16 or width < 16:
        raise ValueError(f"image size must be at least 16x16, got {height}x{width}")


def scene_rngs(seed: SeedLike, domain: str) -> tuple[np.random.Generator, np.random.Generator]:
    """(geometry, appearance) generators for `seed`; see the module docstring.

    A Generator argument is split with `Generator.spawn`, which advances its state.
    """
    if isinstance(seed, np.random.Generator):
        geometry, appearance = seed.spawn(2)
        return geometry, appearance
    entropy = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if any(s < 0 for s in entropy):
        raise ValueError(f"seed values must be non-negative, got {entropy}")
    geometry = np.random.default_rng(np.random.SeedSequence([*entropy, _GEOMETRY_STREAM]))
    appearance = np.random.default_rng(
        np.random.SeedSequence([*entropy, _APPEARANCE_STREAM, DOMAIN_CODES[domain]])
    )
    return geometry, appearance


def render(seed: SeedLike, domain: str, height: int = 256, width: int = 512) -> Rendered:
    """Render one scene with its internals (scene layout and raster); see `render_scene`."""
    _check(domain, height, width)
    geometry, appearance = scene_rngs(seed, domain)
    scene = sample_scene(geometry, height, width)
    raster = scene.canvas.rasterize()
    caption = caption_scene(scene, raster, geometry)
    image = paint(scene, raster, domain, appearance)
    return Rendered(image, raster.train_ids, caption, scene, raster)


def render_scene(
    seed: SeedLike, domain: str, height: int = 256, width: int = 512
) -> tuple[np.ndarray, np.ndarray, str]:
    """Render a driving scene deterministically.

    Args:
        seed: a seed tuple of non-negative ints (or one int), or a numpy Generator.
        domain: "source" (game-engine look) or "target" (camera look).
        height, width: image size in pixels (at least 16 each).

    Returns:
        (image uint8 (H, W, 3) RGB, train_ids uint8 (H, W) Cityscapes train ids 0..18,
        caption str). Every pixel has a class (no 255).
    """
    out = render(seed, domain, height, width)
    return out.image, out.train_ids, out.caption
