"""The common PNG (8-bit grey, RGB or RGBA, one frame) decoded by imagecodecs' libpng instead of PIL.

Why (bench/request_path.py, BENCHMARKS.md "request-path"): imagecodecs' own libpng build decodes a
2048x1024 photo faster than OpenCV's (which links the system zlib) and PIL, and it releases the
GIL, so two requests decode in parallel and the event loop never stalls (libspng through pyspng
was fast alone but holds the GIL). Pixels are identical to PIL's (tested; and on every 8-bit PNG of
the fixtures).
Every chunk's length and CRC is checked here first (cheap next to decoding) so that a cut or corrupt
file gets a message naming the chunk. Anything else (palette, bit depths other than 8, a
transparent colour (tRNS), EXIF orientation (eXIf), animation (acTL)) returns None and goes through
PIL, whose conversions `serving.decode` defines.
"""

from __future__ import annotations

import struct
import zlib

import imagecodecs
import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour type -> PIL's mode name for it (grey, RGB, RGBA at bit depth 8)
_FAST_COLOUR_TYPES = {0: "L", 2: "RGB", 6: "RGBA"}
# mode -> the channel part of the decoded array's shape
_CHANNELS = {"L": (), "RGB": (3,), "RGBA": (4,)}
# chunks that change what the pixels mean or which frame is first: PIL handles those files
_SLOW_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL"})


class BrokenPNG(ValueError):
    """A chunk is cut short or fails its CRC; the message names the chunk."""


def fast_mode(data: bytes) -> str | None:
    """PIL's mode name ("L", "RGB", "RGBA") when the fast path may decode `data`, else None.

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

    Raises BrokenPNG when libpng cannot decode the pixel data (e.g. a deflate stream that is
    corrupt under a valid CRC).
    """
    try:
        pixels = imagecodecs.png_decode(data)
    except imagecodecs.PngError as err:
        raise BrokenPNG(f"libpng could not decode the pixel data ({err})") from err
    if pixels.dtype != np.uint8 or pixels.shape[2:] != _CHANNELS[mode]:
        raise BrokenPNG(f"libpng decoded {pixels.dtype} {pixels.shape}, not 8-bit {mode}")
    return pixels
