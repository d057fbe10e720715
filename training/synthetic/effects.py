"""The target domain's camera pipeline: textures, sky, lighting, shadows, blur, noise and JPEG.

Operates on float32 (H, W, 3) RGB images in [0, 255] and the scene's train-id map; every random
choice comes from the caller's generator. The source domain uses none of this.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np
import numpy.typing as npt

from training.synthetic.camera import Camera
from training.synthetic.raster import Raster
from training.synthetic.shapes import ground_strip
from training.synthetic.structures import C

if TYPE_CHECKING:
    from training.synthetic.layout import Scene

GROUND = (C["road"], C["sidewalk"], C["terrain"])


def smooth_noise(
    rng: np.random.Generator, height: int, width: int, cell: float, aspect: float = 1.0
) -> np.ndarray:
    """float32 (H, W) zero-mean, unit-variance noise with features about `cell` px across.

    `aspect` > 1 stretches features horizontally (clouds).
    """
    gh = max(2, int(height / cell) + 2)
    gw = max(2, int(width / (cell * aspect)) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    grid = (grid - grid.mean()) / (grid.std() + 1e-6)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def class_lookup(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`table[ids]` for uint8 (H, W) train ids and a 256-entry table (cv2.LUT: ~10x numpy)."""
    return cv2.LUT(ids, table)


def _texture_luts() -> dict[str, np.ndarray]:
    """Per-class texture strengths (float32[256] lookups indexed by train id)."""
    names = ("mul_fine", "mul_coarse", "add_fine", "add_coarse", "bands", "terrain")
    luts = {n: np.zeros(256, np.float32) for n in names}
    luts["mul_coarse"][:] = 0.05
    for cls, add_coarse, add_fine in (
        (C["road"], 4.0, 4.0),
        (C["sidewalk"], 5.0, 3.0),
        (C["wall"], 5.0, 3.0),
    ):
        luts["add_coarse"][cls], luts["add_fine"][cls] = add_coarse, add_fine
    luts["bands"][C["building"]] = 0.14
    luts["mul_fine"][C["building"]] = 0.04
    luts["mul_fine"][C["vegetation"]], luts["mul_coarse"][C["vegetation"]] = 0.22, 0.1
    luts["mul_fine"][C["terrain"]], luts["terrain"][C["terrain"]] = 0.12, 1.0
    return luts


_LUTS = _texture_luts()


def _textures(img: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> None:
    """Class-dependent surface textures (in place): asphalt, paving, facade bands, foliage, grass."""
    h, w = ids.shape
    coarse = smooth_noise(rng, h, w, 24.0)
    fine = np.clip(smooth_noise(rng, h, w, 2.5), -2.0, 2.0)
    period = rng.uniform(5.0, 9.0) * h / 256
    bands = (np.sin(2 * np.pi * np.arange(h) / period + rng.uniform(0, 6.3)) > 0.55).astype(np.float32)
    lut = {k: class_lookup(ids, v) for k, v in _LUTS.items()}
    mul = 1.0 + lut["mul_fine"] * fine + lut["mul_coarse"] * coarse - lut["bands"] * bands[:, None]
    add = lut["add_fine"] * fine + lut["add_coarse"] * coarse
    img *= mul[..., None]
    img += add[..., None]
    img += (lut["terrain"] * coarse)[..., None] * np.array([9.0, 6.0, -3.0], np.float32)


def paint_sky(
    img: np.ndarray,
    ids: np.ndarray,
    camera: Camera,
    weather: str,
    zenith: tuple[int, int, int],
    horizon: tuple[int, int, int],
    rng: np.random.Generator,
) -> None:
    """Replace the sky (in place) by a zenith-to-horizon gradient with clouds.

    Clouds are overcast when cloudy, sparse when sunny and in warm bands at dusk.
    """
    rows = min(camera.height, int(camera.horizon) + 2)
    if rows <= 0:
        return
    t = np.clip(np.arange(rows, dtype=np.float32) / max(camera.horizon, 1.0), 0.0, 1.0)[:, None, None] ** 1.5
    gradient = (1 - t) * np.asarray(zenith, np.float32) + t * np.asarray(horizon, np.float32)
    cloud = smooth_noise(
        rng, rows, camera.width, rng.uniform(18.0, 40.0) * camera.height / 256, rng.uniform(2.0, 4.0)
    )
    if weather == "cloudy":
        alpha = np.clip(0.45 + 0.35 * cloud, 0.0, 1.0)
    elif weather == "sunny":
        alpha = np.clip(0.7 * (cloud - 0.8), 0.0, 0.8)
    else:
        alpha = np.clip(0.5 * (cloud - 0.3), 0.0, 0.6)
    white = {"cloudy": (228, 230, 234), "sunny": (246, 246, 248), "dusk": (206, 138, 120)}[weather]
    sky = gradient * (1 - alpha[..., None]) + alpha[..., None] * np.asarray(white, np.float32)
    is_sky = (ids[:rows] == C["sky"])[..., None]
    img[:rows] = np.where(is_sky, sky, img[:rows])


def _shadows(img: np.ndarray, ids: np.ndarray, scene: Scene, rng: np.random.Generator) -> int:
    """Cast building shadows on the ground and darken facades on the sun-far side; returns the side."""
    cam, st = scene.camera, scene.street
    side = 1 if rng.random() < 0.5 else -1
    mask: np.ndarray = np.zeros(ids.shape, np.uint8)
    depth_reach = rng.uniform(2.0, (st.road_right - st.road_left) * 0.7)
    outer = st.edge(side) + side * (st.walk(side) + st.verge(side) + 2.0)
    inner = st.edge(side) - side * depth_reach
    z = rng.uniform(cam.z_near, 15.0)
    while z < 150.0:
        length = rng.uniform(8.0, 40.0)
        poly = ground_strip(cam, min(inner, outer), max(inner, outer), z, z + length)
        cv2.fillPoly(mask, [np.round(poly * 4).astype(np.int32)], 1, cv2.LINE_8, 2)
        z += length + rng.uniform(3.0, 20.0)
    mask = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5)
    strength = np.zeros(256, np.float32)
    strength[list(GROUND)] = rng.uniform(0.3, 0.45)
    darken = 1.0 - class_lookup(ids, strength) * mask
    shaded_cols = ((np.arange(ids.shape[1]) - cam.center_x) * side > 0).astype(np.float32)
    facade = np.zeros(256, np.float32)
    facade[C["building"]] = rng.uniform(0.15, 0.3)
    darken -= class_lookup(ids, facade) * shaded_cols[None, :]
    img *= darken[..., None]
    return side


