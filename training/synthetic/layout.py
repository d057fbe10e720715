"""Scene sampling: street kind, weather, road cross-section and the placement of every object.

One `numpy.random.Generator` drives the whole layout, so a scene is a pure function of its seed.
The densities below set the class balance (see `meta.json` of a generated benchmark): road,
building, vegetation and sky dominate; poles, signs, lights, riders and two-wheelers are rare.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from training.synthetic import agents, furniture, structures, vehicles
from training.synthetic.camera import Camera, make_camera
from training.synthetic.raster import Canvas
from training.synthetic.structures import C

STREET_KINDS: dict[str, float] = {"city": 0.5, "suburban": 0.3, "highway": 0.2}
WEATHERS: dict[str, float] = {"sunny": 0.45, "cloudy": 0.4, "dusk": 0.15}


@dataclass(frozen=True)
class Street:
    """Road cross-section in road coordinates (m, camera at x = 0, right positive).

    `lanes` are (centre x, oncoming) pairs; `road_left`/`road_right` are the outer edges of the
    paved road (parking strips and shoulders included); `walk_left`/`walk_right` the sidewalk
    widths (0 for none) and `verge_left`/`verge_right` the terrain/lawn width beyond them.
    """

    kind: str
    lanes: tuple[tuple[float, bool], ...]
    lane_width: float
    road_left: float
    road_right: float
    park_left: float
    park_right: float
    walk_left: float
    walk_right: float
    verge_left: float
    verge_right: float
    median: float | None = None

    def edge(self, side: int) -> float:
        """Outer road edge on `side` (-1 left, +1 right)."""
        return self.road_right if side > 0 else self.road_left

    def walk(self, side: int) -> float:
        return self.walk_right if side > 0 else self.walk_left

    def verge(self, side: int) -> float:
        return self.verge_right if side > 0 else self.verge_left

    def park(self, side: int) -> float:
        return self.park_right if side > 0 else self.park_left


@dataclass
class Scene:
    """A sampled scene: its kind, weather, camera, cross-section and the canvas of parts.

    `pairs` links each rider instance to the bicycle/motorcycle instance it rides.
    """

    kind: str
    weather: str
    camera: Camera
    street: Street
    canvas: Canvas
    pairs: list[tuple[int, int]] = field(default_factory=list)


def _choice(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    return keys[int(rng.choice(len(keys), p=np.asarray(list(table.values())) / sum(table.values())))]


def sample_street(rng: np.random.Generator, kind: str) -> Street:
    """Sample the cross-section of a `kind` street ("city", "suburban" or "highway")."""
    if kind == "highway":
        lane_w, n, n_on = rng.uniform(3.5, 3.8), int(rng.integers(2, 5)), 0
    elif kind == "city":
        lane_w, n = rng.uniform(3.0, 3.5), int(rng.choice([2, 3, 4], p=[0.5, 0.3, 0.2]))
        n_on = n // 2 if rng.random() < 0.8 else 0
    else:
        lane_w, n, n_on = rng.uniform(2.8, 3.3), 2, 1
    ego = int(rng.integers(0, n - n_on))
    x_right = lane_w * (ego + 0.5)
    lanes = tuple((x_right - lane_w * (i + 0.5), i >= n - n_on) for i in range(n))
    x_left = x_right - n * lane_w
    p_park = {"city": 0.55, "suburban": 0.35, "highway": 0.0}[kind]
    park = [2.2 if rng.random() < p_park else 0.0 for _ in range(2)]
    median = None
    if kind == "highway":
        park = [1.0, rng.uniform(2.0, 3.0)]  # shoulders
        median = x_left - 1.0
        n_back = int(rng.integers(2, 4))
        lanes += tuple((median - 0.6 - lane_w * (i + 0.5), True) for i in range(n_back))
        x_left = median - 0.6 - n_back * lane_w - 1.0
        park[0] = 0.0
    if kind == "city":
        walks = [rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0)]
        verges = [0.0, 0.0]
    elif kind == "suburban":
        walks = [rng.uniform(1.5, 2.5) if rng.random() < 0.85 else 0.0 for _ in range(2)]
        verges = [rng.uniform(2.0, 8.0), rng.uniform(2.0, 8.0)]
    else:
        walks = [0.0, 0.0]
        verges = [rng.uniform(3.0, 14.0), rng.uniform(3.0, 14.0)]
    return Street(
        kind,
        lanes,
        lane_w,
        x_left - park[0],
        x_right + park[1],
        park[0],
        park[1],
        walks[0],
        walks[1],
        verges[0],
        verges[1],
        median,
    )


def sample_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Sample a full scene (geometry, weather, objects) for an image of `height` x `width` px."""
    kind = _choice(rng, STREET_KINDS)
    weather = _choice(rng, WEATHERS)
    camera = make_camera(rng, height, width, straight=kind == "highway" and rng.random() < 0.5)
    canvas = Canvas(height, width)
    street = sample_street(rng, kind)
    scene = Scene(kind, weather, camera, street, canvas)
    structures.add_sky(canvas, camera)
    structures.add_skyline(canvas, camera, rng, kind)
    _ground(scene, rng)
    for side in (-1, 1):
        _roadside(scene, rng, side)
    _traffic(scene, rng)
    return scene


