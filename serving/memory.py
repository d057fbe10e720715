"""Hand freed heap memory back to the operating system between batches (glibc only).

Images of many sizes leave the glibc heaps of the server's worker threads fragmented: freed blocks
stay mapped, and the resident set creeps up request after request although nothing is leaked.
`malloc_trim(0)` returns the free pages of every arena to the OS. Elsewhere (musl, macOS) it is a
no-op. `MemoryTrimmer` decides when: only once the resident set has grown by a slack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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


def resident_bytes() -> int:
    """This process's resident set size in bytes (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryTrimmer:
    """Trim the heap after a batch only when the resident set has grown `slack_bytes` past its size
    right after the previous trim.

    Trimming after every batch keeps the resident set flat, but each trim hands back pages the next
    request needs again, and faulting them back in costs a noticeable share of a 2048x1024 request
    (BENCHMARKS.md, HTTP section). With a slack, steady traffic reuses its freed
    heap, while fragmentation from changing image sizes (the creep trimming exists for) still
    triggers a trim once it adds up: the resident set stays within `slack_bytes` of the last
    post-trim size. `slack_bytes=0` trims after every batch. `read_rss` and `trim` are injectable
    for tests.
    """

    def __init__(
        self,
        slack_bytes: int,
        read_rss: Callable[[], int] = resident_bytes,
        trim: Callable[[], bool] = release_free_memory,
    ) -> None:
        if slack_bytes < 0:
            raise ValueError(f"slack must be >= 0 bytes, got {slack_bytes}")
        self.slack_bytes = slack_bytes
        self._read_rss, self._trim = read_rss, trim
        self.floor = 0  # resident bytes right after the last trim (0: never trimmed: trim first)
        self._lock = threading.Lock()  # batches on several CPU streams finish at once

    def after_batch(self) -> bool:
        """Trim if the resident set is over floor + slack (always when slack is 0); True if trimmed."""
        with self._lock:
            if self.slack_bytes and self.floor and self._read_rss() <= self.floor + self.slack_bytes:
                return False
            self._trim()
            self.floor = self._read_rss()
            return True
