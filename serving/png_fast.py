"""The common PNG (8-bit grey, RGB or RGBA, one frame) decoded by OpenCV's libpng instead of PIL.

Why (bench/request_path.py, BENCHMARKS.md "request-path"): cv2.imdecode is a little faster than PIL
on a 2048x1024 photo and releases the GIL, so two requests decode in parallel; libspng (pyspng)
was fastest alone but holds the GIL, which stalls every other request and the event loop, so it
lost under load. Pixels are identical to PIL's.
Every chunk's length and CRC is checked here first (cheap next to decoding) so that a cut or corrupt
file gets a message naming the chunk (cv2 only returns None). Anything else (palette, bit depths
other than 8, a transparent colour (tRNS), EXIF orientation (eXIf), animation (acTL)) returns None
and goes through PIL, whose conversions `serving.decode` defines.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour type -> PIL's mode name for it (grey, RGB, RGBA at bit depth 8)
_FAST_COLOUR_TYPES = {0: "L", 2: "RGB", 6: "RGBA"}
# mode -> (cv2.imdecode flags, the channel part of the decoded array's shape)
_CV2_READ = {
    "L": (cv2.IMREAD_GRAYSCALE, ()),
    "RGB": (cv2.IMREAD_COLOR_RGB, (3,)),
    "RGBA": (cv2.IMREAD_UNCHANGED, (4,)),
}
# chunks that change what the pixels mean or which frame is first: PIL handles those files
_SLOW_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL"})


class BrokenPNG(ValueError):
    """A chunk is cut short or fails its CRC; the message names the chunk."""


def fast_mode(data: bytes) -> str | None:
    """PIL's mode name ("L", "RGB", "RGBA") when OpenCV may decode `data`, else None.

    Reads the header and every chunk's type and CRC, not the pixel data. Raises BrokenPNG for a
    truncated chunk or a CRC mismatch (PIL refuses those files too).
    """
    if not data.startswith(_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    bit_depth, colour_type = data[24], data[25]
    if bit_depth != 8 or colour_type not in _FAST_COLOUR_TYPES:
        return None
    if not _chunks_are_sound(memoryview(data)):
        return None
    return _FAST_COLOUR_TYPES[colour_type]


def _chunks_are_sound(view: memoryview) -> bool:
    """Walk the chunks to IEND checking each CRC; False if a chunk needs PIL's handling."""
    pos, end = len(_SIGNATURE), len(view)
    while pos < end:
        if pos + 12 > end:
            raise BrokenPNG(f"chunk header cut short at byte {pos}")
        (length,) = struct.unpack_from(">I", view, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        stop = pos + 12 + length
        if stop > end:
            raise BrokenPNG(f"{kind.decode('latin-1')} chunk cut short ({end - pos - 12} of {length} bytes)")
        (crc,) = struct.unpack_from(">I", view, stop - 4)
        if zlib.crc32(view[pos + 4 : stop - 4]) != crc:
            raise BrokenPNG(f"CRC error in the {kind.decode('latin-1')} chunk at byte {pos}")
        if kind in _SLOW_CHUNKS:
            return False
        if kind == b"IEND":
            return True
        pos = stop
    return True  # no IEND: PIL accepts that too once the pixel data is complete


def decode(data: bytes, mode: str) -> np.ndarray:
    """uint8 [H, W] (mode "L") or [H, W, 3|4] RGB/RGBA for data that `fast_mode` gave `mode` for.

    Raises BrokenPNG when libpng cannot decode the pixel data.
    """
    flags, channels = _CV2_READ[mode]
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[2:] != channels:
        raise BrokenPNG("libpng could not decode the pixel data")
    if mode == "RGBA":
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA)
    return pixels
