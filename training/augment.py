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


def random_crop(
    image: np.ndarray, label: np.ndarray | None, crop: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Crop (H, W, 3) image and (H, W) label to `crop`, padding if smaller.

    Returns (image, label, valid) where `valid` is a bool (h, w) map that is False on padding;
    padded label pixels are IGNORE_INDEX.
    """
    ch, cw = crop
    h, w = image.shape[:2]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    valid = np.ones((h, w), dtype=bool)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
        valid = np.pad(valid, ((0, ph), (0, pw)))
        if label is not None:
            label = np.pad(label, ((0, ph), (0, pw)), constant_values=IGNORE_INDEX)
    y = int(rng.integers(0, image.shape[0] - ch + 1))
    x = int(rng.integers(0, image.shape[1] - cw + 1))
    window = (slice(y, y + ch), slice(x, x + cw))
    # copies: the source arrays may be a dataset's in-memory cache, which must never be written
    label = None if label is None else label[window].copy()
    return image[window].copy(), label, valid[window]


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
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Random scale (if `scale`), random crop, then horizontal flip with probability `hflip_p`.

    -> (image, label, valid). Without `scale` no random number is drawn for it, so runs made
    before it existed resume exactly.
    """
    if scale is not None:
        image, label = random_scale(image, label, scale, rng)
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
