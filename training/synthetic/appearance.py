"""The two domain looks: per-class colour statistics and how they are turned into an image.

"source" is a game engine: flat colours from per-class palettes, sharp edges, no noise; weather
and time of day only tint and expose the whole frame. "target" is a camera: other (muted, shifted)
colours per class with per-instance variation, then textures, lighting, blur, sensor noise and
JPEG softness (`effects.camera_pipeline`). Confusable classes get overlapping colours in BOTH
domains: building/wall/fence share one range, cars/trucks/buses/trams one vehicle palette and
persons/riders one clothing palette, so that shape and context are what separate them.

Generator version 2 (the Table-3-in-miniature benchmark) changes two things, both chosen on the
probe's `select` split (training.synthetic.probe), never on the benchmark's val split:
- the game's palettes move `GAME_REALISM` of the way toward the camera's (a game engine that tries
  to look real, as GTA5 does): version 1's gap (source only at 55 % of target only) was far harsher
  than GTA5 -> Cityscapes (75-80 %);
- in the camera look the confusable pairs lose the cues that separate them beyond their outline:
  walls and fences share one palette, a truck's cab is painted like its cargo box, a bus's and a
  tram's windows and a fence's posts and rails like their body. The captions name which of them is there (`captions`), so a
  caption carries what the target pixels lack.
The "web" look of the pre-training corpus is built from the version-1 palettes and is unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import numpy as np

from training.synthetic.effects import camera_pipeline, paint_sky
from training.synthetic.layout import Scene
from training.synthetic.raster import Detail, Raster
from training.synthetic.structures import C

RGB = tuple[int, int, int]
# "web" is the third look of the mini vision-language pre-training corpus (training.pretrain):
# appended last so that the codes of "source" and "target" (and their pixels) do not change.
DOMAINS: tuple[str, ...] = ("source", "target", "web")

VEHICLES = frozenset({C["car"], C["truck"], C["bus"], C["train"], C["motorcycle"], C["bicycle"]})
PEOPLE = frozenset({C["person"], C["rider"]})


@dataclass(frozen=True)
class Look:
    """Colour statistics of one domain.

    `classes` maps a train id to its palette (an instance picks one entry, then adds uniform
    per-channel jitter of +-`jitter`); `details` does the same for `Detail` codes; the named
    palettes are shared by confusable classes. `sky` gives (zenith, horizon) colours per weather
    and `tint` a per-weather RGB gain.
    """

    name: str
    classes: dict[int, tuple[RGB, ...]]
    details: dict[Detail, tuple[RGB, ...]]
    vehicles: tuple[RGB, ...]
    clothes: tuple[RGB, ...]
    trousers: tuple[RGB, ...]
    signs: tuple[RGB, ...]
    sky: dict[str, tuple[RGB, RGB]]
    tint: dict[str, tuple[float, float, float]]
    jitter: float


SOURCE = Look(
    name="source",
    classes={
        C["road"]: ((80, 78, 94),), C["sidewalk"]: ((206, 168, 152),),
        C["building"]: ((198, 150, 100), (184, 124, 92), (208, 172, 118)),
        C["wall"]: ((194, 148, 104), (204, 164, 112)), C["fence"]: ((186, 140, 98), (176, 150, 108)),
        C["pole"]: ((108, 108, 124),), C["traffic light"]: ((218, 186, 32),),
        C["vegetation"]: ((58, 160, 48), (78, 174, 44)), C["terrain"]: ((156, 206, 88),),
    },
    details={
        Detail.WINDOW: ((72, 122, 204),), Detail.GLASS: ((62, 92, 144),), Detail.WHEEL: ((26, 26, 26),),
        Detail.LAMP_RED: ((255, 24, 24),), Detail.LAMP_WHITE: ((255, 255, 220),),
        Detail.LAMP_AMBER: ((255, 172, 0),), Detail.LAMP_GREEN: ((24, 255, 64),),
        Detail.LAMP_OFF: ((52, 52, 52),), Detail.MARKING: ((246, 246, 246),), Detail.TRUNK: ((122, 76, 36),),
        Detail.SKIN: ((242, 192, 150), (204, 142, 100), (124, 82, 52)),
        Detail.HAIR: ((32, 22, 12), (92, 62, 30), (204, 172, 92)), Detail.DOOR: ((92, 62, 40),),
        Detail.SLAT: ((124, 92, 62),), Detail.ROOF: ((184, 52, 40), (104, 62, 52)), Detail.FRAME: ((62, 62, 62),),
        Detail.SIGN_INNER: ((250, 250, 250),), Detail.CURB: ((182, 182, 182),),
    },
    vehicles=((222, 30, 30), (30, 82, 222), (246, 246, 246), (242, 202, 20), (30, 162, 62), (242, 122, 20), (232, 62, 162)),
    clothes=((232, 42, 42), (42, 62, 222), (42, 192, 62), (242, 222, 42), (246, 246, 246), (242, 122, 22), (162, 42, 202)),
    trousers=((42, 62, 202), (32, 32, 32), (122, 82, 42), (202, 202, 202)),
    signs=((232, 30, 30), (30, 72, 232), (242, 202, 0)),
    sky={"sunny": ((70, 145, 245), (70, 145, 245)), "cloudy": ((150, 165, 195), (150, 165, 195)), "dusk": ((245, 140, 85), (245, 140, 85))},
    tint={"sunny": (1.0, 1.0, 1.0), "cloudy": (0.88, 0.9, 0.94), "dusk": (0.85, 0.68, 0.6)},
    jitter=12.0,
)  # fmt: skip

TARGET = Look(
    name="target",
    classes={
        C["road"]: ((128, 122, 118), (116, 114, 112)), C["sidewalk"]: ((174, 160, 170), (162, 156, 152)),
        C["building"]: ((132, 120, 106), (146, 134, 118), (112, 110, 114), (128, 112, 100)),
        C["wall"]: ((138, 128, 116), (120, 116, 112)), C["fence"]: ((112, 106, 96), (128, 118, 104)),
        C["pole"]: ((70, 72, 76),), C["traffic light"]: ((44, 44, 48),),
        C["vegetation"]: ((82, 102, 50), (70, 94, 62), (96, 110, 56)), C["terrain"]: ((138, 128, 86), (122, 124, 80)),
    },
    details={
        Detail.WINDOW: ((52, 60, 70), (70, 78, 88)), Detail.GLASS: ((44, 50, 58),), Detail.WHEEL: ((34, 34, 36),),
        Detail.LAMP_RED: ((200, 60, 50),), Detail.LAMP_WHITE: ((225, 225, 205),),
        Detail.LAMP_AMBER: ((215, 160, 60),), Detail.LAMP_GREEN: ((80, 200, 150),),
        Detail.LAMP_OFF: ((34, 34, 36),), Detail.MARKING: ((200, 200, 196),), Detail.TRUNK: ((76, 62, 48),),
        Detail.SKIN: ((212, 172, 142), (172, 122, 92), (102, 72, 52)),
        Detail.HAIR: ((40, 32, 28), (86, 66, 48), (170, 150, 110)), Detail.DOOR: ((62, 56, 52),),
        Detail.SLAT: ((64, 64, 60),), Detail.ROOF: ((122, 72, 62), (82, 78, 78)), Detail.FRAME: ((80, 80, 84),),
        Detail.SIGN_INNER: ((216, 216, 210),), Detail.CURB: ((160, 158, 152),),
    },
    vehicles=((176, 178, 182), (32, 32, 34), (212, 212, 214), (40, 52, 82), (112, 32, 32), (96, 98, 102), (142, 136, 120)),
    clothes=((40, 46, 62), (26, 26, 30), (112, 112, 116), (162, 150, 130), (122, 42, 42), (62, 82, 112), (202, 200, 196)),
    trousers=((36, 40, 58), (26, 26, 28), (92, 84, 72), (150, 146, 140)),
    signs=((162, 70, 68), (52, 92, 152), (192, 192, 186)),
    sky={"sunny": ((150, 180, 215), (225, 230, 235)), "cloudy": ((205, 208, 212), (228, 229, 231)), "dusk": ((120, 105, 135), (235, 170, 130))},
    tint={"sunny": (1.05, 1.02, 0.97), "cloudy": (0.92, 0.95, 1.0), "dusk": (0.72, 0.6, 0.55)},
    jitter=14.0,
)  # fmt: skip


def _blend(a: RGB, b: RGB) -> RGB:
    return (round((a[0] + b[0]) / 2), round((a[1] + b[1]) / 2), round((a[2] + b[2]) / 2))


def _web_look() -> Look:
    """A third look, neither game nor this camera: every palette is the union of both domains'
    palettes plus their blends, with wider jitter, painted through the camera pipeline. It stands
    in for the variety of web photos a CLIP model is pre-trained on."""

    def union(a: tuple[RGB, ...], b: tuple[RGB, ...]) -> tuple[RGB, ...]:
        return a + b + tuple(_blend(x, y) for x, y in zip(a, b, strict=False))

    return Look(
        name="web",
        classes={k: union(SOURCE.classes[k], TARGET.classes[k]) for k in SOURCE.classes},
        details={k: union(SOURCE.details[k], TARGET.details[k]) for k in SOURCE.details},
        vehicles=union(SOURCE.vehicles, TARGET.vehicles),
        clothes=union(SOURCE.clothes, TARGET.clothes),
        trousers=union(SOURCE.trousers, TARGET.trousers),
        signs=union(SOURCE.signs, TARGET.signs),
        sky={w: (_blend(SOURCE.sky[w][0], TARGET.sky[w][0]), TARGET.sky[w][1]) for w in TARGET.sky},
        tint={
            w: cast(
                "tuple[float, float, float]",
                tuple((x + y) / 2 for x, y in zip(SOURCE.tint[w], TARGET.tint[w], strict=True)),
            )
            for w in TARGET.tint
        },
        jitter=22.0,
    )


WEB = _web_look()

# Fraction of the way each game colour moves toward the camera's (0: version 1's game look).
GAME_REALISM = 0.7


def _toward(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + t * (b[0] - a[0])), round(a[1] + t * (b[1] - a[1])), round(a[2] + t * (b[2] - a[2])))


def game_look(realism: float) -> Look:
    """The benchmark's source look: every game colour moved `realism` of the way toward the camera
    palette's entry at the same position (cycled), keeping the game's flat rendering and tints."""

    def move(a: tuple[RGB, ...], b: tuple[RGB, ...]) -> tuple[RGB, ...]:
        return tuple(_toward(x, b[i % len(b)], realism) for i, x in enumerate(a))

    return Look(
        name="source",
        classes={k: move(SOURCE.classes[k], TARGET.classes[k]) for k in SOURCE.classes},
        details={k: move(SOURCE.details[k], TARGET.details[k]) for k in SOURCE.details},
        vehicles=move(SOURCE.vehicles, TARGET.vehicles),
        clothes=move(SOURCE.clothes, TARGET.clothes),
        trousers=move(SOURCE.trousers, TARGET.trousers),
        signs=move(SOURCE.signs, TARGET.signs),
        sky={w: (_toward(SOURCE.sky[w][0], TARGET.sky[w][0], realism),) * 2 for w in SOURCE.sky},
        tint=SOURCE.tint,
        jitter=SOURCE.jitter,
    )


def _camera_look() -> Look:
    """The benchmark's target look: the camera palettes with walls and fences sharing one range."""
    classes = dict(TARGET.classes)
    classes[C["wall"]] = classes[C["fence"]] = TARGET.classes[C["wall"]] + TARGET.classes[C["fence"]]
    return dataclasses.replace(TARGET, classes=classes)


