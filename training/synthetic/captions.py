"""BLIP-2-style captions from a scene's actual visible content.

A caption names the kind of street, the weather and the main objects, e.g. "a city street with
cars and a bus on a cloudy day". Objects are mentioned only if they are visible with at least
`min_pixels` pixels (occluded or sub-pixel objects are not), so the caption is informative about
the content without being a label map: no positions, no counts beyond "two", rare static classes
only when large. The members of the confusable groups (tram, bus, truck; riders; wall, fence) are
always named when visible: in the camera look their pixels barely separate them (see
`appearance`), and the caption says which one is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.synthetic.layout import Scene
from training.synthetic.raster import Raster
from training.synthetic.structures import C

STREETS = {
    "city": ("a city street", "a busy city street", "a street in a city", "a downtown street"),
    "suburban": ("a suburban road", "a residential street", "a quiet street in a neighborhood"),
    "highway": ("a highway", "a multi-lane highway", "a highway-like road"),
}
WEATHER = {
    "sunny": ("on a sunny day", "on a clear day", "in the sunshine"),
    "cloudy": ("on a cloudy day", "on an overcast day"),
    "dusk": ("at dusk", "at sunset", "in the evening"),
}
# Caption words and the train ids whose visible pixels justify them (used by the tests too).
WORD_CLASSES: dict[str, tuple[int, ...]] = {
    "tram": (C["train"],), "bus": (C["bus"],), "buses": (C["bus"],), "truck": (C["truck"],),
    "trucks": (C["truck"],), "car": (C["car"],), "cars": (C["car"],), "heavy traffic": (C["car"],),
    "bicycle": (C["bicycle"],), "bicycles": (C["bicycle"],), "cyclist": (C["rider"], C["bicycle"]),
    "cyclists": (C["rider"], C["bicycle"]), "motorcycle": (C["motorcycle"],),
    "motorcycles": (C["motorcycle"],), "motorcyclist": (C["rider"], C["motorcycle"]),
    "person": (C["person"], C["rider"]), "people": (C["person"], C["rider"]),
    "pedestrian": (C["person"],), "pedestrians": (C["person"],), "trees": (C["vegetation"],),
    "buildings": (C["building"],), "houses": (C["building"],), "traffic light": (C["traffic light"],),
    "traffic lights": (C["traffic light"],), "sign": (C["traffic sign"],), "signs": (C["traffic sign"],),
    "fence": (C["fence"],), "wall": (C["wall"],), "grass": (C["terrain"],),
}  # fmt: skip


@dataclass(frozen=True)
class Mention:
    """A candidate phrase and its salience (higher is mentioned first)."""

    phrase: str
    score: float
    dynamic: bool
    always: bool = False  # a confusable-group member: named even beyond the usual 2-4 mentions


def _count_phrase(n: int, one: str, two: str, many: tuple[str, ...], rng: np.random.Generator) -> str:
    if n == 1:
        return one
    if n == 2:
        return two
    return many[int(rng.integers(0, len(many)))]


def _visible(scene: Scene, raster: Raster, min_pixels: int) -> tuple[dict[int, list[int]], np.ndarray]:
    """Visible instances per train id (pixels >= min_pixels) and each instance's pixel count."""
    pixels = raster.instance_pixels
    by_class: dict[int, list[int]] = {}
    for i, inst in enumerate(raster.instances):
        if pixels[i] >= min_pixels:
            by_class.setdefault(inst.class_id, []).append(i)
    return by_class, pixels


Score = Callable[[list[int], float], float]


def _dynamic_mentions(
    scene: Scene, raster: Raster, min_pixels: int, rng: np.random.Generator
) -> list[Mention]:
    vis, pixels = _visible(scene, raster, min_pixels)

    def score(ids: list[int], weight: float) -> float:
        return weight * float(sum(pixels[i] for i in ids))

    return [
        *_large_vehicle_mentions(vis, score, rng),
        *_rider_mentions(scene, raster, vis, score, rng),
        *_road_user_mentions(raster, vis, score, rng),
    ]


def _large_vehicle_mentions(
    vis: dict[int, list[int]], score: Score, rng: np.random.Generator
) -> list[Mention]:
    """Trams, buses and trucks: one confusable group, always named when visible."""
    out = []
    if trams := vis.get(C["train"], []):
        out.append(Mention("a tram", score(trams, 3.0), True, always=True))
    for name, two, many in (("bus", "two buses", "buses"), ("truck", "two trucks", "trucks")):
        if ids := vis.get(C[name], []):
            phrase = _count_phrase(len(ids), f"a {name}", two, (many,), rng)
            out.append(Mention(phrase, score(ids, 3.0), True, always=True))
    return out


def _rider_mentions(
    scene: Scene, raster: Raster, vis: dict[int, list[int]], score: Score, rng: np.random.Generator
) -> list[Mention]:
    """Riders on visible bikes, as cyclists or motorcyclists (always named: rider vs person)."""
    riding = {rider: bike for rider, bike in scene.pairs}
    bikes = set(vis.get(C["bicycle"], [])) | set(vis.get(C["motorcycle"], []))
    riders = [r for r in vis.get(C["rider"], []) if riding.get(r) in bikes]
    cyclists = [r for r in riders if raster.instances[riding[r]].class_id == C["bicycle"]]
    motos = [r for r in riders if r not in cyclists]
    out = []
    for ids, singles, two, many in (
        (cyclists, ("a person riding a bicycle", "a cyclist"), "two cyclists", "cyclists"),
        (motos, ("a person on a motorcycle", "a motorcyclist"), "two motorcyclists", "motorcyclists"),
    ):
        if ids:
            one = singles[int(rng.integers(0, 2))]
            phrase = _count_phrase(len(ids), one, two, (many,), rng)
            out.append(Mention(phrase, score(ids, 8.0), True, always=True))
    return out


