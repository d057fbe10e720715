"""Training augmentations (docs/method.md 2.2): weak crop/flip, strong photometric, CutMix.

Every random choice comes from a `numpy.random.Generator` the caller seeds from
(seed, stream, step, slot), so a resumed run draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from model.class_sets import IGNORE_INDEX
from training.schema import MethodSection


def _pad_to(
    image: np.ndarray, label: np.ndarray | None, crop: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Pad (bottom/right) to at least `crop`: -> (image, label, valid), padding invalid and ignore."""
    ch, cw = crop
    h, w = image.shape[:2]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    valid = np.ones((h, w), dtype=bool)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        valid = np.pad(valid, ((0, ph), (0, pw)))
        if label is not None:
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    return image, label, valid


def _window(
    image: np.ndarray, label: np.ndarray | None, valid: np.ndarray, y: int, x: int, crop: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    window = (slice(y, y + crop[0]), slice(x, x + crop[1]))
    # copies: the source arrays may be a dataset's in-memory cache, which must never be written
    label = None if label is None else label[window].copy()
    return image[window].copy(), label, valid[window]


def random_crop(
    image: np.ndarray, label: np.ndarray | None, crop: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop (H, W, 3) image and (H, W) label to `crop`, padding if smaller.

    Returns (image, label, valid) where `valid` is a bool (h, w) map that is False on padding;
    padded label pixels are IGNORE_INDEX.
    """
    image, label, valid = _pad_to(image, label, crop)
    y = int(rng.integers(0, image.shape[0] - crop[0] + 1))
    x = int(rng.integers(0, image.shape[1] - crop[1] + 1))
    return _window(image, label, valid, y, x, crop)


def class_crop(
    image: np.ndarray, label: np.ndarray, crop: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """As `random_crop`, but around a pixel of a class drawn uniformly from the classes in `label`.

    A rare class (a pole, a sign, a person: a few hundred pixels of a frame) is then in the crop
    as often as the road is; DAFormer's rare-class sampling does this over images, here within the
    few labelled frames. A label without any class falls back to `random_crop`.
    """
    counts = np.bincount(label.ravel(), minlength=256)[:IGNORE_INDEX]
    classes = np.flatnonzero(counts)
    if classes.size == 0:
        return random_crop(image, label, crop, rng)
    chosen = classes[int(rng.integers(classes.size))]
    ys, xs = np.nonzero(label == chosen)
    k = int(rng.integers(ys.size))
    image, padded, valid = _pad_to(image, label, crop)
    # the pixel lands anywhere in the crop, not always at its centre
    y = int(np.clip(ys[k] - rng.integers(crop[0]), 0, image.shape[0] - crop[0]))
    x = int(np.clip(xs[k] - rng.integers(crop[1]), 0, image.shape[1] - crop[1]))
    return _window(image, padded, valid, y, x, crop)


def random_scale(
    image: np.ndarray, label: np.ndarray | None, scale: tuple[float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize by a factor drawn from U(scale): image bilinear (area when shrinking), label nearest."""
    factor = float(rng.uniform(*scale))
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, size, interpolation=interp)
    label = None if label is None else cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def weak_augment(
    image: np.ndarray,
    label: np.ndarray | None,
    crop: tuple[int, int],
    rng: np.random.Generator,
    hflip_p: float,
    scale: tuple[float, float] | None = None,
    class_crop_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Random scale (if `scale`), random crop (a `class_crop` with probability `class_crop_p` when
    there is a label), then horizontal flip with probability `hflip_p`.

    -> (image, label, valid). Without `scale`, or a label and `class_crop_p`, no random number is
    drawn for them, so runs made before they existed resume exactly.
    """
    if scale is not None:
        image, label = random_scale(image, label, scale, rng)
    if label is not None and class_crop_p > 0 and rng.random() < class_crop_p:
        image, label, valid = class_crop(image, label, crop, rng)
    else:
        image, label, valid = random_crop(image, label, crop, rng)
    if rng.random() < hflip_p:
        image, valid = image[:, ::-1], valid[:, ::-1]
        label = None if label is None else label[:, ::-1]
    return np.ascontiguousarray(image), None if label is None else np.ascontiguousarray(label), valid.copy()


def strong_augment(image: np.ndarray, rng: np.random.Generator, cfg: MethodSection) -> np.ndarray:
    """Colour jitter (random order, p=jitter_p), grayscale (p), Gaussian blur (p): uint8 HxWx3 -> same."""
    x = torch.from_numpy(image).permute(2, 0, 1)
    if rng.random() < cfg.jitter_p:
        b, c, s, hue = cfg.jitter
        ops = [
            lambda t: TF.adjust_brightness(t, float(rng.uniform(1 - b, 1 + b))),
            lambda t: TF.adjust_contrast(t, float(rng.uniform(1 - c, 1 + c))),
            lambda t: TF.adjust_saturation(t, float(rng.uniform(1 - s, 1 + s))),
            lambda t: TF.adjust_hue(t, float(rng.uniform(-hue, hue))),
        ]
        for i in rng.permutation(len(ops)):
            x = ops[i](x)
    if rng.random() < cfg.grayscale_p:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    out = np.ascontiguousarray(x.permute(1, 2, 0).numpy())
    if rng.random() < cfg.blur_p:
        sigma = float(rng.uniform(*cfg.blur_sigma))
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma)
    return out


def cutmix_box(
    height: int, width: int, rng: np.random.Generator, area: tuple[float, float] = (0.02, 0.4)
) -> np.ndarray:
    """A bool (H, W) box of area U(area) of the crop and aspect ratio U(0.3, 1/0.3)."""
    size = rng.uniform(*area) * height * width
    ratio = rng.uniform(0.3, 1 / 0.3)
    bh = min(int(np.sqrt(size / ratio)), height)
    bw = min(int(np.sqrt(size * ratio)), width)
    y = int(rng.integers(0, height - bh + 1))
    x = int(rng.integers(0, width - bw + 1))
    box = np.zeros((height, width), dtype=bool)
    box[y : y + bh, x : x + bw] = True
    return box


def apply_cutmix(box: torch.Tensor, main: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Take `partner` inside the box, `main` outside. box [B, H, W] bool; tensors [B, ..., H, W]."""
    while box.ndim < main.ndim:
        box = box.unsqueeze(1)
    return torch.where(box, partner, main)