def _ground(scene: Scene, rng: np.random.Generator) -> None:
    """Base ground, road, sidewalks, tree lawns, lane markings and a zebra crossing."""
    cam, cv, st = scene.camera, scene.canvas, scene.street
    base = C["sidewalk"] if st.kind == "city" and rng.random() < 0.6 else C["terrain"]
    structures.add_ground(cv, cam, base)
    road = structures.add_strip(cv, cam, C["road"], st.road_left, st.road_right, tag="road")
    for side in (-1, 1):
        edge, walk = st.edge(side), st.walk(side)
        if walk > 0:
            xa, xb = sorted((edge, edge + side * walk))
            structures.add_strip(cv, cam, C["sidewalk"], xa, xb)
        if st.kind == "city" and rng.random() < 0.25:  # a grass strip between curb and sidewalk
            z0 = rng.uniform(cam.z_near, 30.0)
            xa, xb = sorted((edge + side * 0.3, edge + side * 1.5))
            structures.add_strip(cv, cam, C["terrain"], xa, xb, z0, z0 + rng.uniform(8.0, 40.0))
    _markings(scene, rng, road)
    if st.kind == "city" and rng.random() < 0.2:
        z = rng.uniform(12.0, 30.0)
        structures.add_zebra(cv, cam, road, st.road_left, st.road_right, z)
        for _ in range(int(rng.integers(0, 4))):  # people crossing
            x = rng.uniform(st.road_left + 0.5, st.road_right - 0.5)
            agents.add_person(cv, cam, rng, x, z + rng.uniform(0.5, 3.5), tag="crossing")


def _markings(scene: Scene, rng: np.random.Generator, road: int) -> None:
    cam, cv, st = scene.camera, scene.canvas, scene.street
    phase = rng.uniform(0.0, 9.0)
    lanes = sorted(st.lanes)
    for (xa, on_a), (xb, on_b) in itertools.pairwise(lanes):
        boundary = (xa + xb) / 2
        if st.median is not None and xa < st.median < xb:
            continue
        structures.add_markings(cv, cam, road, boundary, dashed=on_a == on_b, phase=phase)
    if st.kind != "suburban":
        structures.add_markings(cv, cam, road, lanes[-1][0] + st.lane_width / 2 + 0.2, dashed=False)
        structures.add_markings(cv, cam, road, lanes[0][0] - st.lane_width / 2 - 0.2, dashed=False)


def _roadside(scene: Scene, rng: np.random.Generator, side: int) -> None:
    """Everything beside the road on one side: buildings, barriers, vegetation, poles, people."""
    {"city": _city_side, "suburban": _suburban_side, "highway": _highway_side}[scene.kind](scene, rng, side)


