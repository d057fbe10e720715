"""Captions of pre-training crops: what a web caption of such a crop would say.

Scene crops name the classes that cover the crop, largest first ("a street scene with road,
buildings, two cars and a traffic light"); object crops name one object, often with its colour
("a photo of a red car"). Words come from the class concept lists (`CITYSCAPES_CONCEPTS`), so
synonyms ("jeep", "tram", "cyclist") are seen too and every class, tail classes included, gets
its words. Pure functions of their inputs and a numpy Generator.
"""

from __future__ import annotations

import numpy as np

from model.class_sets import CITYSCAPES_CLASSES, CITYSCAPES_CONCEPTS

# Classes that are counted objects ("two cars"); the rest are surfaces named without a count.
_THING_NAMES = ("pole", "traffic light", "traffic sign", "person", "rider", "car", "truck", "bus", "train")
THINGS = frozenset(CITYSCAPES_CLASSES.index(n) for n in (*_THING_NAMES, "motorcycle", "bicycle"))
# Surface words read better than the concept lists' first entries in a caption.
SURFACE_WORDS: dict[str, tuple[str, ...]] = {
    "road": ("road", "street"),
    "sidewalk": ("sidewalk", "pavement"),
    "building": ("buildings", "houses", "a building"),
    "wall": ("a wall", "a standing wall"),
    "fence": ("a fence", "fences"),
    "vegetation": ("trees", "vegetation", "hedges"),
    "terrain": ("grass", "terrain", "soil"),
    "sky": ("sky", "the sky"),
}
PLURALS: dict[str, str] = {"person": "people", "bus": "buses", "SUV": "SUVs", "box truck": "box trucks"}
SCENE_TEMPLATES = ("a street scene with {}", "a photo of {}", "{}", "a view of {}", "a driving scene with {}")
OBJECT_TEMPLATES = ("a photo of {}", "{}", "a photo of {} in a street", "a close-up photo of {}")
COLOUR_NAMES: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "blue": (40, 70, 200), "white": (235, 235, 235), "black": (30, 30, 32),
    "grey": (128, 128, 128), "yellow": (230, 200, 30), "green": (50, 160, 60), "orange": (235, 125, 25),
    "pink": (225, 70, 160), "brown": (120, 80, 45), "purple": (150, 50, 190), "silver": (180, 182, 186),
}  # fmt: skip
# Objects whose colour a caption would mention (their colour is the instance's own choice).
COLOURED = frozenset(CITYSCAPES_CLASSES.index(n) for n in ("car", "truck", "bus", "train", "person", "rider"))


def _concept(class_id: int, rng: np.random.Generator) -> str:
    """A single-object phrase for the class: one of its concept words (short ones preferred)."""
    name = CITYSCAPES_CLASSES[class_id]
    words = [w for w in CITYSCAPES_CONCEPTS[name] if len(w) <= 24] or [name]
    return words[int(rng.integers(0, len(words)))]


def colour_name(rgb: np.ndarray) -> str:
    """Nearest named colour of an RGB triple (float or uint8)."""
    names = list(COLOUR_NAMES)
    table = np.asarray([COLOUR_NAMES[n] for n in names], np.float32)
    return names[int(np.argmin(np.linalg.norm(table - np.asarray(rgb, np.float32), axis=1)))]


def with_article(word: str) -> str:
    """'car' -> 'a car', 'orange car' -> 'an orange car'."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _plural(word: str) -> str:
    return PLURALS.get(word, word + "s")


def _mention(class_id: int, count: int, rng: np.random.Generator) -> str:
    name = CITYSCAPES_CLASSES[class_id]
    if class_id not in THINGS:
        words = SURFACE_WORDS.get(name, (name,))
        return words[int(rng.integers(0, len(words)))]
    word = _concept(class_id, rng)
    if count <= 1:
        return with_article(word)
    return f"{'two' if count == 2 else 'several'} {_plural(word)}"


def join_phrases(parts: list[str]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_caption(
    class_share: np.ndarray, counts: np.ndarray, rng: np.random.Generator, min_share: float = 0.015
) -> str:
    """Caption of a scene crop.

    class_share: [19] pixel share of each train id in the crop; counts: [19] visible instances
    per train id in the crop. Classes over `min_share` are named, largest first, at most 6;
    things with a visible instance are named even when small (a traffic light is a few pixels).
    """
    order = np.argsort(-class_share, kind="stable")
    named = [int(k) for k in order if class_share[k] >= min_share or (int(k) in THINGS and counts[k] > 0)]
    named = [k for k in named if class_share[k] > 0][:6]
    if not named:
        return "a street scene"
    phrases = [_mention(k, int(counts[k]), rng) for k in named]
    template = SCENE_TEMPLATES[int(rng.integers(0, len(SCENE_TEMPLATES)))]
    return template.format(join_phrases(phrases))


def object_caption(class_id: int, mean_rgb: np.ndarray | None, rng: np.random.Generator) -> str:
    """Caption of an object-centred crop: "a photo of a red car", "a traffic light", ..."""
    word = _concept(class_id, rng)
    if class_id in COLOURED and mean_rgb is not None and rng.random() < 0.6:
        word = f"{colour_name(mean_rgb)} {word}"
    template = OBJECT_TEMPLATES[int(rng.integers(0, len(OBJECT_TEMPLATES)))]
    return template.format(with_article(word))
