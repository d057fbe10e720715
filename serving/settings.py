"""Service settings from environment variables (read once at import; documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from model import cache_dir
from serving.decode import Limits
from serving.options import PredictorOptions

DEFAULT_LIMITS = Limits()  # the one place the body and pixel limits' defaults are written


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default).strip() or default


def _non_negative_int(name: str, default: str) -> int:
    text = _env(name, default)
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    text = _env(name, default).lower()
    if text not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {text!r}")
    return text


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads from the environment.

    SEMIDAVIL_CHECKPOINT (empty: the embedded default), SEMIDAVIL_BACKEND (auto), SEMIDAVIL_DEVICE
    (auto), SEMIDAVIL_CAPTIONER (blip2 | blip | none), SEMIDAVIL_CAPTIONER_MODEL, SEMIDAVIL_ARTIFACTS,
    SEMIDAVIL_MAX_BATCH (8), SEMIDAVIL_TIMEOUT_S (60),
    SEMIDAVIL_MAX_CONCURRENCY (32), SEMIDAVIL_MAX_BODY_BYTES (20 MiB), SEMIDAVIL_MAX_PIXELS (25e6),
    SEMIDAVIL_CAPTIONER_TIMEOUT_S (half the request timeout: a slower or hung captioner degrades the
    response to no caption, flagged), SEMIDAVIL_FAULTS (operator-only fault injection for the
    reliability tests, see serving/faults.py; empty in production), SEMIDAVIL_TRIM_SLACK_MB (64:
    the heap is trimmed after a batch once the resident set has grown this much since the last
    trim; 0 trims after every batch, see serving/memory.py), SEMIDAVIL_BACKEND_PROBE (on: with
    SEMIDAVIL_BACKEND=auto the first start times the candidate backends on this machine (seconds)
    and caches the choice in SEMIDAVIL_ARTIFACTS, else ~/.cache/semidavil/artifacts; full: also
    every torch.compile backend (minutes); off: the committed table, serving/backend_choice.json),
    SEMIDAVIL_UI (on: the demo is mounted at /ui; off: an API-only deployment, without Gradio's
    start-up and without its queue loop in the API's event loop), SEMIDAVIL_CPU_STREAMS (auto: one
    one-thread CPU stream per usable core, used while several requests wait, for a backend that runs
    on torch's threads; 0: none, every batch on all cores; serving/compute.py).
    """

    checkpoint: str | None = None
    backend: str = "auto"
    device: str = "auto"
    captioner: str = "blip2"
    captioner_model: str | None = None
    artifacts: str | None = None
    max_batch: int = 8
    timeout_s: int = 60
    max_concurrency: int = 32
    captioner_timeout_s: float = 30.0
    faults: str = ""
    trim_slack_mb: int = 64
    backend_probe: str = "on"
    ui: bool = True
    cpu_streams: int | None = None
    limits: Limits = field(default_factory=Limits)

    def predictor_options(self) -> PredictorOptions:
        """The predictor these settings describe (compiled artefacts kept in the probe's folder
        when SEMIDAVIL_ARTIFACTS is not set)."""
        return PredictorOptions(
            backend=self.backend,
            device=self.device,
            captioner=self.captioner,
            captioner_model=self.captioner_model,
            max_batch=self.max_batch,
            limits=self.limits,
            artifacts_dir=self.artifacts or self.probe_dir,
            captioner_timeout_s=self.captioner_timeout_s,
            probe_dir=self.probe_dir,
            probe_full=self.backend_probe == "full",
            cpu_streams=self.cpu_streams,
        )

    @property
    def probe_dir(self) -> str | None:
        """Where `auto` caches its probe (and the compiled candidates), or None when probing is off."""
        if self.backend_probe == "off":
            return None
        return self.artifacts or str(cache_dir() / "artifacts")

    @classmethod
    def from_env(cls) -> ServiceSettings:
        timeout_s = int(_env("SEMIDAVIL_TIMEOUT_S", "60"))
        return cls(
            checkpoint=os.environ.get("SEMIDAVIL_CHECKPOINT") or None,
            backend=_env("SEMIDAVIL_BACKEND", "auto"),
            device=_env("SEMIDAVIL_DEVICE", "auto"),
            captioner=_env("SEMIDAVIL_CAPTIONER", "blip2"),
            captioner_model=os.environ.get("SEMIDAVIL_CAPTIONER_MODEL") or None,
            artifacts=os.environ.get("SEMIDAVIL_ARTIFACTS") or None,
            max_batch=int(_env("SEMIDAVIL_MAX_BATCH", "8")),
            timeout_s=timeout_s,
            max_concurrency=int(_env("SEMIDAVIL_MAX_CONCURRENCY", "32")),
            captioner_timeout_s=float(_env("SEMIDAVIL_CAPTIONER_TIMEOUT_S", str(timeout_s / 2))),
            faults=os.environ.get("SEMIDAVIL_FAULTS", "").strip(),
            trim_slack_mb=_non_negative_int("SEMIDAVIL_TRIM_SLACK_MB", "64"),
            backend_probe=_choice("SEMIDAVIL_BACKEND_PROBE", "on", ("on", "full", "off")),
            ui=_choice("SEMIDAVIL_UI", "on", ("on", "off")) == "on",
            cpu_streams=None
            if _env("SEMIDAVIL_CPU_STREAMS", "auto") == "auto"
            else _non_negative_int("SEMIDAVIL_CPU_STREAMS", "auto"),
            limits=Limits(
                max_body_bytes=int(_env("SEMIDAVIL_MAX_BODY_BYTES", str(DEFAULT_LIMITS.max_body_bytes))),
                max_pixels=int(_env("SEMIDAVIL_MAX_PIXELS", str(DEFAULT_LIMITS.max_pixels))),
            ),
        )
