"""Untrusted image bytes -> RGB uint8, with every limit enforced before the pixels are decoded.

Order of checks (each one cheap, the expensive decode last):
1. body size (`max_body_bytes`, 413 `payload_too_large`) and empty body (422 `invalid_image`);
2. format sniffed from the magic bytes against the allow-list (415 `unsupported_media_type`);
3. `Image.open` with only the allowed plugin, which parses the header but no pixel data; the
   declared width x height against `max_pixels` and `max_side` (413 `image_too_large`);
4. `load()` with `ImageFile.LOAD_TRUNCATED_IMAGES` off: truncated or corrupt data is 422 (8-bit
   grey/RGB/RGBA PNGs are decoded by imagecodecs' libpng after a CRC check of every chunk: the
   same pixels, faster, and without holding the GIL: `serving.png_fast`);
5. EXIF orientation applied, then the mode converted to RGB (see `to_rgb_array`).

Alpha policy: transparent images are composited on black (rgb * alpha / 255). Black is what a
fully transparent pixel stores most often anyway, and it is deterministic: dropping the alpha
channel would expose whatever colour an editor left under transparent pixels.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from serving import png_fast
from serving.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedMediaType

logger = logging.getLogger(__name__)

# Truncated files must fail loudly (PIL's default; re-asserted because any imported library may flip it).
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


@dataclass(frozen=True)
class Limits:
    """Input limits of the service.

    max_body_bytes: request body size in bytes; max_pixels: width * height of the (first frame of
    the) image; max_side: longest side in pixels (guards extreme aspect ratios); allowed_formats:
    PIL format names ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF").
    """

    max_body_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 25_000_000
    max_side: int = 16_384
    allowed_formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or self.max_pixels < 1 or self.max_side < 1:
            raise ValueError("limits must be positive")
        object.__setattr__(self, "allowed_formats", tuple(f.upper() for f in self.allowed_formats))


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: rgb uint8 [H, W, 3] (EXIF orientation applied), and what it was."""

    rgb: np.ndarray
    original_mode: str
    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    """PIL format name from the magic bytes, or None if unknown (SVG, HTML, text, ...)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def check_body_size(size: int, limits: Limits) -> None:
    """413 `payload_too_large` when a body of `size` bytes is over `limits.max_body_bytes`."""
    if size > limits.max_body_bytes:
        raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limits.max_body_bytes} bytes")


def max_body_bytes(limits: Limits) -> int:
    """The body-size limit in bytes (what an HTTP layer should configure as its own cap)."""
    return limits.max_body_bytes


def read_limited(source: BinaryIO | str | os.PathLike[str], limits: Limits) -> bytes:
    """Read a file or stream, refusing (413) as soon as it is longer than the body limit.

    Reads at most `max_body_bytes + 1` bytes, so a huge upload is never held in memory whole.
    """
    if isinstance(source, (str, os.PathLike)):
        size = Path(source).stat().st_size
        check_body_size(size, limits)
        with open(source, "rb") as fh:
            return read_limited(fh, limits)
    data = source.read(limits.max_body_bytes + 1)
    check_body_size(len(data), limits)
    return data


PIXELS_SETTING = "SEMIDAVIL_MAX_PIXELS"


def _allowed_names(limits: Limits) -> str:
    return ", ".join("WebP" if f == "WEBP" else f for f in limits.allowed_formats)


def _open_header(data: bytes, limits: Limits) -> Image.Image:
    """Image.open (header only) after the format and allow-list checks."""
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(f"not a recognised image format; send {_allowed_names(limits)}")
    if fmt not in limits.allowed_formats:
        raise UnsupportedMediaType(f"{fmt} images are not accepted; send {_allowed_names(limits)}")
    _raise_pil_bomb_limit(limits)
    try:
        return Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as err:
        raise bomb_error(err, limits) from err
    except Exception as err:  # PIL raises many types for a broken header
        raise InvalidImage(f"broken {fmt} data: cannot read the image header ({err})") from err


def bomb_error(err: Image.DecompressionBombError, limits: Limits) -> ImageTooLarge:
    """413 with our limit only: PIL's message names its own (2x MAX_IMAGE_PIXELS), a second number."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    size = f"{int(found.group(1))} pixels" if found else "more pixels than allowed"
    return ImageTooLarge(f"image declares {size}; the limit is {limits.max_pixels} pixels ({PIXELS_SETTING})")


def _raise_pil_bomb_limit(limits: Limits) -> None:
    """Keep PIL's own bomb check (2x MAX_IMAGE_PIXELS raises in open) above our limit, so ours rules."""
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < limits.max_pixels:
        Image.MAX_IMAGE_PIXELS = limits.max_pixels


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    """413 `image_too_large` for too many pixels or too long a side; 422 for an empty image."""
    if width < 1 or height < 1:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} pixels "
            f"({PIXELS_SETTING})"
        )
    if max(width, height) > limits.max_side:
        raise ImageTooLarge(f"image side {max(width, height)} px is over the limit of {limits.max_side} px")