def _city_side(scene: Scene, rng: np.random.Generator, side: int) -> None:
    cam, cv, st = scene.camera, scene.canvas, scene.street
    edge, walk = st.edge(side), st.walk(side)
    facade = edge + side * walk
    z, z_end = rng.uniform(0.0, 6.0), rng.uniform(90.0, 220.0)
    while z < z_end:
        length = rng.uniform(8.0, 30.0)
        if rng.random() < 0.15:  # a gap: wall, fence or trees
            _gap(scene, rng, side, facade, z, z + length * 0.5)
            z += length * 0.5
            continue
        tall = rng.random() < 0.15
        height = rng.uniform(28.0, 50.0) if tall else rng.uniform(8.0, 28.0)
        x_face = facade + side * rng.uniform(0.0, 1.0)
        structures.add_building(cv, cam, rng, side, x_face, z, z + length, height, rng.uniform(10.0, 20.0))
        z += length
    if rng.random() < 0.6:
        _tree_row(scene, rng, edge + side * rng.uniform(0.8, 1.3), rng.uniform(8.0, 14.0), 1.0)
    _poles(scene, rng, side, edge + side * 0.5, lamps=0.8, signs=2.5, lights=0.75)
    _pedestrians(scene, rng, side, edge, walk, rng.poisson(5.0))
    _parked(scene, rng, side, bikes=0.45, motos=0.15)


def _gap(scene: Scene, rng: np.random.Generator, side: int, x: float, z0: float, z1: float) -> None:
    cam, cv = scene.camera, scene.canvas
    u = rng.random()
    if u < 0.4:
        structures.add_linear(cv, cam, C["wall"], side, x, 0.3, rng.uniform(1.5, 3.0), z0, z1)
    elif u < 0.7:
        structures.add_linear(
            cv, cam, C["fence"], side, x, 0.1, rng.uniform(1.5, 2.2), z0, z1, posts=rng.uniform(1.5, 2.5)
        )
    for zt in np.arange(z0 + 2.0, z1, rng.uniform(4.0, 7.0)):
        furniture.add_tree(cv, cam, rng, x + side * rng.uniform(1.0, 4.0), zt, rng.uniform(0.9, 1.4))


def _tree_row(scene: Scene, rng: np.random.Generator, x: float, spacing: float, size: float) -> None:
    z = rng.uniform(3.0, 10.0)
    while z < 90.0:
        furniture.add_tree(
            scene.canvas, scene.camera, rng, x + rng.uniform(-0.3, 0.3), z, size * rng.uniform(0.8, 1.25)
        )
        z += spacing * rng.uniform(0.8, 1.2)


def _suburban_side(scene: Scene, rng: np.random.Generator, side: int) -> None:
    cam, cv, st = scene.camera, scene.canvas, scene.street
    edge, walk, lawn = st.edge(side), st.walk(side), st.verge(side)
    front = edge + side * walk
    z = rng.uniform(0.0, 10.0)
    while z < rng.uniform(80.0, 140.0):
        length = rng.uniform(8.0, 14.0)
        x_face = front + side * (lawn + rng.uniform(0.0, 3.0))
        structures.add_building(
            cv,
            cam,
            rng,
            side,
            x_face,
            z,
            z + length,
            rng.uniform(4.5, 7.0),
            rng.uniform(8.0, 12.0),
            house=True,
        )
        _garden_border(scene, rng, side, front, z - 2.0, z + length + 2.0)
        gap = rng.uniform(4.0, 15.0)
        if rng.random() < 0.7:
            furniture.add_tree(
                cv,
                cam,
                rng,
                x_face + side * rng.uniform(-1.0, 1.0),
                z + length + gap / 2,
                rng.uniform(1.0, 1.6),
            )
        z += length + gap
    for _ in range(rng.poisson(5)):
        furniture.add_tree(
            cv,
            cam,
            rng,
            front + side * rng.uniform(0.8, max(1.0, lawn - 0.5)),
            rng.uniform(5.0, 80.0),
            rng.uniform(0.8, 1.3),
        )
    for _ in range(rng.poisson(3)):
        furniture.add_bush(
            cv, cam, rng, front + side * rng.uniform(0.5, max(0.6, lawn)), rng.uniform(5.0, 60.0)
        )
    _poles(scene, rng, side, edge + side * 0.4, lamps=0.7, signs=1.5, lights=0.2)
    if walk > 0:
        _pedestrians(scene, rng, side, edge, walk, rng.poisson(1.2))
    _parked(scene, rng, side, bikes=0.12, motos=0.06)