GAME = game_look(GAME_REALISM)
CAMERA = _camera_look()
LOOKS: dict[str, Look] = {"source": GAME, "target": CAMERA, "web": WEB}
# In the camera look these details are painted in their instance's body colour (see the docstring).
BODY_COLOURED: dict[int, frozenset[Detail]] = {
    C["truck"]: frozenset({Detail.CAB}),
    C["bus"]: frozenset({Detail.GLASS, Detail.WINDOW}),
    C["train"]: frozenset({Detail.GLASS, Detail.WINDOW}),
    C["fence"]: frozenset({Detail.SLAT}),
}


def _pick(rng: np.random.Generator, palette: tuple[RGB, ...], jitter: float) -> np.ndarray:
    base = np.asarray(palette[int(rng.integers(0, len(palette)))], np.float32)
    return base + rng.uniform(-jitter, jitter, 3).astype(np.float32)


def _instance_colour(rng: np.random.Generator, look: Look, class_id: int, weather: str) -> np.ndarray:
    if class_id in VEHICLES:
        return _pick(rng, look.vehicles, look.jitter)
    if class_id in PEOPLE:
        return _pick(rng, look.clothes, look.jitter)
    if class_id == C["traffic sign"]:
        return _pick(rng, look.signs, look.jitter)
    if class_id == C["sky"]:
        return np.asarray(look.sky[weather][0], np.float32)
    return _pick(rng, look.classes[class_id], look.jitter)


