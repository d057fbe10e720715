"""Greedy adaptive batching: the next batch is whatever is queued when the previous one finishes.

BentoML's CORK dispatcher (what its batchable APIs use) sleeps to let a batch fill when its fitted
cost model says a bigger batch is cheaper per item. For the served models on a CPU that is not
so (the small default costs about as much per image at batch 4 or 8 as at batch 1 in fp32), and
its waiting left the cores idle: fewer requests/s at concurrency 8 than the same server with
batching off (bench/request_path.py, 2048x1024 PNG -> label PNG). Here nothing waits:
one batch runs at a time (the CPU forward uses every core), and requests that arrive meanwhile
form the next batch, up to `max_batch`. Under light load every request runs alone at once; under
heavy load batches form by themselves, as with a queue delay of 0 in Triton's dynamic batcher.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio

In = TypeVar("In")
Out = TypeVar("Out")


class GreedyBatcher(Generic[In, Out]):
    """`await batcher(item)` -> fn's result for that item; fn(items) runs in a worker thread.

    fn gets a tuple of items and returns one result per item, in order; a result that is an
    Exception is raised for its item only, and an exception raised by fn fails that batch's items.
    An item whose caller was cancelled before its batch started is dropped.
    """

    def __init__(self, fn: Callable[[tuple[In, ...]], Sequence[Out | Exception]], max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._fn = fn
        self._max_batch = max_batch
        self._queue: deque[tuple[In, asyncio.Future[Any]]] = deque()
        self._draining = False
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((item, future))
        if not self._draining:  # no await between the check and the flag: one event loop thread
            self._draining = True
            self._task = loop.create_task(self._drain())  # held: the loop keeps only weak references
        return await future

    def _next_batch(self) -> list[tuple[In, asyncio.Future[Any]]]:
        jobs: list[tuple[In, asyncio.Future[Any]]] = []
        while self._queue and len(jobs) < self._max_batch:
            item, future = self._queue.popleft()
            if not future.cancelled():
                jobs.append((item, future))
        return jobs

    async def _drain(self) -> None:
        try:
            while self._queue:
                jobs = self._next_batch()
                if not jobs:
                    continue
                try:
                    results = await anyio.to_thread.run_sync(self._fn, tuple(item for item, _ in jobs))
                    if len(results) != len(jobs):
                        raise RuntimeError(
                            f"batch function returned {len(results)} results for {len(jobs)} items"
                        )
                except Exception as err:  # the whole batch fails, each caller gets the error
                    results = [err] * len(jobs)
                for (_, future), result in zip(jobs, results):
                    if future.done():  # cancelled while its batch ran
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._draining = False
