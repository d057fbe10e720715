"""Decoding of photos and label maps into numpy arrays, and the optional fixed resize.

Every reader raises `DatasetError` naming the file when it cannot decode it; none of them
returns a partial or silently converted result.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training.data.errors import DatasetError

# Photo modes that `Image.convert("RGB")` turns into a faithful 8-bit RGB photo. 'P' is a palette
# photo (e.g. mmsegmentation's demo.png): its palette colours are the pixels.
_PHOTO_MODES = frozenset({"RGB", "RGBA", "RGBX", "P", "PA", "L", "LA", "1", "CMYK", "YCbCr"})
# Label modes whose raw pixel values (palette INDICES for 'P') are the class ids.
_INDEX_LABEL_MODES = frozenset({"L", "P"})


def read_image(path: Path) -> np.ndarray:
    """Read a photo as uint8 RGB of shape (H, W, 3); palette ('P') PNGs are expanded to colours."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in _PHOTO_MODES:
                raise DatasetError(f"{path}: unsupported image mode {img.mode!r} for a photo")
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from exc


def read_index_label(path: Path) -> np.ndarray:
    """Read a single-channel label map as uint8 (H, W) class ids.

    For mode 'L' these are the grey values; for mode 'P' (GTA5) the palette INDICES, never the
    palette colours. Any other mode (e.g. a colour-coded RGB label) is a `DatasetError`.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in _INDEX_LABEL_MODES:
                raise DatasetError(
                    f"{path}: label map must be a single-channel 'L' or 'P' PNG, got mode {img.mode!r}"
                )
            return np.asarray(img, dtype=np.uint8).copy()
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{path}: cannot decode label map ({exc})") from exc


def read_synthia_label(path: Path) -> np.ndarray:
    """Read a SYNTHIA `GT/LABELS` PNG and return the class-id channel, shape (H, W), uint16.

    The file is a 16-bit multi-channel PNG that PIL cannot read; OpenCV returns it in BGR(A)
    channel order and the class id is in R, i.e. channel 2 (the last channel of a 3-channel file).
    A single-channel file is taken as the class ids themselves.
    """
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise DatasetError(f"{path}: cannot decode SYNTHIA label map")
    if data.ndim == 2:
        return data.astype(np.uint16, copy=False)
    if data.ndim == 3 and data.shape[2] in (3, 4):
        return np.ascontiguousarray(data[:, :, 2]).astype(np.uint16, copy=False)
    raise DatasetError(f"{path}: unexpected SYNTHIA label shape {data.shape}")


def check_resize(size: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate an optional (H, W) target size; raises ValueError for non-positive entries."""
    if size is None:
        return None
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"resize must be (H, W) with positive integers, got {size!r}")
    return int(size[0]), int(size[1])


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (cv2.INTER_LINEAR) resize of a uint8 (H, W, 3) image to `size` = (H, W)."""
    height, width = size
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour (cv2.INTER_NEAREST) resize of a uint8 (H, W) label map to `size` = (H, W)."""
    height, width = size
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