def _detail_colour(rng: np.random.Generator, look: Look, detail: Detail) -> np.ndarray:
    if detail == Detail.CAB:
        return _pick(rng, look.vehicles, look.jitter)
    if detail == Detail.LOWER:
        return _pick(rng, look.trousers, look.jitter)
    return _pick(rng, look.details[detail], look.jitter * 0.5)


def _body_coloured(raster: Raster, details: np.ndarray) -> np.ndarray:
    """bool per part id: a detail the camera look paints in its instance's colour (BODY_COLOURED)."""
    class_of = np.asarray([inst.class_id for inst in raster.instances] + [-1], np.int64)
    classes = class_of[raster.id_instance]  # id 0 has instance -1: the spare last entry
    mask = np.zeros(details.shape, bool)
    for cls, kinds in BODY_COLOURED.items():
        mask |= (classes == cls) & np.isin(details, [int(k) for k in kinds])
    return mask


def colour_table(raster: Raster, look: Look, weather: str, rng: np.random.Generator) -> np.ndarray:
    """float32 (num_ids, 3) RGB colour of every drawn part id (id 0, never visible, is black).

    Each instance draws its colour once; each (instance, detail) pair once, so all windows of a
    building or both tyres of a bicycle share a colour. Sign faces use the instance colour.
    """
    inst_colour = np.zeros((len(raster.instances) + 1, 3), np.float32)
    for i, inst in enumerate(raster.instances):
        inst_colour[i] = _instance_colour(rng, look, inst.class_id, weather)
    details = raster.id_detail.astype(np.int64)
    own = (details == Detail.BODY) | (details == Detail.SIGN_FACE)
    if look is CAMERA:
        own |= _body_coloured(raster, details)
    table = inst_colour[raster.id_instance]  # id 0 has instance -1: the spare last row (black)
    keys = raster.id_instance.astype(np.int64) * 64 + details
    unique, inverse = np.unique(np.where(own, -1, keys), return_inverse=True)
    colours = np.zeros((len(unique), 3), np.float32)
    for k, key in enumerate(unique.tolist()):
        if key >= 0:
            colours[k] = _detail_colour(rng, look, Detail(key % 64))
    table[~own] = colours[inverse.ravel()[~own]]
    table[0] = 0.0
    return table


def paint(scene: Scene, raster: Raster, domain: str, rng: np.random.Generator) -> np.ndarray:
    """Render the uint8 (H, W, 3) RGB image of a rasterised scene in `domain`'s look."""
    if domain not in LOOKS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    look = LOOKS[domain]
    image = colour_table(raster, look, scene.weather, rng)[raster.ids]
    if domain == "source":  # time-of-day exposure and weather tint, nothing else
        image *= np.asarray(look.tint[scene.weather], np.float32) * rng.uniform(0.8, 1.15)
        return np.clip(image, 0, 255).astype(np.uint8)
    zenith, horizon = look.sky[scene.weather]
    paint_sky(image, raster.train_ids, scene.camera, scene.weather, zenith, horizon, rng)
    return camera_pipeline(image, raster, scene, look.tint[scene.weather], rng)
