"""How a Predictor is built: one options value that the service settings, the demo's flags and
callers produce, instead of a dozen parameters copied field by field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.agreement import DEFAULT_THRESHOLD
from serving.decode import Limits


@dataclass(frozen=True)
class PredictorOptions:
    """Everything `Predictor.from_checkpoint` needs besides the checkpoint path.

    backend: a name from `serving.backends.BACKEND_NAMES` or "auto"; device: "auto", "cpu", "cuda";
    captioner: "none", "blip2", "blip" or an object with `caption(images)`; captioner_model: hub
    id or local folder; working_size (H, W): None = the checkpoint header's eval size; max_batch
    and caption_length: the backend's shape profile; limits: decode limits; artifacts_dir: where
    compiled backends are kept; agreement_threshold/agreement_margin: their gate (margin None =
    0 for trained weights, 0.01 for random ones); captioner_timeout_s: slower captions degrade to
    none (None: no limit); probe_dir: with backend "auto", time the candidates here once and cache
    the choice (None: the committed table); probe_full: every compiled backend too; cpu_streams:
    one-thread CPU streams for requests that wait while others run (None = one per usable core;
    0 = none; serving/compute.py).
    """

    backend: str = "auto"
    device: str = "auto"
    captioner: Any = "none"
    captioner_model: str | None = None
    working_size: tuple[int, int] | None = None
    max_batch: int = 8
    caption_length: int = 77
    limits: Limits = field(default_factory=Limits)
    artifacts_dir: str | None = None
    agreement_threshold: float = DEFAULT_THRESHOLD
    agreement_margin: float | None = None
    captioner_timeout_s: float | None = None
    probe_dir: str | None = None
    probe_full: bool = False
    cpu_streams: int | None = None
