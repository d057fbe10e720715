"""Label maps -> PNG bytes (raw ids, Cityscapes label ids, colour, overlay) and base64 helpers.

Encoder choice for a 2048x1024 map (timed by bench/request_path.py, BENCHMARKS.md "request-path"):
- label map, mode L: cv2.imencode with the "up" row filter and zlib's run-length strategy, several
  times faster than PIL's default on a real Cityscapes label map and about half its size (also on
  noise and on blocky maps); PIL only chose filters per row adaptively;
- colour map, palette mode P: PIL (cv2 cannot write palette PNGs; it is fast for 8-bit data);
- RGB overlay: cv2, faster than PIL even with the RGB->BGR swap.
Compression level 1 throughout: higher levels cost several times the time for files about half the
size; level 1 keeps PNG encoding well below the forward pass.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from model.class_sets import IGNORE_INDEX, ClassSet, train_id_to_label_id_lut
from serving.errors import InvalidParameter

PNG_COMPRESS_LEVEL = 1


def _check_label(label: np.ndarray) -> np.ndarray:
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label map must be uint8 [H, W], got {label.dtype} {label.shape}")
    return np.ascontiguousarray(label)


def _pil_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


# Label maps are large flat regions: each row repeats the one above (filter "up" -> zeros) and
# zlib's RLE strategy codes the runs without searching for longer matches.
_LABEL_PNG_FLAGS = [
    cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL,
    cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
    cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP,
]  # fmt: skip


def label_png(label: np.ndarray) -> bytes:
    """uint8 [H, W] class indices (train ids for the named sets) -> 8-bit grey PNG, values unchanged."""
    ok, buf = cv2.imencode(".png", _check_label(label), _LABEL_PNG_FLAGS)
    if not ok:
        raise RuntimeError(f"cv2 could not encode a label map of shape {label.shape} as PNG")
    return buf.tobytes()


def label_id_lut_for(class_set: ClassSet) -> np.ndarray:
    """uint8[256]: output channel index -> Cityscapes label id (255 ignore -> 0 'unlabeled').

    Only for class sets tied to Cityscapes train ids (cityscapes, synthia16); a custom set has no
    label ids and gives 422.
    """
    if class_set.train_ids is None:
        raise InvalidParameter(
            f"label ids exist only for the Cityscapes-based class sets, not for class set {class_set.name!r}"
        )
    to_label_id = train_id_to_label_id_lut()
    lut = np.zeros(256, dtype=np.uint8)
    for index, train_id in enumerate(class_set.train_ids):
        lut[index] = to_label_id[train_id]
    lut[IGNORE_INDEX] = to_label_id[IGNORE_INDEX]
    return lut


def labelid_png(label: np.ndarray, class_set: ClassSet) -> bytes:
    """Class indices -> Cityscapes label ids PNG (what the Cityscapes evaluation server expects)."""
    return label_png(label_id_lut_for(class_set)[_check_label(label)])


def palette_bytes(palette: Sequence[tuple[int, int, int]]) -> list[int]:
    """A 256-entry flat RGB palette: the class colours, black for every other index (ignore)."""
    flat = [v for colour in palette for v in colour][: 256 * 3]
    return flat + [0] * (256 * 3 - len(flat))


def color_png(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> bytes:
    """Class indices -> palette PNG (mode P): each class in its colour; small and fast to encode."""
    label = _check_label(label)
    img = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    img.putpalette(palette_bytes(palette))
    return _pil_png(img)


def color_array(label: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Class indices -> uint8 [H, W, 3] RGB colours (indices without a colour are black)."""
    table = np.asarray(palette_bytes(palette), dtype=np.uint8).reshape(256, 3)
    return table[_check_label(label)]


def overlay_array(
    rgb: np.ndarray, label: np.ndarray, palette: Sequence[tuple[int, int, int]], alpha: float = 0.5
) -> np.ndarray:
    """(1 - alpha) * image + alpha * colour map; rgb uint8 [H, W, 3], label [H, W] of the same size."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameter(f"overlay alpha must be in [0, 1], got {alpha}")
    if rgb.shape[:2] != label.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label map {label.shape} differ in size")
    colours = color_array(label, palette)
    return cv2.addWeighted(np.ascontiguousarray(rgb), 1.0 - alpha, colours, alpha, 0.0)


def rgb_png(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] RGB -> PNG bytes (cv2, zlib level 1)."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
    if not ok:
        raise RuntimeError("cv2.imencode failed to write a PNG")
    return buf.tobytes()


def overlay_png(
    rgb: np.ndarray, label: np.ndarray, palette: Sequence[tuple[int, int, int]], alpha: float = 0.5
) -> bytes:
    """Colour map alpha-blended on the input image, as PNG at the input size."""
    return rgb_png(overlay_array(rgb, label, palette, alpha))


def to_base64(data: bytes) -> str:
    """Bytes -> standard base64 text (for JSON)."""
    return base64.b64encode(data).decode("ascii")


def from_base64(text: str) -> bytes:
    """Standard base64 text -> bytes; 422 for malformed input."""
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as err:
        raise InvalidParameter(f"malformed base64 data: {err}") from err


def png_data_uri(png: bytes) -> str:
    """PNG bytes -> `data:image/png;base64,...` (for HTML and Gradio)."""
    return "data:image/png;base64," + to_base64(png)
