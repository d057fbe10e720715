"""Greedy batching: requests queued while a batch runs form the next one; errors stay per item;
with streams, waiting requests run side by side on the one-thread lanes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.batching import GreedyBatcher


def test_a_lone_request_runs_at_once_and_queued_ones_form_the_next_batch():
    started = threading.Event()
    release = threading.Event()
    seen: list[tuple[int, ...]] = []

    def run(lane: int, items: tuple[int, ...]) -> list[int]:
        assert lane == 0  # no streams: everything on the wide lane
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
    def run(lane: int, items: tuple[int, ...]) -> list[object]:
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

    def run(lane: int, items: tuple[int, ...]) -> list[int]:
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


def test_batch_sizes_and_streams_must_be_sensible():
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        GreedyBatcher(lambda lane, items: list(items), max_batch=0)
    with pytest.raises(ValueError, match="batch sizes must be >= 1"):
        GreedyBatcher(lambda lane, items: list(items), max_batch=4, streams=2, stream_batch=0)
    with pytest.raises(ValueError, match="streams must be >= 0"):
        GreedyBatcher(lambda lane, items: list(items), max_batch=4, streams=-1)


class Lanes:
    """A batch function that records (lane, items) and holds each batch until released; it
    also records how many batches ran at once on the wide lane and on the streams."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[int, tuple[int, ...]]] = []
        self.running: dict[int, int] = {}
        self.overlaps: list[dict[int, int]] = []  # the running lanes whenever a batch started
        self.gates: dict[int, threading.Event] = {}

    def gate(self, item: int) -> threading.Event:
        return self.gates.setdefault(item, threading.Event())

    def __call__(self, lane: int, items: tuple[int, ...]) -> list[int]:
        with self.lock:
            self.calls.append((lane, items))
            self.running[lane] = self.running.get(lane, 0) + 1
            self.overlaps.append(dict(self.running))
            gates = [self.gate(i) for i in items]
        for g in gates:
            assert g.wait(5), f"item {items} never released"
        with self.lock:
            self.running[lane] -= 1
        return [i * 10 for i in items]


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition never held"
        await asyncio.sleep(0.005)


def test_a_lone_request_takes_every_core_and_waiting_ones_run_side_by_side_on_streams():
    lanes = Lanes()

    async def main() -> list[int]:
        batcher = GreedyBatcher(lanes, max_batch=8, streams=2)
        first = asyncio.ensure_future(batcher(0))  # alone: lane 0
        await _until(lambda: len(lanes.calls) == 1)
        rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 5)]
        await asyncio.sleep(0.05)
        assert len(lanes.calls) == 1  # nothing starts beside the wide lane
        lanes.gate(0).set()
        await _until(lambda: len(lanes.calls) == 3)  # two streams take one request each
        await asyncio.sleep(0.05)
        assert len(lanes.calls) == 3  # both streams busy: the rest wait, lane 0 too
        for i in (1, 2, 3, 4):
            lanes.gate(i).set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert lanes.calls[0] == (0, (0,))
    assert {lane for lane, _ in lanes.calls[1:3]} == {1, 2}
    assert all(lane in (1, 2) and len(items) == 1 for lane, items in lanes.calls[1:])
    assert sorted(i for _, items in lanes.calls for i in items) == [0, 1, 2, 3, 4]
    # the wide lane never ran beside a stream
    assert all(not (o.get(0, 0) and (o.get(1, 0) or o.get(2, 0))) for o in lanes.overlaps)


def test_the_wide_lane_waits_for_the_streams_and_a_lone_request_gets_it_again():
    lanes = Lanes()

    async def main() -> None:
        batcher = GreedyBatcher(lanes, max_batch=8, streams=2, stream_batch=2)
        held = asyncio.ensure_future(batcher(0))
        await _until(lambda: len(lanes.calls) == 1)
        waiting = [asyncio.ensure_future(batcher(i)) for i in (1, 2, 3)]
        lanes.gate(0).set()
        await _until(lambda: len(lanes.calls) == 3)
        assert [len(items) for _, items in lanes.calls[1:]] == [2, 1]  # stream_batch 2, then the rest
        late = asyncio.ensure_future(batcher(4))  # streams busy: it waits, not on lane 0
        await asyncio.sleep(0.05)
        assert len(lanes.calls) == 3
        for i in (1, 2, 3):
            lanes.gate(i).set()
        await _until(lambda: len(lanes.calls) == 4)
        assert lanes.calls[3][0] in (1, 2)  # a stream was still busy or just freed: no wide run
        lanes.gate(4).set()
        await asyncio.gather(held, *waiting, late)
        lanes.gate(5).set()
        assert await batcher(5) == 50  # everything idle again: alone on lane 0
        assert lanes.calls[-1] == (0, (5,))

    asyncio.run(main())


def test_a_request_queued_while_others_are_being_prepared_goes_to_a_stream():
    """Alone in the queue is not alone in the server: while another request is still being
    decoded, a queued request takes a stream, so lane 0 does not hold the streams back."""
    lanes = Lanes()

    async def main() -> None:
        batcher = GreedyBatcher(lanes, max_batch=8, streams=2)
        with batcher.preparing():  # another request decoding
            first = asyncio.ensure_future(batcher(0))
            await _until(lambda: len(lanes.calls) == 1)
        assert lanes.calls[0][0] in (1, 2)
        lanes.gate(0).set()
        assert await first == 0
        lanes.gate(1).set()
        assert await batcher(1) == 10  # nothing preparing, nothing running: lane 0
        assert lanes.calls[1] == (0, (1,))

    asyncio.run(main())
