"""The threads that run a predictor's torch work: one wide thread, and optional one-thread streams.

Why one wide thread: torch's CPU ops run on OpenMP (libgomp), and every thread that starts a
parallel region gets a team of OpenMP threads of its own. Once two teams exist on a 2-core machine,
every parallel region pays for it: the default model's forward ran markedly slower on a worker
thread of a process whose main thread had built the model than with all torch work on one thread
(same process, same input, side by side; the figures are in issue 17's closing note). A server that
builds the model in its main thread, runs forwards in a batching thread and post-processes in
request threads had three or more teams. The predictor routes its torch work through one
`ComputeThread`, which keeps one team; decoding, encoding and HTTP stay on the callers' threads.
The thread takes torch's thread count when it is created (OMP_NUM_THREADS, or the creating
thread's `torch.set_num_threads`); a later `torch.set_num_threads` elsewhere does not reach it.

Why streams (OpenVINO's "CPU streams", TorchServe's one-thread workers): the wide thread gives one
request the lowest latency, but under load its team loses to everything else on the cores. On
2 cores the small default model's forward ran 53 ms with 2 threads and 75 ms with 1: the second
core buys a 1.4x, and while decoding, encoding and HTTP of other requests compete for it the
team's barriers wait for a preempted thread. Batching does not pay on the CPU either (per image,
batch 4 cost more than batch 1 at 1 thread: the activations leave the cache). A stream is a
`ComputeThread` with one torch thread, so it has no OpenMP team at all (its parallel regions run
inline) and several streams run requests side by side without the barrier stalls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class ComputeThread:
    """A single worker thread; `run` executes a function on it (blocking, in submission order).
    `run` called from the thread itself calls the function directly (a nested call would otherwise
    wait for itself). `threads`: the thread's torch (OpenMP) thread count; None keeps the count it
    inherits (OMP_NUM_THREADS or the process default).

    `torch.set_num_threads` also sets the count that threads starting torch work later begin with,
    so after setting `threads` on the new thread the creating thread's count is set again: only the
    new thread differs.
    """

    def __init__(self, name: str = "torch", threads: int | None = None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        if threads is None:
            self.ident = self.executor.submit(threading.get_ident).result()
            return
        creator = torch.get_num_threads()
        self.ident = self.executor.submit(_start, threads).result()
        torch.set_num_threads(creator)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self.ident:
            return fn(*args)
        return self.executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _start(threads: int) -> int:
    torch.set_num_threads(threads)
    return threading.get_ident()


def make_streams(count: int, wide: ComputeThread) -> tuple[ComputeThread, ...]:
    """`count` one-thread streams, created on `wide` (none for count < 2: one stream is no better
    than the wide thread)."""
    if count < 2:
        return ()
    return wide.run(lambda: tuple(ComputeThread(f"torch-stream{i}", threads=1) for i in range(count)))


MAX_AUTO_STREAMS = 8


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stream_count(requested: int | None, device: str, streamable: bool) -> int:
    """How many one-thread streams to make: `requested` (None = auto: one per usable core, at most
    MAX_AUTO_STREAMS), and none off the CPU or for a backend streams cannot run
    (`Backend.streamable`: torch.compile's are not thread-safe; TensorRT runs on a GPU)."""
    if device != "cpu" or not streamable:
        return 0
    if requested is not None:
        return requested
    return min(usable_cores(), MAX_AUTO_STREAMS)
