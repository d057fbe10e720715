"""Greedy adaptive batching over lanes: the next batch is whatever is queued when a lane is free.

BentoML's CORK dispatcher (what its batchable APIs use) sleeps to let a batch fill when its fitted
cost model says a bigger batch is cheaper per item. For the served models on a CPU that is not
so (the small default costs about as much per image at batch 4 or 8 as at batch 1 in fp32), and
its waiting left the cores idle: fewer requests/s at concurrency 8 than the same server with
batching off (bench/request_path.py, 2048x1024 PNG -> label PNG). Here nothing waits, as with a
queue delay of 0 in Triton's dynamic batcher.

Lanes: lane 0 uses every core (the predictor's compute thread); lanes 1..n, when there are any,
are one-thread CPU streams (serving/compute.py). A request that finds nothing running, no one else
waiting and no other request being prepared (decoded: `preparing`) runs alone on lane 0: the lowest
latency. Otherwise each free stream takes the next `stream_batch` waiting requests, side by side,
and lane 0 waits until the streams are idle (it would compete with them for every core). Counting
the requests still being decoded matters: under load a request often reaches the queue while the
others decode, and on lane 0 it would hold the streams back for a whole forward. Without streams this is one
batch of up to `max_batch` at a time on lane 0: under light load every request runs alone at once,
under heavy load batches form by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import anyio

In = TypeVar("In")
Out = TypeVar("Out")


class GreedyBatcher(Generic[In, Out]):
    """`await batcher(item)` -> fn's result for that item; fn(lane, items) runs in a worker thread.

    fn gets the lane and a tuple of items and returns one result per item, in order; a result that
    is an Exception is raised for its item only, and an exception raised by fn fails that batch's
    items. An item whose caller was cancelled before its batch started is dropped. `streams`: how
    many one-thread lanes (1..streams) exist besides lane 0.
    """

    def __init__(
        self,
        fn: Callable[[int, tuple[In, ...]], Sequence[Out | Exception]],
        max_batch: int,
        streams: int = 0,
        stream_batch: int = 1,
    ) -> None:
        if max_batch < 1 or stream_batch < 1:
            raise ValueError(f"batch sizes must be >= 1, got {max_batch} and {stream_batch}")
        if streams < 0:
            raise ValueError(f"streams must be >= 0, got {streams}")
        self._fn = fn
        self._max_batch = max_batch
        self._stream_batch = stream_batch
        self._queue: deque[tuple[In, asyncio.Future[Any]]] = deque()
        self._wide_busy = False
        self._preparing = 0  # requests on their way to the queue (`preparing`)
        self._free_streams = list(range(streams, 0, -1))  # popped from the end: lane 1 first
        self._streams = streams
        self._running: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    async def __call__(self, item: In) -> Out:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._dispatch()
        return await future

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Wrap a request's work before it calls the batcher (decoding): while any request is in
        here, a lone queued request goes to a stream, not to lane 0. Event loop thread only."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1

    @property
    def busy_streams(self) -> int:
        return self._streams - len(self._free_streams)

    def _next_lane(self) -> tuple[int, int] | None:
        """(lane, batch size) that may start now, or None."""
        if not self._queue or self._wide_busy:
            return None
        alone = len(self._queue) == 1 and self._preparing == 0
        if not self._streams or (self.busy_streams == 0 and alone):
            return 0, self._max_batch
        if self._free_streams:
            return self._free_streams.pop(), self._stream_batch
        return None

    def _dispatch(self) -> None:
        """Start every batch that may start now (on the event loop thread: no locks needed)."""
        while (chosen := self._next_lane()) is not None:
            lane, size = chosen
            jobs = self._next_batch(size)
            if not jobs:  # only cancelled items were left
                self._release(lane)
                continue
            if lane == 0:
                self._wide_busy = True
            task = asyncio.get_running_loop().create_task(self._run(lane, jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _release(self, lane: int) -> None:
        if lane == 0:
            self._wide_busy = False
        else:
            self._free_streams.append(lane)

    def _next_batch(self, size: int) -> list[tuple[In, asyncio.Future[Any]]]:
        jobs: list[tuple[In, asyncio.Future[Any]]] = []
        while self._queue and len(jobs) < size:
            item, future = self._queue.popleft()
            if not future.cancelled():
                jobs.append((item, future))
        return jobs

    async def _run(self, lane: int, jobs: list[tuple[In, asyncio.Future[Any]]]) -> None:
        try:
            items = tuple(item for item, _ in jobs)
            results = await anyio.to_thread.run_sync(self._fn, lane, items)
            if len(results) != len(jobs):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(jobs)} items")
        except Exception as err:  # the whole batch fails, each caller gets the error
            results = [err] * len(jobs)
        finally:
            self._release(lane)
            self._dispatch()
        for (_, future), result in zip(jobs, results):
            if future.done():  # cancelled while its batch ran
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
