"""Label-id -> train-id lookup tables for the 19-class and 16-class (SYNTHIA) protocols."""

from __future__ import annotations

import numpy as np

from model.class_sets import IGNORE_INDEX, SYNTHIA16_TRAIN_IDS, label_id_lut, synthia_id_lut

NUM_CLASSES_CHOICES = (19, 16)


def check_num_classes(num_classes: int) -> int:
    """Return `num_classes` if it is 19 or 16, else raise ValueError."""
    if num_classes not in NUM_CLASSES_CHOICES:
        raise ValueError(f"num_classes must be 19 or 16, got {num_classes!r}")
    return num_classes


def train_id_to_synthia16_lut() -> np.ndarray:
    """uint8[256]: Cityscapes train id -> 16-class index (terrain, truck, train and 255 -> 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for index, train_id in enumerate(SYNTHIA16_TRAIN_IDS):
        lut[train_id] = index
    return lut


def cityscapes_label_lut(num_classes: int = 19) -> np.ndarray:
    """uint8[256]: Cityscapes/GTA5 label id -> train id (19) or 16-class index (16); else 255."""
    lut19 = label_id_lut()
    if check_num_classes(num_classes) == 19:
        return lut19
    return train_id_to_synthia16_lut()[lut19]


def synthia_label_lut(num_classes: int = 16) -> np.ndarray:
    """uint8[65536]: SYNTHIA class id -> train id (19) or 16-class index (16); else 255."""
    return synthia_id_lut(check_num_classes(num_classes))


def train_id_lut(num_classes: int = 19) -> np.ndarray:
    """uint8[256]: train id (0..18, a `labelTrainIds` file) -> itself (19) or its 16-class index
    (16); every other value -> 255."""
    if check_num_classes(num_classes) == 16:
        return train_id_to_synthia16_lut()
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[:19] = np.arange(19, dtype=np.uint8)
    return lut
