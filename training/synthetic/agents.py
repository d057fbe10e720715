"""People and two-wheelers: pedestrians, cyclists, motorcyclists, parked bicycles and motorcycles.

Figures are side/front-view sprites in metres (x forward, y up, origin on the ground). A person and
a rider share the same body model and clothing, so only context (being on a bicycle or motorcycle)
tells them apart, as in Cityscapes.
"""

from __future__ import annotations

import numpy as np

from training.synthetic.camera import Camera
from training.synthetic.raster import Canvas, Detail, Part
from training.synthetic.shapes import Sprite, circle, limb
from training.synthetic.structures import C


def _head(sp: Sprite, inst: int, cx: float, cy: float, r: float, helmet: bool = False) -> list[Part]:
    """Head (skin) with hair or a helmet covering its top."""
    t = np.linspace(0.15 * np.pi, 0.85 * np.pi, 8) if not helmet else np.linspace(-0.1, np.pi + 0.1, 10)
    cap = np.stack([cx + r * 1.05 * np.cos(t), cy + r * 1.05 * np.sin(t) - (0.0 if helmet else 0.02)], 1)
    return [Part(inst, [sp(circle(cx, cy, r, 12))], Detail.SKIN), Part(inst, [sp(cap)], Detail.HAIR)]


def add_person(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, tag: str = "walking"
) -> int:
    """A pedestrian standing or walking at road point (x, z); returns the instance."""
    inst = canvas.new_instance(C["person"], tag)
    sp = Sprite(camera, x, z, mirror=bool(rng.random() < 0.5))
    h = rng.uniform(1.55, 1.95)
    k = h / 1.75
    side_view = rng.random() < 0.5
    sw = (0.13 if side_view else 0.2) * k
    shoulder, hip = 0.81 * h, 0.5 * h
    stride = rng.uniform(0.0, 0.35) * k if side_view else rng.uniform(0.0, 0.08)
    swing = stride * 0.6
    torso = np.array([[-sw, shoulder], [sw, shoulder], [0.8 * sw, hip], [-0.8 * sw, hip]])
    legs = [
        limb((-0.07 * k, hip), (-stride / 2 - 0.04, 0.03), 0.16 * k, 0.11 * k),
        limb((0.07 * k, hip), (stride / 2 + 0.04, 0.03), 0.16 * k, 0.11 * k),
    ]
    arm_far = limb((-sw * 0.8, shoulder - 0.03), (-sw - 0.02 - swing, hip + 0.02), 0.1 * k, 0.08 * k)
    arm_near = limb((sw * 0.8, shoulder - 0.03), (sw + 0.02 + swing, hip + 0.02), 0.1 * k, 0.08 * k)
    sleeve = Detail.BODY if rng.random() < 0.7 else Detail.SKIN
    parts = [
        Part(inst, [sp(arm_far)], sleeve),
        Part(inst, [sp(p) for p in legs], Detail.LOWER),
        Part(inst, [sp(torso)]),
        Part(inst, [sp(arm_near)], sleeve),
        *_head(sp, inst, 0.0, h - 0.115 * k, 0.115 * k),
    ]
    if rng.random() < 0.2:  # a bag or backpack: part of the person
        parts.append(
            Part(
                inst,
                [
                    sp(
                        np.array(
                            [
                                [-sw - 0.12, hip + 0.1],
                                [-sw, hip + 0.1],
                                [-sw, shoulder - 0.1],
                                [-sw - 0.12, shoulder - 0.15],
                            ]
                        )
                    )
                ],
            )
        )
    canvas.add(z, parts)
    return inst


def _bicycle_parts(sp: Sprite, inst: int) -> list[Part]:
    """A bicycle seen from the side: two tyres and a diamond frame (strokes)."""
    r = 0.34
    rear, front, bb = (-0.52, r), (0.52, r), (-0.02, 0.3)
    seat, head = (-0.2, 0.88), (0.36, 0.88)
    tyre = max(1, round(sp.px(0.06)))
    tube = max(1, round(sp.px(0.045)))
    frame = [
        np.array(p, np.float64)
        for p in ([rear, bb, seat, rear], [seat, head, bb], [head, front], [head, (0.42, 1.0), (0.3, 1.02)])
    ]
    return [
        Part(inst, [sp(circle(*rear, r, 14)), sp(circle(*front, r, 14))], Detail.WHEEL, stroke=tyre),
        Part(inst, [sp(f) for f in frame], stroke=tube, closed=False),
    ]


