"""Road vehicles as projected 3D boxes: cars (sedans, SUVs, vans), trucks, buses and trams.

The face nearest the camera is the rear (same direction) or the front (`oncoming`); the side
face turned towards the camera's line is visible when the vehicle is off-centre. Cars, trucks
and buses share body colours (see `appearance`), so shape and context separate them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synthetic.camera import Camera
from training.synthetic.raster import Canvas, Detail, Part
from training.synthetic.shapes import box_hull, front_rect, side_ellipse, side_quad
from training.synthetic.structures import C

KIND_CLASS = {"car": C["car"], "truck": C["truck"], "bus": C["bus"], "tram": C["train"]}
# Length (m) of each kind, used by the layout to space vehicles in a lane.
TYPICAL_LENGTH = {"car": 4.5, "truck": 10.0, "bus": 12.0, "tram": 28.0}


@dataclass(frozen=True)
class Box:
    """A vehicle body box: lateral centre x, half width, bottom/top heights, near/far depths."""

    x: float
    half_w: float
    y0: float
    y1: float
    z0: float
    z1: float

    def hull(self, camera: Camera) -> np.ndarray:
        return box_hull(
            camera, self.x - self.half_w, self.x + self.half_w, self.y0, self.y1, self.z0, self.z1
        )

    def side_x(self) -> float | None:
        """Lateral position of the side face visible from the camera, or None when head-on."""
        if self.x - self.half_w > 0.2:
            return self.x - self.half_w
        if self.x + self.half_w < -0.2:
            return self.x + self.half_w
        return None


def _pair(camera: Camera, b: Box, inset: float, width: float, y0: float, y1: float) -> list[np.ndarray]:
    """Two mirrored rectangles on the near face, `inset` m from its left and right edges."""
    x0, x1 = b.x - b.half_w + inset, b.x + b.half_w - inset
    return [
        front_rect(camera, x0, x0 + width, y0, y1, b.z0),
        front_rect(camera, x1 - width, x1, y0, y1, b.z0),
    ]


def _near_face_details(
    camera: Camera, inst: int, b: Box, oncoming: bool, glass: tuple[float, float] | None, lamp_y: float
) -> list[Part]:
    """Window (unless `glass` is None), lamps and tyres on the face nearest the camera."""
    parts = []
    if glass is not None:
        pane = front_rect(camera, b.x - b.half_w + 0.12, b.x + b.half_w - 0.12, glass[0], glass[1], b.z0)
        parts.append(Part(inst, [pane], Detail.GLASS))
    lamp = Detail.LAMP_WHITE if oncoming else Detail.LAMP_RED
    parts.append(Part(inst, _pair(camera, b, 0.08, 0.27, lamp_y, lamp_y + 0.16), lamp, disjoint=True))
    parts.append(Part(inst, _pair(camera, b, 0.05, 0.27, 0.0, 0.45), Detail.WHEEL, disjoint=True))
    return parts


def _side_wheels(camera: Camera, inst: int, b: Box, zs: list[float], r: float) -> list[Part]:
    xs = b.side_x()
    if xs is None:
        return []
    return [Part(inst, [side_ellipse(camera, xs, r, z, r) for z in zs], Detail.WHEEL)]


def _side_windows(camera: Camera, inst: int, b: Box, y0: float, y1: float, pane: float) -> list[Part]:
    """A band of window panes along the visible side face."""
    xs = b.side_x()
    if xs is None:
        return []
    edges = np.arange(b.z0 + 0.4, b.z1 - 0.4, pane)
    quads = [side_quad(camera, xs, y0, y1, za + 0.08, min(za + pane, b.z1 - 0.4) - 0.08) for za in edges]
    return [Part(inst, quads, Detail.GLASS, disjoint=True)] if quads else []


def _car(
    camera: Camera, rng: np.random.Generator, inst: int, x: float, z0: float, oncoming: bool
) -> list[Part]:
    tall = rng.random() < 0.3
    w, length = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9)
    body_h = rng.uniform(0.9, 1.05)
    top = rng.uniform(1.7, 2.0) if tall else rng.uniform(1.38, 1.5)
    body = Box(x, w / 2, 0.15, body_h, z0, z0 + length)
    c0 = z0 + (0.3 if tall else rng.uniform(0.7, 1.0))
    cabin = Box(x, w / 2 - 0.1, body_h, top, c0, z0 + length - rng.uniform(0.9, 1.3))
    parts = [Part(inst, [body.hull(camera)]), Part(inst, [cabin.hull(camera)])]
    parts += _side_windows(camera, inst, cabin, body_h + 0.08, top - 0.08, (cabin.z1 - cabin.z0) / 2)
    parts += _side_wheels(camera, inst, body, [z0 + 0.8, z0 + length - 0.8], 0.32)
    glass = Part(
        inst,
        [front_rect(camera, x - w / 2 + 0.22, x + w / 2 - 0.22, body_h + 0.06, top - 0.08, c0)],
        Detail.GLASS,
    )
    return [*parts, glass, *_near_face_details(camera, inst, body, oncoming, None, body_h - 0.32)]


def _truck(
    camera: Camera, rng: np.random.Generator, inst: int, x: float, z0: float, oncoming: bool
) -> list[Part]:
    w, length = 2.5, rng.uniform(6.0, 9.0)
    cargo_h, cab_h, cab_l = rng.uniform(3.2, 4.0), rng.uniform(2.7, 3.0), 2.2
    if oncoming:
        cab = Box(x, w / 2 - 0.05, 0.35, cab_h, z0, z0 + cab_l)
        cargo = Box(x, w / 2, 0.6, cargo_h, z0 + cab_l + 0.2, z0 + cab_l + 0.2 + length)
        order = [Part(inst, [cargo.hull(camera)]), Part(inst, [cab.hull(camera)], Detail.CAB)]
        near, glass = cab, (1.6, cab_h - 0.25)
    else:
        cargo = Box(x, w / 2, 0.6, cargo_h, z0, z0 + length)
        cab = Box(x, w / 2 - 0.05, 0.35, cab_h, z0 + length + 0.2, z0 + length + 0.2 + cab_l)
        order = [Part(inst, [cab.hull(camera)], Detail.CAB), Part(inst, [cargo.hull(camera)])]
        near, glass = cargo, None
    order += _side_wheels(camera, inst, cargo, [cargo.z0 + 1.0, cargo.z1 - 1.2], 0.5)
    order += _side_wheels(camera, inst, cab, [cab.z0 + cab_l / 2], 0.5)
    return order + _near_face_details(camera, inst, near, oncoming, glass, 0.7)


def _long_box(
    camera: Camera, rng: np.random.Generator, inst: int, x: float, z0: float, oncoming: bool, tram: bool
) -> list[Part]:
    """A bus or a tram: a tall long box with a band of side windows."""
    w = 2.65 if tram else 2.55
    length = rng.uniform(25.0, 32.0) if tram else rng.uniform(11.0, 13.0)
    h = rng.uniform(3.3, 3.6) if tram else rng.uniform(3.0, 3.3)
    body = Box(x, w / 2, 0.3, h, z0, z0 + length)
    parts = [Part(inst, [body.hull(camera)])]
    parts += _side_windows(camera, inst, body, 1.2, h - 0.6, 1.6)
    parts += _side_wheels(camera, inst, body, [z0 + 2.5, z0 + length - 3.0], 0.5)
    glass = (1.0, h - 0.35) if oncoming else (1.8, h - 0.45)
    parts += _near_face_details(camera, inst, body, oncoming, glass, 0.6)
    if oncoming:  # destination display above the windscreen
        parts.append(
            Part(inst, [front_rect(camera, x - 0.8, x + 0.8, h - 0.3, h - 0.08, z0)], Detail.LAMP_AMBER)
        )
    return parts


def add_vehicle(
    canvas: Canvas,
    camera: Camera,
    rng: np.random.Generator,
    kind: str,
    x: float,
    z0: float,
    oncoming: bool = False,
    tag: str = "",
) -> int:
    """A vehicle of `kind` ("car", "truck", "bus", "tram") centred at lateral x, near face at z0."""
    inst = canvas.new_instance(KIND_CLASS[kind], tag or ("oncoming" if oncoming else "ahead"))
    if kind == "car":
        parts = _car(camera, rng, inst, x, z0, oncoming)
    elif kind == "truck":
        parts = _truck(camera, rng, inst, x, z0, oncoming)
    else:
        parts = _long_box(camera, rng, inst, x, z0, oncoming, tram=kind == "tram")
    canvas.add(z0, parts)
    return inst
