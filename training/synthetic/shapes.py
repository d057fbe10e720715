"""Projected primitives: sprites (upright flat figures), planes along the road and 3D boxes.

All functions return float64 (N, 2) image polygons (column, row) ready for `raster.Part`.
Sprites are drawn in local metres, x right and y up from the ground contact point.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from training.synthetic.camera import Camera, depth_samples


@functools.cache
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def circle(cx: float, cy: float, r: float, n: int = 14) -> np.ndarray:
    """(n, 2) polygon approximating a circle of radius `r` around (cx, cy)."""
    return _unit_circle(n) * r + (cx, cy)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 14) -> np.ndarray:
    """(n, 2) polygon approximating an axis-aligned ellipse."""
    return _unit_circle(n) * (rx, ry) + (cx, cy)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """(4, 2) axis-aligned rectangle with corners (x0, y0) and (x1, y1)."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def limb(a: tuple[float, float], b: tuple[float, float], wa: float, wb: float) -> np.ndarray:
    """(4, 2) quad from point a (width wa) to point b (width wb): an arm, leg or bar."""
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    n = np.hypot(dx, dy) or 1.0
    px, py = -dy / n, dx / n
    return np.array(
        [
            [ax + px * wa / 2, ay + py * wa / 2],
            [bx + px * wb / 2, by + py * wb / 2],
            [bx - px * wb / 2, by - py * wb / 2],
            [ax - px * wa / 2, ay - py * wa / 2],
        ]
    )


class Sprite:
    """Maps local metres of an upright figure standing at road point (x, z) to image pixels.

    `mirror=True` flips the figure horizontally (facing the other way).
    """

    def __init__(self, camera: Camera, x: float, z: float, mirror: bool = False) -> None:
        self.origin = camera.project(x, 0.0, z)
        self.scale = camera.scale(z)
        self.sign = -1.0 if mirror else 1.0

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        out = np.empty_like(pts)
        out[:, 0] = self.origin[0] + self.sign * self.scale * pts[:, 0]
        out[:, 1] = self.origin[1] - self.scale * pts[:, 1]
        return out

    def px(self, metres: float) -> float:
        """Length in pixels of `metres` at this sprite's depth."""
        return self.scale * metres


def side_plane(camera: Camera, x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """A vertical plane at lateral `x` from height y0 to y1 and depth z0 to z1 (follows the bend)."""
    zs = depth_samples(z0, z1, 0.25) if camera.curve else np.array([z0, z1])
    bottom = camera.project(x, y0, zs)
    top = camera.project(x, y1, zs[::-1])
    return np.concatenate([bottom, top])


def sloped_plane(
    camera: Camera, xa: float, ya: float, xb: float, yb: float, z0: float, z1: float
) -> np.ndarray:
    """A plane along the road through the lines (xa, ya) and (xb, yb), from depth z0 to z1."""
    zs = depth_samples(z0, z1, 0.25) if camera.curve else np.array([z0, z1])
    return np.concatenate([camera.project(xa, ya, zs), camera.project(xb, yb, zs[::-1])])


def ground_strip(camera: Camera, xa: float, xb: float, z0: float, z1: float) -> np.ndarray:
    """The ground between lateral positions xa and xb from depth z0 to z1."""
    zs = depth_samples(z0, z1, 0.08)
    return np.concatenate([camera.project(xa, 0.0, zs), camera.project(xb, 0.0, zs[::-1])])


def front_rect(camera: Camera, x0: float, x1: float, y0: float, y1: float, z: float) -> np.ndarray:
    """A rectangle facing the camera at depth z."""
    xs = np.array([x0, x1, x1, x0])
    ys = np.array([y0, y0, y1, y1])
    return camera.project(xs, ys, z)


def box_corners(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """(8, 3) corners of an axis-aligned box."""
    return np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], np.float64)


def box_hull(camera: Camera, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """The silhouette (convex hull of the projected corners) of a box in front of the camera."""
    c = box_corners(x0, x1, y0, y1, z0, z1)
    pts = camera.project(c[:, 0], c[:, 1], c[:, 2])
    return cv2.convexHull(pts.astype(np.float32))[:, 0, :].astype(np.float64)


def side_quad(camera: Camera, x: float, y0: float, y1: float, z0: float, z1: float) -> np.ndarray:
    """A short vertical quad at lateral x (no bend sampling): windows, wheels' boxes, panels."""
    return camera.project(np.array([x, x, x, x]), np.array([y0, y1, y1, y0]), np.array([z0, z0, z1, z1]))


def side_ellipse(camera: Camera, x: float, yc: float, zc: float, r: float, n: int = 10) -> np.ndarray:
    """A circle of radius r in the vertical plane at lateral x (a wheel seen from the side)."""
    unit = _unit_circle(n)
    return camera.project(x, yc + r * unit[:, 1], zc + r * unit[:, 0])