def _motorcycle_parts(sp: Sprite, inst: int) -> list[Part]:
    """A motorcycle seen from the side: filled wheels, body, seat and fork."""
    r = 0.32
    body = np.array(
        [
            [-0.75, 0.55],
            [-0.35, 0.78],
            [-0.1, 0.82],
            [0.3, 0.92],
            [0.55, 0.9],
            [0.6, 0.62],
            [0.25, 0.35],
            [-0.4, 0.38],
        ]
    )
    fork = np.array([[0.7, r], [0.5, 1.05]])
    return [
        Part(inst, [sp(circle(-0.7, r, r, 14)), sp(circle(0.7, r, r, 14))], Detail.WHEEL),
        Part(inst, [sp(body)]),
        Part(inst, [sp(fork)], Detail.FRAME, stroke=max(1, round(sp.px(0.06))), closed=False),
        Part(inst, [sp(np.array([[-0.45, 0.8], [0.05, 0.86], [0.05, 0.95], [-0.45, 0.9]]))], Detail.WHEEL),
    ]


def _rider_parts(sp: Sprite, inst: int, motorbike: bool, k: float) -> list[Part]:
    """A seated rider leaning towards the handlebar."""
    if motorbike:
        hip, knee, foot, shoulder, hand, head = (
            (-0.25, 0.95),
            (0.15, 0.8),
            (0.1, 0.45),
            (0.0, 1.5),
            (0.5, 1.05),
            (0.06, 1.66),
        )
    else:
        hip, knee, foot, shoulder, hand, head = (
            (-0.2, 0.95),
            (0.08, 0.7),
            (0.0, 0.3),
            (0.12, 1.42),
            (0.42, 1.0),
            (0.2, 1.57),
        )
    scale = np.array([1.0, k])

    def s(p: tuple[float, float]) -> tuple[float, float]:
        return (p[0] * scale[0], p[1] * scale[1])

    legs = [limb(s(hip), s(knee), 0.17 * k, 0.12 * k), limb(s(knee), s(foot), 0.12 * k, 0.1 * k)]
    torso = limb(s(hip), s(shoulder), 0.3 * k, 0.32 * k)
    arm = limb(s(shoulder), s(hand), 0.1 * k, 0.08 * k)
    hx, hy = s(head)
    return [
        Part(inst, [sp(leg) for leg in legs], Detail.LOWER),
        Part(inst, [sp(torso)]),
        Part(inst, [sp(arm)]),
        *_head(sp, inst, hx, hy, (0.14 if motorbike else 0.11) * k, helmet=motorbike or k > 1.02),
    ]


def add_rider(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, motorbike: bool
) -> tuple[int, int]:
    """A cyclist or motorcyclist at road point (x, z); returns (rider, vehicle) instances."""
    vehicle = canvas.new_instance(C["motorcycle" if motorbike else "bicycle"], "ridden")
    rider = canvas.new_instance(C["rider"], "motorcycle" if motorbike else "bicycle")
    sp = Sprite(camera, x, z, mirror=bool(rng.random() < 0.5))
    bike = _motorcycle_parts(sp, vehicle) if motorbike else _bicycle_parts(sp, vehicle)
    canvas.add(z, bike + _rider_parts(sp, rider, motorbike, rng.uniform(0.92, 1.08)))
    return rider, vehicle


def add_parked_two_wheeler(
    canvas: Canvas, camera: Camera, rng: np.random.Generator, x: float, z: float, motorbike: bool
) -> int:
    """A parked bicycle or motorcycle without a rider; returns the instance."""
    inst = canvas.new_instance(C["motorcycle" if motorbike else "bicycle"], "parked")
    sp = Sprite(camera, x, z, mirror=bool(rng.random() < 0.5))
    canvas.add(z, _motorcycle_parts(sp, inst) if motorbike else _bicycle_parts(sp, inst))
    return inst