def _load_pixels(img: Image.Image, limits: Limits) -> Image.Image:
    """Decode the pixel data of the first frame; 422 for truncated or corrupt data."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        logger.warning("PIL LOAD_TRUNCATED_IMAGES was switched on by another library; switching it off")
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img.seek(0)
        img.load()
    except Image.DecompressionBombError as err:
        raise bomb_error(err, limits) from err
    except Exception as err:  # OSError (truncated), SyntaxError, ValueError, zlib errors, ...
        raise InvalidImage(f"broken {img.format} data: {err}") from err
    return img


def _apply_exif_orientation(img: Image.Image) -> Image.Image:
    """Rotate/flip per the EXIF orientation tag; a broken EXIF block is ignored (logged)."""
    try:
        rotated = ImageOps.exif_transpose(img)
    except Exception as err:  # malformed EXIF must not fail an otherwise good image
        logger.info("ignoring unreadable EXIF orientation: %s", err)
        return img
    return rotated if rotated is not None else img


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _composite_on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 rgb [H, W, 3] and alpha [H, W] -> rgb * alpha / 255, rounded."""
    out = (rgb.astype(np.uint16) * alpha[..., None].astype(np.uint16) + 127) // 255
    return out.astype(np.uint8)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit grey (0..65535) -> 0..255 by scaling (65535 -> 255, 257 -> 1), not by clipping."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> a writable, contiguous uint8 [H, W, 3] RGB array.

    L and 1-bit: grey replicated; I;16/I (16-bit grey): scaled to 8 bits; P: through its palette
    (RGBA if it has a transparent index); LA/PA/RGBA/RGBa: composited on black; CMYK, YCbCr, ...:
    PIL's conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(_sixteen_bit_to_uint8(np.array(img)))
    if mode in ("L", "1"):
        return _grey_to_rgb(np.array(img.convert("L"), dtype=np.uint8))
    if mode == "P":
        return to_rgb_array(img.convert("RGBA" if "transparency" in img.info else "RGB"))
    if mode in ("LA", "La"):
        la = np.array(img.convert("LA"), dtype=np.uint8)
        return _composite_on_black(_grey_to_rgb(la[..., 0]), la[..., 1])
    if mode in ("RGBA", "RGBa", "PA"):
        rgba = np.array(img.convert("RGBA"), dtype=np.uint8)
        return _composite_on_black(rgba[..., :3], rgba[..., 3])
    return np.array(img.convert("RGB"), dtype=np.uint8)


def decode_pil(img: Image.Image, limits: Limits, fmt: str | None = None) -> DecodedImage:
    """An opened (header-only or loaded) PIL image -> DecodedImage, with the pixel limits checked."""
    check_dimensions(img.width, img.height, limits)
    mode, fmt = img.mode, fmt or img.format or "unknown"
    img = _apply_exif_orientation(_load_pixels(img, limits))
    rgb = np.ascontiguousarray(to_rgb_array(img))
    return DecodedImage(rgb, mode, fmt, rgb.shape[1], rgb.shape[0])


def decode_image(data: bytes, limits: Limits | None = None) -> DecodedImage:
    """Validate and decode image bytes; raises a `ServingError` subclass for every bad input.

    413 body too large or too many declared pixels (checked before decoding); 415 format not
    recognised or not allowed; 422 empty, truncated or corrupt. Animated GIF/WebP/APNG: first frame.
    """
    limits = limits or Limits()
    if not data:
        raise InvalidImage("empty request body: no image data")
    check_body_size(len(data), limits)
    img = _open_header(data, limits)
    with img:
        check_dimensions(img.width, img.height, limits)
        decoded = _decode_png_fast(data) if img.format == "PNG" else None
        return decoded if decoded is not None else decode_pil(img, limits, img.format)


def _decode_png_fast(data: bytes) -> DecodedImage | None:
    """8-bit grey/RGB/RGBA PNG by imagecodecs (serving.png_fast), converted as `to_rgb_array` does;
    None for every other PNG. 422 for a truncated or corrupt file."""
    try:
        mode = png_fast.fast_mode(data)
        if mode is None:
            return None
        pixels = png_fast.decode(data, mode)
    except png_fast.BrokenPNG as err:
        raise InvalidImage(f"broken PNG data: {err}") from err
    if mode == "L":
        rgb = _grey_to_rgb(pixels)
    elif mode == "RGBA":
        rgb = _composite_on_black(pixels[..., :3], pixels[..., 3])
    else:
        rgb = np.ascontiguousarray(pixels)
    return DecodedImage(rgb, mode, "PNG", rgb.shape[1], rgb.shape[0])


def decode_array(array: np.ndarray, limits: Limits | None = None) -> DecodedImage:
    """A caller's array (uint8 [H, W, 3] RGB, [H, W, 4] RGBA or [H, W] grey) -> DecodedImage."""
    limits = limits or Limits()
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or (array.ndim == 3 and array.shape[2] not in (3, 4))
    ):
        raise InvalidImage(f"expected a uint8 HxW, HxWx3 or HxWx4 array, got {array.dtype} {array.shape}")
    check_dimensions(array.shape[1], array.shape[0], limits)
    if array.ndim == 2:
        rgb, mode = _grey_to_rgb(array), "L"
    elif array.shape[2] == 4:
        rgb, mode = _composite_on_black(array[..., :3], array[..., 3]), "RGBA"
    else:
        rgb, mode = np.array(array, dtype=np.uint8, order="C"), "RGB"
    return DecodedImage(rgb, mode, "array", rgb.shape[1], rgb.shape[0])
