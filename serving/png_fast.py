"""The common PNG (8-bit grey, RGB or RGBA, one frame) decoded by libspng instead of PIL.

PIL inflates and unfilters a 2048x1024 Cityscapes PNG in ~64 ms on the 2-core dev CPU, libspng
(pyspng, the binding NVlabs' training code uses) in ~34 ms with identical pixels. libspng does not
check chunk CRCs or the zlib checksum the way PIL does (a flipped IDAT byte decodes to wrong
pixels without an error), so every chunk's CRC is verified here first (~1 ms for 2 MB), and a
truncated stream still fails in libspng. Anything else (palette, 1-16 bit depths other than 8,
a transparent colour (tRNS), EXIF orientation (eXIf), animation (acTL)) returns None and goes
through PIL, whose conversions `serving.decode` defines.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # a core dependency; without it every PNG takes the PIL path
    import pyspng
except ImportError:  # pragma: no cover - exercised only in a broken install
    pyspng = None

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour type -> (PIL's mode name for it, channels): grey, RGB, RGBA at bit depth 8
_FAST_COLOUR_TYPES = {0: ("L", 1), 2: ("RGB", 3), 6: ("RGBA", 4)}
# chunks that change what the pixels mean or which frame is first: PIL handles those files
_SLOW_CHUNKS = frozenset({b"tRNS", b"eXIf", b"acTL"})


class BrokenPNG(ValueError):
    """A chunk is cut short or fails its CRC; the message names the chunk."""


def fast_mode(data: bytes) -> str | None:
    """PIL's mode name ("L", "RGB", "RGBA") when libspng may decode `data`, else None.

    Reads the header and every chunk's type and CRC, not the pixel data. Raises BrokenPNG for a
    truncated chunk or a CRC mismatch (PIL refuses those files too).
    """
    if pyspng is None or not data.startswith(_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    bit_depth, colour_type = data[24], data[25]
    if bit_depth != 8 or colour_type not in _FAST_COLOUR_TYPES:
        return None
    if not _chunks_are_sound(memoryview(data)):
        return None
    return _FAST_COLOUR_TYPES[colour_type][0]


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


def decode(data: bytes) -> np.ndarray:
    """uint8 [H, W] (grey) or [H, W, C] (RGB, RGBA) for data that `fast_mode` accepted.

    Raises BrokenPNG when libspng cannot decode it (truncated or corrupt pixel data).
    """
    try:
        return pyspng.load(data)
    except RuntimeError as err:  # pyspng reports every libspng error as RuntimeError
        raise BrokenPNG(str(err).removeprefix("pyspng: ")) from err
