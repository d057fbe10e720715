"""One thread for all of a predictor's torch work (building, warm-up, forwards, post-processing).

Why: torch's CPU ops run on OpenMP (libgomp), and every thread that starts a parallel region gets a
team of OpenMP threads of its own. Once two teams exist on a 2-core machine, every parallel region
pays for it: the default model's forward ran markedly slower on a worker thread of a process whose
main thread had built the model than with all torch work on one thread (same process, same input,
side by side; the figures are in issue 17's closing note). A server that builds the model in its main
thread, runs forwards in a batching thread and post-processes in request threads had three or more
teams. The predictor routes its torch work through one `ComputeThread`, which keeps one team;
decoding, encoding and HTTP stay on the callers' threads (they do not use torch).
The thread takes torch's thread count when it is created (OMP_NUM_THREADS, or the creating
thread's `torch.set_num_threads`); a later `torch.set_num_threads` elsewhere does not reach it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ComputeThread:
    """A single worker thread; `run` executes a function on it (blocking, in submission order).
    `run` called from the thread itself calls the function directly (a nested call would otherwise
    wait for itself)."""

    def __init__(self, name: str = "torch") -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.ident = self.executor.submit(threading.get_ident).result()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self.ident:
            return fn(*args)
        return self.executor.submit(fn, *args).result()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
