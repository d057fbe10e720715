"""serving.memory: malloc_trim gives freed heap pages back (glibc)."""

from __future__ import annotations

import ctypes.util
import platform

import psutil
import pytest

from serving.memory import release_free_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_returns_freed_small_blocks_to_the_os():
    assert ctypes.util.find_library("c")
    proc = psutil.Process()
    release_free_memory()
    before = proc.memory_info().rss
    # 200 MB in small blocks (served from the heap, not mmap) with every 100th kept, so the heap top
    # stays pinned and only trimming can give the freed pages in the middle back.
    blocks = [bytearray(64 * 1024 - 64) for _ in range(3200)]
    kept = blocks[::100]
    del blocks
    grown = proc.memory_info().rss
    assert release_free_memory() is True
    after = proc.memory_info().rss
    assert grown - before > 100 * 2**20, "the allocation did not grow the heap; the test proves nothing"
    assert after < grown - 100 * 2**20, f"trim released only {(grown - after) / 2**20:.0f} MiB"
    assert kept


class FakeProcess:
    """A resident set the test moves by hand; `trim` drops it to `live` (what trimming frees)."""

    def __init__(self, rss: int, live: int) -> None:
        self.rss, self.live, self.trims = rss, live, 0

    def read(self) -> int:
        return self.rss

    def trim(self) -> bool:
        self.trims += 1
        self.rss = self.live
        return True


MIB = 2**20


def test_trimmer_trims_only_past_the_slack_over_the_last_post_trim_size():
    from serving.memory import MemoryTrimmer

    proc = FakeProcess(rss=900 * MIB, live=800 * MIB)
    trimmer = MemoryTrimmer(64 * MIB, proc.read, proc.trim)
    assert trimmer.after_batch() is True and trimmer.floor == 800 * MIB  # the first batch sets the floor
    for rss in (820, 864):  # steady traffic reusing its freed heap: at most the slack, no trim
        proc.rss = rss * MIB
        assert trimmer.after_batch() is False
    proc.rss = 864 * MIB + 1  # one byte past floor + slack
    assert trimmer.after_batch() is True and proc.trims == 2 and proc.rss == 800 * MIB
    proc.live = 850 * MIB  # the live set grew (caches): the floor follows it
    proc.rss = 1000 * MIB
    assert trimmer.after_batch() is True and trimmer.floor == 850 * MIB
    proc.rss = 900 * MIB
    assert trimmer.after_batch() is False


def test_trimmer_without_slack_trims_after_every_batch_and_refuses_a_negative_slack():
    from serving.memory import MemoryTrimmer

    proc = FakeProcess(rss=800 * MIB, live=800 * MIB)
    trimmer = MemoryTrimmer(0, proc.read, proc.trim)
    assert all(trimmer.after_batch() for _ in range(3)) and proc.trims == 3
    with pytest.raises(ValueError, match="slack"):
        MemoryTrimmer(-1)


def test_resident_bytes_reads_this_process():
    from serving.memory import resident_bytes

    rss = resident_bytes()
    if platform.system() == "Linux":
        assert abs(rss - psutil.Process().memory_info().rss) < 64 * MIB
    else:
        assert rss == 0


def test_trim_slack_setting_is_read_and_checked(monkeypatch):
    from serving.settings import ServiceSettings

    monkeypatch.setenv("SEMIDAVIL_TRIM_SLACK_MB", "0")
    assert ServiceSettings.from_env().trim_slack_mb == 0
    monkeypatch.delenv("SEMIDAVIL_TRIM_SLACK_MB")
    assert ServiceSettings.from_env().trim_slack_mb == 64
    for bad in ("-1", "lots"):
        monkeypatch.setenv("SEMIDAVIL_TRIM_SLACK_MB", bad)
        with pytest.raises(ValueError, match="SEMIDAVIL_TRIM_SLACK_MB"):
            ServiceSettings.from_env()
