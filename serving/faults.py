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

An unknown item refuses to start the service (ValueError), so a typo cannot silently test nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from serving.prediction import CaptionerLike, PredictRequest

CAPTIONER_MODES = ("raise", "hang")
HANG_S = 3600.0


class InjectedFault(RuntimeError):
    """An error raised on purpose by SEMIDAVIL_FAULTS."""


@dataclass(frozen=True)
class Faults:
    """What to break: the captioner (None, "raise" or "hang") and forwards holding a caption."""

    captioner: str | None = None
    forward_error_caption: str | None = None

    @property
    def active(self) -> bool:
        return self.captioner is not None or self.forward_error_caption is not None


def parse_faults(spec: str) -> Faults:
    """`"captioner=hang,forward_error=BOOM"` -> Faults; ValueError for anything unknown."""
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value or key not in ("captioner", "forward_error"):
            raise ValueError(f"SEMIDAVIL_FAULTS: unknown item {item!r}; see serving/faults.py")
        values[key] = value
    mode = values.get("captioner")
    if mode is not None and mode not in CAPTIONER_MODES:
        raise ValueError(f"SEMIDAVIL_FAULTS: captioner={mode!r}; choose one of {', '.join(CAPTIONER_MODES)}")
    return Faults(mode, values.get("forward_error"))


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


def check_forward(faults: Faults, requests: Sequence[Any]) -> None:
    """Raise InjectedFault when a request of this batch carries the configured trigger caption.

    `requests`: PredictRequest items, or the predictor's PreparedRequest items (which hold one).
    """
    trigger = faults.forward_error_caption
    if trigger is None:  # the production case: nothing to check on the batch path
        return
    plain: list[PredictRequest] = [getattr(r, "request", r) for r in requests]
    if any(r.caption == trigger for r in plain):
        raise InjectedFault("injected backend fault: the forward of this batch failed")


def faulty_captioner(faults: Faults) -> CaptionerLike | None:
    """The captioner replacing the configured one, or None when the captioner is not broken."""
    return FaultyCaptioner(faults.captioner) if faults.captioner else None
