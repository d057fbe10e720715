"""The captioner on a thread of its own, with a deadline: a slow or hung captioner degrades a
response, never blocks it.

Every caption runs on one daemon thread per captioner (`_DaemonWorker`), in submission order:
torch gives each thread that runs a parallel region an OpenMP team of its own (serving/compute.py),
so captioning on request threads, or on a new thread per call, would add teams that slow every
forward. The caller waits at most `timeout_s` (None: as long as it takes). A call that does not
return in time raises `CaptionerTimeout` (the predictor turns it into an empty caption with source
"captioner_failed" and the reason); a call still queued when its deadline passes is cancelled. While
a timed-out call is still running, later calls fail at once with the same error instead of queueing
behind it; once it returns, captioning resumes. The thread is a daemon, so a hung call cannot block
shutdown.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from PIL import Image

from serving.prediction import CaptionerLike


class CaptionerTimeout(RuntimeError):
    """The captioner did not answer within its deadline (or is still stuck on an earlier call)."""


class _DaemonWorker:
    """One daemon thread running submitted calls in order (ThreadPoolExecutor's workers are joined
    at exit, so a hung call there would block shutdown)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def close(self) -> None:
        """Stop after the calls already queued."""
        self._queue.put(None)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued: its caller has given up
            try:
                future.set_result(fn(*args))
            except BaseException as err:  # handed to the caller's thread
                future.set_exception(err)


class DeadlineCaptioner:
    """`captioner.caption(images)` on the captioner's own thread, with a deadline of `timeout_s`
    seconds per call (None: no deadline)."""

    def __init__(self, captioner: CaptionerLike, timeout_s: float | None) -> None:
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"captioner timeout must be positive, got {timeout_s}")
        self.captioner = captioner
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self._worker = _DaemonWorker("captioner")
        self._stuck: Future | None = None
        self._lock = threading.Lock()

    @property
    def thread(self) -> threading.Thread:
        """The thread every caption runs on."""
        return self._worker.thread

    def caption(self, images: Sequence[Image.Image]) -> list[Any]:
        """The wrapped captioner's results, or CaptionerTimeout; its own exceptions pass through."""
        self._refuse_while_stuck()
        future = self._worker.submit(self.captioner.caption, list(images))
        try:
            return future.result(self.timeout_s)
        except FutureTimeout:
            if not future.cancel():  # running, not queued: later calls must not wait behind it
                with self._lock:
                    self._stuck = future
            raise CaptionerTimeout(f"the captioner did not answer within {self.timeout_s:g} s") from None

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the captioner's thread, without a deadline (loading the captioner)."""
        return self._worker.submit(fn, *args).result()

    def close(self) -> None:
        """Let the captioner's thread end once its queued calls are done."""
        self._worker.close()

    def _refuse_while_stuck(self) -> None:
        with self._lock:
            if self._stuck is not None and not self._stuck.done():
                raise CaptionerTimeout(
                    f"the captioner is still busy with a call that passed its {self.timeout_s:g} s deadline"
                )
            self._stuck = None
