"""Greedy batching: requests queued while a batch runs form the next one; errors stay per item."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batching import GreedyBatcher


def test_a_lone_request_runs_at_once_and_queued_ones_form_the_next_batch():
    started = threading.Event()
    release = threading.Event()
    seen: list[tuple[int, ...]] = []

    def run(items: tuple[int, ...]) -> list[int]:
        seen.append(items)
        if len(seen) == 1:  # hold the first batch until the others have queued
            started.set()
            release.wait(5)
        return [i * 10 for i in items]

    async def main() -> list[int]:
        batcher = GreedyBatcher(run, max_batch=3)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.to_thread(started.wait, 5)
        rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 6)]
        await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50]
    assert seen == [(0,), (1, 2, 3), (4, 5)]  # nothing waited to fill a batch; max_batch holds


def test_errors_are_per_item_and_a_raising_batch_fails_its_items_only():
    def run(items: tuple[int, ...]) -> list[object]:
        if 99 in items:
            raise RuntimeError("backend exploded")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    async def main() -> None:
        batcher = GreedyBatcher(run, max_batch=8)
        good, bad = await asyncio.gather(batcher(1), batcher(-1), return_exceptions=True)
        assert good == 1 and isinstance(bad, ValueError) and "bad -1" in str(bad)
        with pytest.raises(RuntimeError, match="backend exploded"):
            await batcher(99)
        assert await batcher(2) == 2  # the batcher keeps working after a failed batch

    asyncio.run(main())


def test_a_cancelled_request_is_dropped_before_its_batch_runs():
    ran: list[tuple[int, ...]] = []
    gate = threading.Event()

    def run(items: tuple[int, ...]) -> list[int]:
        ran.append(items)
        if items == (0,):
            gate.wait(5)
        return list(items)

    async def main() -> None:
        batcher = GreedyBatcher(run, max_batch=8)
        first = asyncio.ensure_future(batcher(0))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher(1))
        kept = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        assert await first == 0 and await kept == 2

    asyncio.run(main())
    assert ran == [(0,), (2,)]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        GreedyBatcher(lambda items: list(items), max_batch=0)