def _garden_border(scene: Scene, rng: np.random.Generator, side: int, x: float, z0: float, z1: float) -> None:
    cam, cv = scene.camera, scene.canvas
    u = rng.random()
    if u < 0.35:
        structures.add_linear(
            cv, cam, C["fence"], side, x, 0.08, rng.uniform(1.0, 1.5), z0, z1, posts=rng.uniform(0.6, 1.5)
        )
    elif u < 0.7:
        structures.add_linear(
            cv, cam, C["vegetation"], side, x, 0.8, rng.uniform(0.8, 1.7), z0, z1, tag="hedge"
        )
    elif u < 0.8:
        structures.add_linear(cv, cam, C["wall"], side, x, 0.3, rng.uniform(0.6, 1.2), z0, z1)


def _highway_side(scene: Scene, rng: np.random.Generator, side: int) -> None:
    cam, cv, st = scene.camera, scene.canvas, scene.street
    edge, verge = st.edge(side), st.verge(side)
    outer = edge + side * verge
    u = rng.random()
    if u < 0.25:
        structures.add_linear(
            cv,
            cam,
            C["wall"],
            side,
            outer,
            0.4,
            rng.uniform(2.5, 4.5),
            rng.uniform(0.0, 20.0),
            rng.uniform(80.0, 200.0),
        )
    elif u < 0.6:
        structures.add_linear(
            cv,
            cam,
            C["fence"],
            side,
            outer,
            0.1,
            rng.uniform(1.6, 2.4),
            rng.uniform(0.0, 20.0),
            rng.uniform(80.0, 200.0),
            posts=rng.uniform(2.5, 4.0),
        )
    if rng.random() < 0.85:
        _tree_row(
            scene, rng, outer + side * rng.uniform(1.5, 4.0), rng.uniform(4.0, 8.0), rng.uniform(1.2, 1.8)
        )
    if rng.random() < 0.35:
        z = rng.uniform(20.0, 60.0)
        x_face = outer + side * rng.uniform(15.0, 50.0)
        structures.add_building(
            cv, cam, rng, side, x_face, z, z + rng.uniform(20.0, 60.0), rng.uniform(10.0, 40.0), 20.0
        )
    for _ in range(rng.poisson(2)):
        furniture.add_bush(
            cv, cam, rng, edge + side * rng.uniform(1.0, max(1.5, verge)), rng.uniform(6.0, 60.0)
        )
    if side > 0 and rng.random() < 0.6:
        furniture.add_sign_pole(cv, cam, rng, edge + side * 1.2, rng.uniform(20.0, 70.0), big=True)
    _poles(scene, rng, side, edge + side * 0.8, lamps=0.35, signs=1.0, lights=0.0)
    if st.median is not None and side < 0:  # the barrier between the carriageways, facing the camera
        cls = C["wall"] if rng.random() < 0.6 else C["vegetation"]
        structures.add_linear(
            cv, cam, cls, -1, st.median + 0.3, 0.6, rng.uniform(0.8, 1.1), cam.z_near, cam.z_far * 0.6
        )


def _poles(
    scene: Scene, rng: np.random.Generator, side: int, x: float, lamps: float, signs: float, lights: float
) -> None:
    """Street lamps (probability `lamps` of a row), Poisson(`signs`) sign poles and lights."""
    cam, cv = scene.camera, scene.canvas
    if rng.random() < lamps:
        spacing = rng.uniform(20.0, 35.0)
        for z in np.arange(rng.uniform(4.0, spacing), 120.0, spacing):
            furniture.add_lamp_post(cv, cam, rng, x, z, side)
    for _ in range(rng.poisson(signs)):
        furniture.add_sign_pole(cv, cam, rng, x + side * rng.uniform(-0.1, 0.5), rng.uniform(6.0, 60.0))
    if rng.random() < lights:  # an intersection: one to three lights on this side
        z = rng.uniform(10.0, 45.0)
        for k in range(int(rng.integers(1, 4))):
            overhead = k == 0 and rng.random() < 0.5
            furniture.add_traffic_light(
                cv, cam, rng, x + side * 0.3 * k, z + 4.0 * k, side, overhead=overhead
            )


