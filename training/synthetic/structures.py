"""Static scene structure: sky, distant skyline, ground surfaces, buildings, walls, fences, hedges.

Long structures along the road are cut into short depth chunks, each its own painter object keyed
by its far end, so that trees, poles and people in front of a facade are drawn after it.
"""

from __future__ import annotations

import itertools

import numpy as np

from model.class_sets import CITYSCAPES_CLASSES
from training.synthetic.camera import Camera, depth_samples
from training.synthetic.raster import Canvas, Detail, Part
from training.synthetic.shapes import front_rect, ground_strip, side_plane, sloped_plane

C = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}

SKY_DEPTH = 1e9
SKYLINE_DEPTH = 1e8
GROUND_DEPTH = 1e7


def add_sky(canvas: Canvas, camera: Camera) -> None:
    """The whole frame as sky; everything else is painted over it."""
    inst = canvas.new_instance(C["sky"])
    w, h = camera.width, camera.height
    canvas.add(SKY_DEPTH, [Part(inst, [np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)])])


def visible_x_range(camera: Camera, z: float, margin_px: float = 20.0) -> tuple[float, float]:
    """Lateral road coordinates (m) of the left and right image borders at depth z."""

    def x_at(col: float) -> float:
        return ((col - camera.center_x) / camera.focal - camera.curve * z) * z

    return x_at(-margin_px), x_at(camera.width + margin_px)


def add_skyline(canvas: Canvas, camera: Camera, rng: np.random.Generator, kind: str) -> None:
    """Distant buildings and tree lines at the far end of the visible ground."""
    z = camera.z_far * 0.95
    x, x_end = visible_x_range(camera, z)
    p_building = {"city": 0.85, "suburban": 0.35, "highway": 0.3}[kind]
    h_max = {"city": 55.0, "suburban": 22.0, "highway": 30.0}[kind]
    while x < x_end:
        width = rng.uniform(12.0, 45.0)
        if rng.random() < p_building:
            inst = canvas.new_instance(C["building"], "skyline")
            height = rng.uniform(8.0, h_max)
            poly = front_rect(camera, x, x + width, -2.0, height, z)
        else:
            inst = canvas.new_instance(C["vegetation"], "treeline")
            xs = np.linspace(x, x + width, max(3, int(width / 3)))
            ys = rng.uniform(7.0, 16.0) + rng.uniform(-2.5, 2.5, size=xs.size)
            top = camera.project(xs, ys, z)
            base = camera.project(np.array([x + width, x]), np.array([-2.0, -2.0]), z)
            poly = np.concatenate([top, base])
        canvas.add(SKYLINE_DEPTH, [Part(inst, [poly])])
        x += width * rng.uniform(0.85, 1.05)


def add_ground(canvas: Canvas, camera: Camera, class_id: int, tag: str = "ground") -> int:
    """The whole ground below the horizon as one surface (usually terrain or sidewalk)."""
    inst = canvas.new_instance(class_id, tag)
    w, h = camera.width, camera.height
    top = camera.horizon + camera.focal * camera.cam_height / camera.z_far
    canvas.add(GROUND_DEPTH + 1, [Part(inst, [np.array([[0, top], [w, top], [w, h], [0, h]], np.float64)])])
    return inst


def add_strip(
    canvas: Canvas,
    camera: Camera,
    class_id: int,
    xa: float,
    xb: float,
    z0: float | None = None,
    z1: float | None = None,
    tag: str = "",
) -> int:
    """A ground strip (road, sidewalk, terrain) between lateral xa and xb; returns its instance."""
    inst = canvas.new_instance(class_id, tag)
    poly = ground_strip(camera, xa, xb, z0 or camera.z_near, z1 or camera.z_far)
    canvas.add(GROUND_DEPTH, [Part(inst, [poly])])
    return inst


def add_markings(
    canvas: Canvas,
    camera: Camera,
    road: int,
    x: float,
    dashed: bool,
    width: float = 0.15,
    z_max: float = 90.0,
    phase: float = 0.0,
) -> None:
    """A lane marking (dashed 3 m on / 6 m off, or solid) on the road at lateral x."""
    if dashed:
        starts = np.arange(camera.z_near - phase, z_max, 9.0)
        polys = [
            ground_strip(camera, x - width / 2, x + width / 2, max(s, camera.z_near), s + 3.0)
            for s in starts
            if s + 3.0 > camera.z_near
        ]
    else:
        polys = [ground_strip(camera, x - width / 2, x + width / 2, camera.z_near, z_max)]
    canvas.add(GROUND_DEPTH - 1, [Part(road, polys, Detail.MARKING, disjoint=True)])


