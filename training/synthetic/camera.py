"""A pinhole camera over a flat ground plane, looking down a (possibly curving) road.

World coordinates are metres in "road coordinates": `x` lateral (right positive) measured from
the camera's lateral position, `y` height above the ground, `z` depth along the road. The road
bends sideways by `curve * z**2` metres, so everything placed in road coordinates follows the
bend. Image coordinates are (column, row) in pixels, row 0 at the top.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """Projection from road coordinates (m) to image coordinates (px); see the module docstring.

    Attributes:
        height, width: image size in pixels.
        horizon: image row of the horizon (px).
        center_x: image column of the vanishing point of a straight road (px).
        focal: focal length (px).
        cam_height: camera height above the ground (m).
        curve: road curvature (1/m); the road centre shifts by `curve * z**2` m at depth z.
        z_near, z_far: nearest and farthest depth drawn (m); `z_near` lies below the bottom row.
    """

    height: int
    width: int
    horizon: float
    center_x: float
    focal: float
    cam_height: float
    curve: float
    z_near: float
    z_far: float

    def project(self, x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
        """Image points (..., 2) float64 (column, row) of road-coordinate points (broadcast)."""
        z = np.asarray(z, np.float64)
        out = np.empty((*np.broadcast(x, y, z).shape, 2), np.float64)
        out[..., 0] = self.center_x + self.focal * (x / z + self.curve * z)
        out[..., 1] = self.horizon + self.focal * (self.cam_height - y) / z
        return out

    def scale(self, z: float) -> float:
        """Pixels per metre for an upright object at depth `z` (m)."""
        return self.focal / z

    def ground_depth(self, row: float) -> float:
        """Depth (m) of the ground seen at image row `row` (must be below the horizon)."""
        return self.focal * self.cam_height / (row - self.horizon)

    @property
    def z_bottom(self) -> float:
        """Depth (m) of the ground at the bottom image row."""
        return self.ground_depth(float(self.height))


def make_camera(rng: np.random.Generator, height: int, width: int, straight: bool = False) -> Camera:
    """Sample a camera pose for an image of `height` x `width` px (a dash-cam at 1.3-1.6 m).

    The horizon lies at 36-46 % of the height, the vanishing point within the middle 16 % of the
    width; the road curves gently unless `straight`.
    """
    horizon = height * rng.uniform(0.36, 0.46)
    focal = width * rng.uniform(0.8, 0.95)
    cam_height = rng.uniform(1.3, 1.6)
    z_bottom = focal * cam_height / (height - horizon)
    curve = 0.0 if straight else rng.uniform(-1.0, 1.0) * 0.0006
    return Camera(
        height=height,
        width=width,
        horizon=horizon,
        center_x=width * rng.uniform(0.42, 0.58),
        focal=focal,
        cam_height=cam_height,
        curve=curve,
        z_near=0.6 * z_bottom,
        z_far=320.0,
    )


@functools.cache
def _fractions(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def depth_samples(z0: float, z1: float, step: float = 0.12) -> np.ndarray:
    """Depths from `z0` to `z1` (m), geometrically spaced by about `step` relative (>= 2 samples)."""
    ratio = z1 / z0
    n = max(2, math.ceil(math.log(ratio) / math.log1p(step)) + 1)
    return z0 * ratio ** _fractions(n)
