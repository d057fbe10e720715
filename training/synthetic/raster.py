"""Painter's-algorithm rasterisation of scene parts into a crisp id map (no anti-aliasing).

A scene is a list of objects, each a few `Part`s (polygons or strokes) with one depth; objects are
drawn far to near and, inside an object, in the order given. Every drawn part gets its own id in
an int32 map, so the train-id map, the instance map and the "detail" map (windows, wheels, lane
markings: surface features that change the look but not the class) are table lookups of it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import IntEnum

import cv2
import numpy as np

from model.class_sets import IGNORE_INDEX

_SHIFT = 2  # sub-pixel bits for cv2 drawing: coordinates are rounded to 1/4 px


class Detail(IntEnum):
    """Surface features drawn inside an object; they keep the object's class and instance."""

    BODY = 0
    WINDOW = 1
    GLASS = 2
    WHEEL = 3
    LAMP_RED = 4
    LAMP_WHITE = 5
    LAMP_AMBER = 6
    LAMP_GREEN = 7
    LAMP_OFF = 8
    MARKING = 9
    TRUNK = 10
    SKIN = 11
    HAIR = 12
    LOWER = 13
    SIGN_FACE = 14
    SIGN_INNER = 15
    DOOR = 16
    SLAT = 17
    CAB = 18
    FRAME = 19
    ROOF = 20
    CURB = 21


NUM_DETAILS = len(Detail)


@dataclass
class Part:
    """Polygons (each (N, 2) float image points) of one instance, filled or stroked.

    `stroke` > 0 draws open/closed polylines of that thickness (px) instead of filling.
    `disjoint=True` promises the polygons do not overlap (window grids, lane dashes), so they are
    filled in one cv2 call; overlapping polygons must be filled one by one (cv2 fills a single
    call's overlaps even-odd, leaving holes).
    """

    instance: int
    polygons: list[np.ndarray]
    detail: Detail = Detail.BODY
    stroke: int = 0
    closed: bool = True
    disjoint: bool = False


@dataclass(frozen=True)
class Instance:
    """One object (or surface) of a class; `tag` records how it was placed (e.g. "parked")."""

    class_id: int
    tag: str = ""


@dataclass
class Raster:
    """The rasterised scene: `ids` int32 (H, W), 0 = nothing drawn, and per-id lookup tables."""

    ids: np.ndarray
    id_class: np.ndarray
    id_instance: np.ndarray
    id_detail: np.ndarray
    instances: list[Instance]

    @functools.cached_property
    def train_ids(self) -> np.ndarray:
        """uint8 (H, W) Cityscapes train ids; 255 where nothing was drawn (computed once)."""
        return self.id_class[self.ids]

    @property
    def instance_map(self) -> np.ndarray:
        """int32 (H, W) instance index; -1 where nothing was drawn."""
        return self.id_instance[self.ids]

    @property
    def detail_map(self) -> np.ndarray:
        """uint8 (H, W) `Detail` code of each pixel."""
        return self.id_detail[self.ids]

    @functools.cached_property
    def instance_pixels(self) -> np.ndarray:
        """int64 (num_instances,) visible pixel count of each instance (computed once)."""
        per_id = np.bincount(self.ids.ravel(), minlength=len(self.id_instance))
        inst = self.id_instance[1:]
        return np.bincount(
            inst[inst >= 0], weights=per_id[1:][inst >= 0], minlength=len(self.instances)
        ).astype(np.int64)


@dataclass
class Canvas:
    """Collects instances and depth-keyed objects, then rasterises them far to near."""

    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)
    _objects: list[tuple[float, int, list[Part]]] = field(default_factory=list)

    def new_instance(self, class_id: int, tag: str = "") -> int:
        """Register an instance of train id `class_id`; returns its index."""
        self.instances.append(Instance(class_id, tag))
        return len(self.instances) - 1

    def add(self, depth: float, parts: list[Part]) -> None:
        """Add an object at `depth` (m; larger is drawn first); ties keep insertion order."""
        if parts:
            self._objects.append((depth, len(self._objects), parts))

    def rasterize(self) -> Raster:
        """Draw every part into an int32 id map and build the per-id tables."""
        ids = np.zeros((self.height, self.width), np.int32)
        id_class, id_instance, id_detail = [IGNORE_INDEX], [-1], [int(Detail.BODY)]
        for _, _, parts in sorted(self._objects, key=lambda o: (-o[0], o[1])):
            for part in parts:
                draw_id = len(id_class)
                _draw(ids, part, draw_id)
                id_class.append(self.instances[part.instance].class_id)
                id_instance.append(part.instance)
                id_detail.append(int(part.detail))
        return Raster(
            ids=ids,
            id_class=np.asarray(id_class, np.uint8),
            id_instance=np.asarray(id_instance, np.int32),
            id_detail=np.asarray(id_detail, np.uint8),
            instances=list(self.instances),
        )


def _fixed_point(polygons: list[np.ndarray]) -> list[np.ndarray]:
    """Polygons as int32 points with `_SHIFT` fractional bits (one numpy pass for all of them)."""
    polygons = [p for p in polygons if len(p) >= 2]
    if len(polygons) <= 1:
        return [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polygons]
    flat = np.round(np.concatenate(polygons) * (1 << _SHIFT)).astype(np.int32)
    return np.split(flat, np.cumsum([len(p) for p in polygons[:-1]]))


def _draw(canvas: np.ndarray, part: Part, value: int) -> None:
    pts = _fixed_point(part.polygons)
    if not pts:
        return
    if part.stroke > 0:
        cv2.polylines(canvas, pts, part.closed, value, part.stroke, cv2.LINE_8, _SHIFT)
    elif part.disjoint:
        cv2.fillPoly(canvas, pts, value, cv2.LINE_8, _SHIFT)
    else:
        for p in pts:
            cv2.fillPoly(canvas, [p], value, cv2.LINE_8, _SHIFT)