def add_zebra(canvas: Canvas, camera: Camera, road: int, xl: float, xr: float, z: float) -> None:
    """A pedestrian crossing: stripes along the road direction across the whole road."""
    xs = np.arange(xl + 0.5, xr - 0.5, 1.0)
    polys = [ground_strip(camera, a, a + 0.5, z, z + 4.0) for a in xs]
    canvas.add(GROUND_DEPTH - 1, [Part(road, polys, Detail.MARKING, disjoint=True)])


def _chunks(camera: Camera, z0: float, z1: float, rel: float = 0.15, min_len: float = 2.5) -> np.ndarray:
    """Chunk boundaries from z0 to z1, each about max(min_len, rel * z) long."""
    bounds = [z0]
    while bounds[-1] < z1:
        bounds.append(min(z1, bounds[-1] + max(min_len, rel * bounds[-1])))
    return np.asarray(bounds)


def _window_grid(
    camera: Camera, x: float, zc: np.ndarray, half_w: float, ys: np.ndarray, win_h: float
) -> list[np.ndarray]:
    """Window quads on the plane at lateral x: columns centred at depths zc, rows starting at ys."""
    if zc.size == 0 or ys.size == 0:
        return []
    z_a = (zc - half_w)[None, :, None]
    z_b = (zc + half_w)[None, :, None]
    y0 = ys[:, None, None]
    yy = np.concatenate([y0, y0 + win_h, y0 + win_h, y0], axis=2) * np.ones_like(z_a)
    zz = np.concatenate([z_a, z_a, z_b, z_b], axis=2) * np.ones_like(y0)
    quads = camera.project(x, yy, zz).reshape(-1, 4, 2)
    return list(quads)


def _front_windows(
    camera: Camera, x0: float, x1: float, pitch: float, ys: np.ndarray, win_h: float, z: float
) -> list[np.ndarray]:
    """Window quads on a front face at depth z between lateral x0 < x1."""
    n = int((x1 - x0) / pitch)
    if n <= 0 or ys.size == 0:
        return []
    xc = x0 + (x1 - x0 - n * pitch) / 2 + pitch * (np.arange(n) + 0.5)
    half = 0.3 * pitch
    quads = [front_rect(camera, c - half, c + half, y, y + win_h, z) for y in ys for c in xc]
    return quads


def _projected_width(camera: Camera, x: float, za: float, zb: float) -> float:
    """Image width (px) of the depth range za..zb on the plane at lateral x."""
    a, b = camera.project(x, 1.0, za), camera.project(x, 1.0, zb)
    return float(abs(a[0] - b[0]) + abs(a[1] - b[1]))


