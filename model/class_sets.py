"""Class sets, prompt concepts, palettes and label-id tables (Cityscapes 19, SYNTHIA 16).

Train ids index the model's output channels; `255` is ignore. Cityscapes label ids are what the
official evaluation server expects; GTA5 labels use the same label ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Official Cityscapes colours (cityscapesscripts/helpers/labels.py), indexed by train id.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

# Cityscapes label id of each train id (the inverse map is many-to-one: see LABEL_ID_TO_TRAIN_ID).
TRAIN_ID_TO_LABEL_ID: tuple[int, ...] = (
    7,
    8,
    11,
    12,
    13,
    17,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    31,
    32,
    33,
)

# SYNTHIA-RAND-CITYSCAPES class id (R channel of GT/LABELS) -> Cityscapes train id.
SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
    8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip

# The 16-class SYNTHIA protocol: Cityscapes train ids kept, in output-channel order.
SYNTHIA16_TRAIN_IDS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
# SYNTHIA -> Cityscapes papers report mIoU13 beside mIoU16: the 16 classes without these three.
MIOU13_EXCLUDED: tuple[str, ...] = ("wall", "fence", "pole")

# Concept lists for concept-averaged class embeddings (SemiVL's Cityscapes lists; "skyscaper"
# is spelled as in the original so that embeddings match published checkpoints).
CITYSCAPES_CONCEPTS: dict[str, tuple[str, ...]] = {
    "road": ("road", "street", "parking space"),
    "sidewalk": ("sidewalk",),
    "building": ("building", "skyscaper", "house", "bus stop building", "garage", "car port", "scaffolding"),
    "wall": ("individual standing wall, which is not part of a building",),
    "fence": ("fence", "hole in fence"),
    "pole": ("pole", "sign pole", "traffic light pole"),
    "traffic light": ("traffic light",),
    "traffic sign": ("traffic sign", "parking sign", "direction sign"),
    "vegetation": ("vegetation", "tree", "hedge"),
    "terrain": ("terrain", "grass", "soil", "sand"),
    "sky": ("sky",),
    "person": (
        "person", "pedestrian", "walking person", "standing person", "person sitting on the ground",
        "person sitting on a bench", "person sitting on a chair",
    ),
    "rider": ("rider", "cyclist", "motorcyclist"),
    "car": ("car", "jeep", "SUV", "van"),
    "truck": ("truck", "box truck", "pickup truck", "truck trailer"),
    "bus": ("bus",),
    "train": ("train", "tram"),
    "motorcycle": ("motorcycle", "moped", "scooter"),
    "bicycle": ("bicycle",),
}  # fmt: skip

PROMPT_TEMPLATE = "a photo of a {}"


@dataclass(frozen=True)
class ClassSet:
    """A named list of classes: names, concept phrases per class, colours and train ids.

    `train_ids[k]` is the Cityscapes train id of output channel k (None for custom classes), which
    is how label maps are converted to Cityscapes label ids for the evaluation server.
    """

    name: str
    names: tuple[str, ...]
    concepts: tuple[tuple[str, ...], ...]
    palette: tuple[tuple[int, int, int], ...]
    train_ids: tuple[int, ...] | None

    def __len__(self) -> int:
        return len(self.names)

    def prompts(self, template: str = PROMPT_TEMPLATE) -> list[list[str]]:
        """Prompt strings per class: K lists of concept prompts."""
        return [[template.format(c) for c in concepts] for concepts in self.concepts]


def _cityscapes_subset(name: str, train_ids: tuple[int, ...]) -> ClassSet:
    names = tuple(CITYSCAPES_CLASSES[i] for i in train_ids)
    return ClassSet(
        name=name,
        names=names,
        concepts=tuple(CITYSCAPES_CONCEPTS[n] for n in names),
        palette=tuple(CITYSCAPES_PALETTE[i] for i in train_ids),
        train_ids=train_ids,
    )


CLASS_SETS: dict[str, ClassSet] = {
    "cityscapes": _cityscapes_subset("cityscapes", tuple(range(19))),
    "synthia16": _cityscapes_subset("synthia16", SYNTHIA16_TRAIN_IDS),
}

MAX_CUSTOM_CLASSES = 64
MAX_CLASS_PROMPT_CHARS = 200


def get_class_set(name: str) -> ClassSet:
    """Return a named class set; raises KeyError naming the known sets."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise KeyError(f"unknown class set {name!r}; known: {sorted(CLASS_SETS)}") from None


def custom_class_set(prompts: list[str]) -> ClassSet:
    """A class set from user prompts, one class per entry; `a|b|c` gives one class with 3 concepts.

    Raises ValueError for an empty list, an empty or over-long prompt, duplicates, or more than
    `MAX_CUSTOM_CLASSES` classes. Colours come from the Cityscapes palette, then a fixed hash.
    """
    if not prompts:
        raise ValueError("custom class list is empty")
    if len(prompts) > MAX_CUSTOM_CLASSES:
        raise ValueError(f"{len(prompts)} custom classes; at most {MAX_CUSTOM_CLASSES} are allowed")
    concepts = []
    for raw in prompts:
        phrases = tuple(p.strip() for p in raw.split("|") if p.strip())
        if not phrases:
            raise ValueError(f"empty class prompt {raw!r}")
        if any(len(p) > MAX_CLASS_PROMPT_CHARS for p in phrases):
            raise ValueError(f"class prompt longer than {MAX_CLASS_PROMPT_CHARS} characters")
        concepts.append(phrases)
    names = tuple(c[0] for c in concepts)
    if len(set(names)) != len(names):
        raise ValueError("custom class names must be unique")
    return ClassSet(
        "custom", names, tuple(concepts), tuple(_color_for(i, n) for i, n in enumerate(names)), None
    )


def _color_for(index: int, name: str) -> tuple[int, int, int]:
    if name in CITYSCAPES_CLASSES:
        return CITYSCAPES_PALETTE[CITYSCAPES_CLASSES.index(name)]
    rng = np.random.default_rng(sum(ord(ch) * (i + 1) for i, ch in enumerate(name)) + index)
    r, g, b = (int(v) for v in rng.integers(40, 256, size=3))
    return (r, g, b)


def label_id_lut() -> np.ndarray:
    """uint8[256] lookup: Cityscapes/GTA5 label id -> train id (255 for everything not evaluated)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(TRAIN_ID_TO_LABEL_ID):
        lut[label_id] = train_id
    return lut


def train_id_to_label_id_lut() -> np.ndarray:
    """uint8[256] lookup: train id -> Cityscapes label id (ignore 255 -> 0 'unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    for train_id, label_id in enumerate(TRAIN_ID_TO_LABEL_ID):
        lut[train_id] = label_id
    return lut


def synthia_id_lut(num_classes: int = 16) -> np.ndarray:
    """uint16 class id -> train id lookup (size 65536) for SYNTHIA labels.

    With `num_classes=16` the result is re-indexed to 0..15 in `SYNTHIA16_TRAIN_IDS` order and
    terrain, truck and train become ignore; with 19 it is the plain Cityscapes train id.
    """
    if num_classes not in (16, 19):
        raise ValueError("num_classes must be 16 or 19")
    lut = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
    for synthia_id, train_id in SYNTHIA_ID_TO_TRAIN_ID.items():
        if num_classes == 19:
            lut[synthia_id] = train_id
        elif train_id in SYNTHIA16_TRAIN_IDS:
            lut[synthia_id] = SYNTHIA16_TRAIN_IDS.index(train_id)
    return lut
