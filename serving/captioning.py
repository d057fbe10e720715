"""A deadline around the captioner: a slow or hung captioner degrades a response, never blocks it.

The predictor calls `DeadlineCaptioner.caption`; the wrapped captioner runs in a daemon thread and
the caller waits at most `timeout_s`. A call that does not return in time raises `CaptionerTimeout`
(the predictor turns it into an empty caption with source "captioner_failed" and the reason). While
that call is still stuck, later calls fail at once with the same error instead of queueing behind
it; once it returns, captioning resumes. Threads are daemons, so a hung call cannot block shutdown.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from serving.prediction import CaptionerLike


class CaptionerTimeout(RuntimeError):
    """The captioner did not answer within its deadline (or is still stuck on an earlier call)."""


class DeadlineCaptioner:
    """`captioner.caption(images)` with a deadline of `timeout_s` seconds per call."""

    def __init__(self, captioner: CaptionerLike, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError(f"captioner timeout must be positive, got {timeout_s}")
        self.captioner = captioner
        self.timeout_s = float(timeout_s)
        self._stuck: threading.Thread | None = None
        self._lock = threading.Lock()

    def caption(self, images: Sequence[Image.Image]) -> list[Any]:
        """The wrapped captioner's results, or CaptionerTimeout; its own exceptions pass through."""
        self._refuse_while_stuck()
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["result"] = self.captioner.caption(list(images))
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err
            finally:
                done.set()

        thread = threading.Thread(target=run, name="captioner-call", daemon=True)
        thread.start()
        if not done.wait(self.timeout_s):
            with self._lock:
                self._stuck = thread
            raise CaptionerTimeout(f"the captioner did not answer within {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["result"]

    def _refuse_while_stuck(self) -> None:
        with self._lock:
            if self._stuck is not None and self._stuck.is_alive():
                raise CaptionerTimeout(
                    f"the captioner is still busy with a call that passed its {self.timeout_s:g} s deadline"
                )
            self._stuck = None
