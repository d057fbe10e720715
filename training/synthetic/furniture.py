"""Trees, bushes and street furniture: lamp posts, sign poles, traffic lights, overhead lights.

Every builder adds one painter object (its parts in back-to-front order) at the given depth.
Poles are strokes at least one pixel wide, so that they stay visible (and thin) at any distance.
"""

from __future__ import annotations

import numpy as np

from training.synthetic.camera import Camera
from training.synthetic.raster import Canvas, Detail, Part
from training.synthetic.shapes import Sprite, circle, rect
from training.synthetic.structures import C

LIT = (Detail.LAMP_RED, Detail.LAMP_AMBER, Detail.LAMP_GREEN)


def add_tree(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, size: float = 1.0
) -> None:
    """A deciduous tree (trunk and a crown of overlapping discs) or, rarely, a conifer."""
    inst = canvas.new_instance(C["vegetation"], "tree")
    sp = Sprite(camera, x, z, mirror=bool(rng.random() < 0.5))
    trunk_h = rng.uniform(1.8, 3.2) * size
    trunk_w = rng.uniform(0.22, 0.4) * size
    radius = rng.uniform(1.4, 2.6) * size
    cy = trunk_h + radius * 0.75
    trunk = Part(inst, [sp(rect(-trunk_w / 2, 0.0, trunk_w / 2, cy))], Detail.TRUNK)
    if rng.random() < 0.15:
        tiers = [
            np.array(
                [
                    [-radius * (1 - k / 4), cy - radius + k * radius * 0.8],
                    [radius * (1 - k / 4), cy - radius + k * radius * 0.8],
                    [0.0, cy + radius * (0.4 + 0.8 * k)],
                ]
            )
            for k in range(3)
        ]
        canvas.add(z, [trunk, Part(inst, [sp(t) for t in tiers])])
        return
    n = int(rng.integers(4, 8))
    blobs = [circle(0.0, cy, radius * 0.8, 18)]
    for _ in range(n):
        bx, by = rng.uniform(-0.7, 0.7) * radius, cy + rng.uniform(-0.45, 0.6) * radius
        blobs.append(circle(bx, by, radius * rng.uniform(0.45, 0.75), 16))
    canvas.add(z, [trunk, Part(inst, [sp(b) for b in blobs])])


def add_bush(canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float) -> None:
    """A low bush: a few overlapping discs resting on the ground."""
    inst = canvas.new_instance(C["vegetation"], "bush")
    sp = Sprite(camera, x, z)
    r = rng.uniform(0.4, 0.9)
    blobs = [
        circle(rng.uniform(-r, r), r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0)) for _ in range(3)
    ]
    canvas.add(z, [Part(inst, [sp(b) for b in blobs])])


def _pole_stroke(sp: Sprite, inst: int, pts: list[tuple[float, float]], width: float) -> Part:
    """A pole segment as a polyline of at least 1 px thickness."""
    thick = max(1, round(sp.px(width)))
    return Part(inst, [sp(np.array(pts, np.float64))], stroke=thick, closed=False)


def add_lamp_post(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, side: int
) -> None:
    """A street lamp: a tall pole with an arm reaching over the road and a lamp head (all pole)."""
    inst = canvas.new_instance(C["pole"], "lamp")
    sp = Sprite(camera, x, z)
    h = rng.uniform(6.0, 9.0)
    arm = rng.uniform(1.2, 2.5) * -side
    parts = [
        _pole_stroke(sp, inst, [(0.0, 0.0), (0.0, h)], rng.uniform(0.14, 0.22)),
        _pole_stroke(sp, inst, [(0.0, h), (arm * 0.6, h + 0.35), (arm, h + 0.3)], 0.1),
        Part(inst, [sp(rect(arm - 0.35 * np.sign(arm), h + 0.1, arm + 0.15 * np.sign(arm), h + 0.35))]),
        Part(
            inst,
            [sp(rect(arm - 0.3 * np.sign(arm), h + 0.08, arm + 0.1 * np.sign(arm), h + 0.16))],
            Detail.LAMP_WHITE,
        ),
    ]
    canvas.add(z, parts)


