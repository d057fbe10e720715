"""Operator-only fault injection for the reliability tests (SEMIDAVIL_FAULTS; empty in production).

The variable is read once at start-up; nothing in a request can switch a fault on. Comma-separated
items:

- `captioner=raise`: every captioner call raises (the response degrades to no caption, flagged
  with source "captioner_failed" and the error);
- `captioner=hang`: every captioner call blocks for an hour (the captioner deadline,
  SEMIDAVIL_CAPTIONER_TIMEOUT_S, turns it into the same degraded response);
- `forward_error=<caption>`: the batched forward of any batch holding a request whose caption is
  exactly `<caption>` raises, as a failing model backend would (that request gets a 500 with an
  error id; the next ones are served). Readiness checks use an empty caption, so they never trip it.
- `slow_forward=<caption>`: the batched forward of any batch holding a request whose caption is
  exactly `<caption>` first sleeps SLOW_FORWARD_S, as an overloaded backend would (a request
  deadline, SEMIDAVIL_TIMEOUT_S, shorter than that answers 504; the batch still completes).

An unknown item refuses to start the service (ValueError), so a typo cannot silently test nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from serving.prediction import CaptionerLike

CAPTIONER_MODES = ("raise", "hang")
HANG_S = 3600.0
SLOW_FORWARD_S = 4.0
FAULT_ITEMS = ("captioner", "forward_error", "slow_forward")


class InjectedFault(RuntimeError):
    """An error raised on purpose by SEMIDAVIL_FAULTS."""


@dataclass(frozen=True)
class Faults:
    """What to break: the captioner (None, "raise" or "hang"), forwards holding a caption (they
    raise), forwards holding another caption (they are slow)."""

    captioner: str | None = None
    forward_error_caption: str | None = None
    slow_forward_caption: str | None = None

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.captioner, self.forward_error_caption, self.slow_forward_caption)
        )


def parse_faults(spec: str) -> Faults:
    """`"captioner=hang,forward_error=BOOM"` -> Faults; ValueError for anything unknown."""
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value or key not in FAULT_ITEMS:
            raise ValueError(f"SEMIDAVIL_FAULTS: unknown item {item!r}; see serving/faults.py")
        values[key] = value
    mode = values.get("captioner")
    if mode is not None and mode not in CAPTIONER_MODES:
        raise ValueError(f"SEMIDAVIL_FAULTS: captioner={mode!r}; choose one of {', '.join(CAPTIONER_MODES)}")
    return Faults(mode, values.get("forward_error"), values.get("slow_forward"))


class FaultyCaptioner:
    """A captioner that raises or hangs on every call."""

    identity = "fault-injection"

    def __init__(self, mode: str) -> None:
        if mode not in CAPTIONER_MODES:
            raise ValueError(f"unknown captioner fault {mode!r}")
        self.mode = mode
        self._never = threading.Event()

    def caption(self, images: Sequence[Image.Image]) -> list[Any]:
        if self.mode == "hang":
            self._never.wait(HANG_S)
        raise InjectedFault(f"injected captioner fault ({self.mode})")


def check_forward(
    faults: Faults, requests: Sequence[Any], sleep: Callable[[float], None] = time.sleep
) -> None:
    """Sleep SLOW_FORWARD_S when a request of this batch carries the slow trigger caption, then raise
    InjectedFault when one carries the failing trigger caption.

    `requests`: PredictRequest items, or the predictor's PreparedRequest items (which hold one).
    """
    slow, failing = faults.slow_forward_caption, faults.forward_error_caption
    if slow is None and failing is None:
        return  # the production case: nothing to check on the batch path
    captions = {getattr(r, "request", r).caption for r in requests}
    if slow is not None and slow in captions:
        sleep(SLOW_FORWARD_S)
    if failing is not None and failing in captions:
        raise InjectedFault("injected backend fault: the forward of this batch failed")


def faulty_captioner(faults: Faults) -> CaptionerLike | None:
    """The captioner replacing the configured one, or None when the captioner is not broken."""
    return FaultyCaptioner(faults.captioner) if faults.captioner else None