@functools.lru_cache(maxsize=8)
def _radius2(height: int, width: int) -> np.ndarray:
    """float32 (H, W) squared distance from the image centre, 1 at the middle of each border."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2


def _lighting(
    img: np.ndarray, ids: np.ndarray, scene: Scene, tint: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """Global exposure, contrast, white balance, sun gradient and vignetting."""
    h, w = ids.shape
    weather = scene.weather
    sun_side = _shadows(img, ids, scene, rng) if weather == "sunny" and rng.random() < 0.85 else 0
    gain = {
        "sunny": rng.uniform(1.0, 1.12),
        "cloudy": rng.uniform(0.88, 1.0),
        "dusk": rng.uniform(0.85, 1.0),
    }[weather]
    contrast = {
        "sunny": rng.uniform(1.1, 1.3),
        "cloudy": rng.uniform(0.72, 0.88),
        "dusk": rng.uniform(0.85, 1.0),
    }[weather]
    balance = np.asarray(tint, np.float32) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    cols = np.linspace(-0.5, 0.5, w, dtype=np.float32)
    ramp = 1.0 + (rng.uniform(0.1, 0.25) * (-sun_side if sun_side else rng.choice([-1, 1])) * cols)
    vignette = 1.0 - rng.uniform(0.08, 0.25) * _radius2(h, w) / 2
    mean = img[::4, ::4].reshape(-1, 3).mean(0)
    img -= mean
    img *= contrast * gain * balance
    img += mean * gain * balance
    img *= (ramp[None, :] * vignette)[..., None]
    return img


def camera_pipeline(
    image: np.ndarray,
    raster: Raster,
    scene: Scene,
    tint: tuple[float, float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn a flat-coloured float32 (H, W, 3) image into a camera-like uint8 RGB image."""
    ids = raster.train_ids
    img = np.asarray(image, np.float32)
    _textures(img, ids, rng)
    img = _lighting(img, ids, scene, tint, rng)
    # cv2's stubs drop the dtype: the blur of a float32 image is float32
    img = cast("npt.NDArray[np.float32]", cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 1.2)))
    h, w = ids.shape
    # Sensor noise: uniform bytes scaled to the wanted standard deviation (10x cheaper than normal).
    sigma = rng.uniform(2.5, 5.0)
    noise = np.frombuffer(rng.bytes(h * w * 3), np.uint8).reshape(h, w, 3).astype(np.float32)
    img += (noise - 127.5) * (sigma / 73.9)
    out = cv2.convertScaleAbs(img)
    if rng.random() < 0.7:
        quality = int(rng.integers(55, 90))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            assert decoded is not None  # a JPEG imencode has just written
            out = np.ascontiguousarray(decoded[..., ::-1])
    return out