def _road_user_mentions(
    raster: Raster, vis: dict[int, list[int]], score: Score, rng: np.random.Generator
) -> list[Mention]:
    """Pedestrians, cars, parked bicycles and motorcycles."""
    out = []
    if people := vis.get(C["person"], []):
        one = ("a person walking", "a pedestrian", "a person")[int(rng.integers(0, 3))]
        many: tuple[str, ...] = ("people walking", "pedestrians", "people on the sidewalk")
        out.append(
            Mention(_count_phrase(len(people), one, "two people", many, rng), score(people, 5.0), True)
        )
    if cars := vis.get(C["car"], []):
        parked = sum(raster.instances[i].tag == "parked" for i in cars) > len(cars) / 2
        many = (
            ("parked cars",)
            if parked
            else ("cars", "several cars")
            if len(cars) < 6
            else ("many cars", "heavy traffic")
        )
        out.append(Mention(_count_phrase(len(cars), "a car", "two cars", many, rng), score(cars, 1.0), True))
    if parked_bikes := [i for i in vis.get(C["bicycle"], []) if raster.instances[i].tag == "parked"]:
        phrase = _count_phrase(len(parked_bikes), "a parked bicycle", "two bicycles", ("bicycles",), rng)
        out.append(Mention(phrase, score(parked_bikes, 4.0), False))
    if parked_motos := [i for i in vis.get(C["motorcycle"], []) if raster.instances[i].tag == "parked"]:
        out.append(Mention("a parked motorcycle", score(parked_motos, 4.0), False))
    return out


def _static_mentions(scene: Scene, share: np.ndarray, vis_lights: int, vis_signs: int) -> list[Mention]:
    out: list[Mention] = []
    total = float(share.sum())
    if share[C["vegetation"]] > 0.08 * total:
        out.append(Mention("trees", share[C["vegetation"]] * 0.5, False))
    if share[C["building"]] > 0.12 * total:
        word = (
            "houses"
            if scene.kind == "suburban"
            else "tall buildings"
            if scene.kind == "city"
            else "buildings"
        )
        out.append(Mention(word, share[C["building"]] * 0.4, False))
    if vis_lights:
        out.append(
            Mention(
                "a traffic light" if vis_lights == 1 else "traffic lights",
                share[C["traffic light"]] * 20.0,
                False,
            )
        )
    if vis_signs:
        out.append(
            Mention(
                "a street sign" if vis_signs == 1 else "road signs", share[C["traffic sign"]] * 8.0, False
            )
        )
    for name, phrase in (("fence", "a fence"), ("wall", "a wall")):
        if share[C[name]] > 0.005 * total:
            out.append(Mention(phrase, share[C[name]] * 1.5, False, always=True))
    if share[C["terrain"]] > 0.015 * total:
        out.append(Mention("grass", share[C["terrain"]] * 1.5, False))
    return out


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption_scene(
    scene: Scene, raster: Raster, rng: np.random.Generator, min_pixels: int | None = None
) -> str:
    """A lowercase BLIP-2-style caption of the rasterised scene (no final period).

    `min_pixels` (default: max(12, 0.04 % of the image)) is the visibility threshold per object.
    """
    h, w = raster.ids.shape
    min_pixels = min_pixels or max(12, int(4e-4 * h * w))
    counts = np.bincount(raster.train_ids.ravel(), minlength=256)[:19].astype(np.float64)
    vis, _ = _visible(scene, raster, min_pixels)
    dynamic = sorted(_dynamic_mentions(scene, raster, min_pixels, rng), key=lambda m: -m.score)
    static = sorted(
        _static_mentions(
            scene, counts, len(vis.get(C["traffic light"], [])), len(vis.get(C["traffic sign"], []))
        ),
        key=lambda m: -m.score,
    )
    n_total = int(rng.integers(2, 5))
    chosen = dynamic[: min(3, n_total)]
    chosen += static[: max(1, n_total - len(chosen))]
    chosen += [m for m in dynamic + static if m.always and m not in chosen]
    street = STREETS[scene.kind][int(rng.integers(0, len(STREETS[scene.kind])))]
    weather = ""
    if rng.random() < 0.85:
        options = WEATHER[scene.weather]
        weather = " " + options[int(rng.integers(0, len(options)))]
    objects = _join([m.phrase for m in chosen])
    if not objects:
        return f"an empty {street.removeprefix('a ')}{weather}"
    template = int(rng.integers(0, 4))
    lead = chosen[0]
    if template == 1 and lead.dynamic and lead.phrase.split()[-1] in {"car", "bus", "truck", "tram"}:
        rest = _join([m.phrase for m in chosen[1:]])
        return f"{lead.phrase} driving down {street}" + (f" with {rest}" if rest else "") + weather
    if template == 2:
        return f"a view of {street} with {objects}{weather}"
    if template == 3 and lead.dynamic:
        return f"{objects} on {street}{weather}"
    return f"{street} with {objects}{weather}"