def _pedestrians(scene: Scene, rng: np.random.Generator, side: int, edge: float, walk: float, n: int) -> None:
    cam, cv = scene.camera, scene.canvas
    for _ in range(n):
        z = rng.uniform(max(4.0, cam.z_bottom * 1.1), 45.0)
        for k in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):
            x = edge + side * rng.uniform(0.5, max(0.6, walk - 0.3))
            agents.add_person(cv, cam, rng, x, z + k * rng.uniform(0.4, 1.2))


def _parked(scene: Scene, rng: np.random.Generator, side: int, bikes: float, motos: float) -> None:
    """Parked cars along the parking strip and bicycles/motorcycles at the curb."""
    cam, cv, st = scene.camera, scene.canvas, scene.street
    edge = st.edge(side)
    if st.park(side) > 0:
        z = rng.uniform(cam.z_near + 1.0, 12.0)
        while z < 90.0:
            if rng.random() < 0.55:
                vehicles.add_vehicle(cv, cam, rng, "car", edge - side * 1.1, z, tag="parked")
            z += rng.uniform(5.5, 9.0)
    if rng.random() < bikes:
        z = rng.uniform(6.0, 35.0)
        for k in range(int(rng.integers(1, 4))):
            agents.add_parked_two_wheeler(cv, cam, rng, edge + side * 0.9, z + 0.8 * k, motorbike=False)
    if rng.random() < motos:
        agents.add_parked_two_wheeler(cv, cam, rng, edge + side * 0.9, rng.uniform(6.0, 35.0), motorbike=True)


def _vehicle_kind(rng: np.random.Generator, kind: str) -> str:
    table = {
        "city": {"car": 0.9, "truck": 0.04, "bus": 0.06},
        "suburban": {"car": 0.95, "truck": 0.04, "bus": 0.01},
        "highway": {"car": 0.8, "truck": 0.16, "bus": 0.04},
    }[kind]
    return _choice(rng, table)


def _traffic(scene: Scene, rng: np.random.Generator) -> None:
    """Moving vehicles in every lane, riders, crossing pedestrians and (rarely) a tram."""
    cam, cv, st = scene.camera, scene.canvas, scene.street
    mean_gap = {"city": 35.0, "suburban": 55.0, "highway": 40.0}[st.kind]
    for x, oncoming in st.lanes:
        z = rng.uniform(10.0, 30.0) if abs(x) < 0.5 else rng.uniform(max(4.0, cam.z_near + 1.0), 25.0)
        while z < 110.0:
            kind = _vehicle_kind(rng, st.kind)
            if kind != "car" and z < 16.0:  # no lorry filling the frame
                z += 12.0
            vehicles.add_vehicle(cv, cam, rng, kind, x + rng.uniform(-0.3, 0.3), z, oncoming)
            z += vehicles.TYPICAL_LENGTH[kind] + rng.exponential(mean_gap)
    if st.kind == "city" and rng.random() < 0.1:
        x, oncoming = st.lanes[int(rng.integers(0, len(st.lanes)))]
        vehicles.add_vehicle(cv, cam, rng, "tram", x, rng.uniform(12.0, 45.0), oncoming)
    p_riders = {"city": 0.55, "suburban": 0.3, "highway": 0.12}[st.kind]
    if rng.random() < p_riders:
        for _ in range(int(rng.integers(1, 3))):
            moto = st.kind == "highway" or rng.random() < 0.35
            right_lane = st.lanes[0][0]
            x = right_lane + (rng.uniform(-1.0, 1.0) if moto else st.lane_width / 2 - rng.uniform(0.5, 1.0))
            rider, bike = agents.add_rider(cv, cam, rng, x, rng.uniform(6.0, 45.0), motorbike=moto)
            scene.pairs.append((rider, bike))