def _sign_parts(
    sp: Sprite, inst: int, rng: np.random.Generator, cx: float, top: float, big: bool
) -> list[Part]:
    """A traffic sign face (round, triangular, square or rectangular) hanging from `top`."""
    if big:
        w, h = rng.uniform(2.0, 3.2), rng.uniform(1.2, 1.8)
        return [Part(inst, [sp(rect(cx - w / 2, top - h, cx + w / 2, top))], Detail.SIGN_FACE)]
    shape = rng.choice(["round", "round", "triangle", "square", "rect"])
    if shape == "round":
        r = rng.uniform(0.3, 0.4)
        parts = [Part(inst, [sp(circle(cx, top - r, r, 16))], Detail.SIGN_FACE)]
        if rng.random() < 0.6:
            parts.append(Part(inst, [sp(circle(cx, top - r, r * 0.72, 16))], Detail.SIGN_INNER))
        return parts
    if shape == "triangle":
        s = rng.uniform(0.7, 0.9)
        tri = np.array([[cx - s / 2, top - s * 0.87], [cx + s / 2, top - s * 0.87], [cx, top]])
        inner = (tri - tri.mean(0)) * 0.6 + tri.mean(0)
        return [Part(inst, [sp(tri)], Detail.SIGN_FACE), Part(inst, [sp(inner)], Detail.SIGN_INNER)]
    w, h = (0.6, 0.6) if shape == "square" else (rng.uniform(0.9, 1.3), rng.uniform(0.35, 0.5))
    return [
        Part(inst, [sp(rect(cx - w / 2, top - h, cx + w / 2, top))], Detail.SIGN_FACE),
        Part(inst, [sp(rect(cx - w * 0.4, top - h * 0.8, cx + w * 0.4, top - h * 0.2))], Detail.SIGN_INNER),
    ]


def add_sign_pole(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, big: bool = False
) -> None:
    """A thin pole carrying one or two traffic signs (one big direction sign when `big`)."""
    pole = canvas.new_instance(C["pole"], "sign pole")
    sign = canvas.new_instance(C["traffic sign"], "big" if big else "")
    sp = Sprite(camera, x, z)
    h = rng.uniform(4.5, 6.0) if big else rng.uniform(2.3, 3.2)
    parts = [_pole_stroke(sp, pole, [(0.0, 0.0), (0.0, h)], 0.15 if big else rng.uniform(0.07, 0.1))]
    parts += _sign_parts(sp, sign, rng, 0.0, h + (1.0 if big else 0.05), big)
    if not big and rng.random() < 0.35:
        parts += _sign_parts(sp, sign, rng, 0.0, h - 0.85, False)
    canvas.add(z, parts)


def _light_box(sp: Sprite, inst: int, cx: float, top: float, lit: Detail | None) -> list[Part]:
    """A 3-lamp traffic light housing; `lit=None` shows its back (housing only)."""
    w, h = 0.32, 0.95
    parts = [Part(inst, [sp(rect(cx - w / 2, top - h, cx + w / 2, top))])]
    if lit is not None:
        for k, colour in enumerate(LIT):
            lamp = sp(circle(cx, top - 0.17 - 0.3 * k, 0.1, 10))
            parts.append(Part(inst, [lamp], colour if colour == lit else Detail.LAMP_OFF))
    return parts


def add_traffic_light(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, side: int, overhead: bool
) -> None:
    """A traffic light on a short pole, or (`overhead`) hanging from an arm over the road."""
    pole = canvas.new_instance(C["pole"], "light pole")
    light = canvas.new_instance(C["traffic light"])
    sp = Sprite(camera, x, z)
    lit = LIT[int(rng.integers(0, 3))] if rng.random() < 0.8 else None
    if overhead:
        h, arm = rng.uniform(5.5, 6.5), rng.uniform(3.0, 5.0) * -side
        parts = [
            _pole_stroke(sp, pole, [(0.0, 0.0), (0.0, h), (arm, h)], 0.18),
            *_light_box(sp, light, arm * 0.85, h - 0.05, lit),
        ]
        if rng.random() < 0.5:
            parts += _light_box(sp, light, 0.0, h - 1.8, lit)
    else:
        h = rng.uniform(3.0, 3.8)
        parts = [
            _pole_stroke(sp, pole, [(0.0, 0.0), (0.0, h - 0.9)], 0.12),
            *_light_box(sp, light, 0.0, h, lit),
        ]
    canvas.add(z, parts)
