"""Hand freed heap memory back to the operating system after each batch (glibc only).

Images of many sizes leave the glibc heaps of the server's worker threads fragmented: freed blocks
stay mapped, and the resident set creeps up request after request although nothing is leaked.
`malloc_trim(0)` returns the free pages of every arena to the OS. Elsewhere (musl, macOS) it is a
no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True if glibc's malloc_trim ran (and released something)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    return bool(fn(0))