def add_building(
    canvas: Canvas,
    camera: Camera,
    rng: np.random.Generator,
    side: int,
    x_face: float,
    z0: float,
    z1: float,
    height: float,
    depth_out: float,
    house: bool = False,
) -> None:
    """A building whose facade faces the road at lateral `x_face` from depth z0 to z1.

    `side` is -1 (left of the road) or +1 (right); the building extends `depth_out` metres away
    from the road. City blocks have a window grid and shop fronts; houses (`house=True`) have a
    gabled roof, two floors of windows and a door.
    """
    inst = canvas.new_instance(C["building"], "house" if house else "block")
    pitch = rng.uniform(2.6, 3.6) if not house else rng.uniform(3.0, 4.5)
    ground_floor = rng.uniform(3.5, 4.5) if not house else 0.9
    floor_pitch = rng.uniform(3.0, 3.5) if not house else 2.8
    win_h = rng.uniform(1.2, 1.7)
    ys = ground_floor + 0.7 + floor_pitch * np.arange(int((height - ground_floor - 1.0) // floor_pitch) + 1)
    ys = ys[ys + win_h < height - 0.5]
    half_w = pitch * rng.uniform(0.22, 0.32)
    roof_h = rng.uniform(2.0, 3.5) if house else 0.0
    front_visible = z0 > camera.z_near
    z0 = max(z0, camera.z_near)
    bounds = _chunks(camera, z0, z1, rel=0.12, min_len=pitch)
    zc_all = z0 + pitch * (np.arange(int((z1 - z0) / pitch)) + 0.5)
    shops = not house and rng.random() < 0.7
    for za, zb in itertools.pairwise(bounds):
        parts = [Part(inst, [side_plane(camera, x_face, 0.0, height, za, zb)])]
        if house:
            roof = sloped_plane(
                camera, x_face, height, x_face + side * depth_out / 2, height + roof_h, za, zb
            )
            parts.append(Part(inst, [roof], Detail.ROOF))
        if _projected_width(camera, x_face, za, za + pitch) >= 4.0:
            zc = zc_all[(zc_all >= za) & (zc_all < zb)]
            windows = _window_grid(camera, x_face, zc, half_w, ys, win_h)
            if windows:
                parts.append(Part(inst, windows, Detail.WINDOW, disjoint=True))
            if shops and zc.size:
                doors = _window_grid(camera, x_face, zc, pitch * 0.4, np.array([0.2]), 2.8)
                parts.append(Part(inst, doors, Detail.DOOR, disjoint=True))
        canvas.add(zb, parts)
    if front_visible:
        canvas.add(
            z0, _front_face(camera, inst, side, x_face, depth_out, height, roof_h, ys, win_h, pitch, z0)
        )


def _front_face(
    camera: Camera,
    inst: int,
    side: int,
    x_face: float,
    depth_out: float,
    height: float,
    roof_h: float,
    ys: np.ndarray,
    win_h: float,
    pitch: float,
    z: float,
) -> list[Part]:
    """The face of a building turned towards the camera (a gable end when roof_h > 0)."""
    xa, xb = sorted((x_face, x_face + side * depth_out))
    if roof_h > 0:
        xs = np.array([xa, xb, xb, (xa + xb) / 2, xa])
        yy = np.array([0.0, 0.0, height, height + roof_h, height])
        face = camera.project(xs, yy, z)
    else:
        face = front_rect(camera, xa, xb, 0.0, height, z)
    parts = [Part(inst, [face])]
    windows = _front_windows(camera, xa, xb, pitch, ys, win_h, z)
    if windows and camera.scale(z) * pitch >= 4.0:
        parts.append(Part(inst, windows, Detail.WINDOW, disjoint=True))
    return parts


def add_linear(
    canvas: Canvas,
    camera: Camera,
    class_id: int,
    side: int,
    x_in: float,
    thickness: float,
    height: float,
    z0: float,
    z1: float,
    posts: float = 0.0,
    tag: str = "",
) -> int:
    """A wall, fence or hedge along the road: inner face at lateral `x_in`, from depth z0 to z1.

    The top is visible when lower than the camera. `posts` > 0 adds fence posts every `posts`
    metres and two rails (drawn as `Detail.SLAT`). Returns the instance index.
    """
    inst = canvas.new_instance(class_id, tag)
    x_out = x_in + side * thickness
    front_visible = z0 > camera.z_near
    z0 = max(z0, camera.z_near)
    bounds = _chunks(camera, z0, z1)
    for za, zb in itertools.pairwise(bounds):
        parts = [Part(inst, [side_plane(camera, x_in, 0.0, height, za, zb)])]
        if height < camera.cam_height:
            parts.append(Part(inst, [sloped_plane(camera, x_in, height, x_out, height, za, zb)]))
        if posts > 0:
            parts.extend(_fence_details(camera, inst, x_in, height, za, zb, posts))
        canvas.add(zb, parts)
    if front_visible:
        xa, xb = sorted((x_in, x_out))
        canvas.add(z0, [Part(inst, [front_rect(camera, xa, xb, 0.0, height, z0)])])
    return inst


def _fence_details(
    camera: Camera, inst: int, x: float, height: float, za: float, zb: float, spacing: float
) -> list[Part]:
    """Posts and rails of a fence section as strokes (only where they are at least ~2 px apart)."""
    if _projected_width(camera, x, za, za + spacing) < 2.5:
        return []
    thick = max(1, round(camera.scale(zb) * 0.08))
    zp = np.arange(np.ceil(za / spacing) * spacing, zb, spacing)
    posts = [camera.project(x, np.array([0.0, height]), z) for z in zp]
    zs = depth_samples(za, zb, 0.25)
    rails = [camera.project(x, y, zs) for y in (0.3 * height, 0.92 * height)]
    return [
        Part(inst, posts, Detail.SLAT, stroke=thick, closed=False),
        Part(inst, rails, Detail.SLAT, stroke=thick, closed=False),
    ]
