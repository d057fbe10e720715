"""The service's own Prometheus metrics, beside BentoML's generic request counters at /metrics.

    semidavil_segment_requests_total{output, status}   /segment requests by output kind and HTTP status
    semidavil_stage_seconds{stage}                      per-stage latency of served predictions
    semidavil_batch_size                                images per backend call
    semidavil_caption_source_total{source}              where captions came from

Built lazily with `bentoml.metrics` (BentoML's multiprocess-safe drop-in for prometheus_client),
so importing this module outside a BentoML server costs nothing.
"""

from __future__ import annotations

import functools
from typing import Any

from serving.prediction import Prediction

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


@functools.cache
def _metrics() -> dict[str, Any]:
    import bentoml

    m = bentoml.metrics
    return {
        "requests": m.Counter(
            name="semidavil_segment_requests",
            documentation="/segment requests",
            labelnames=["output", "status"],
        ),
        "stage": m.Histogram(
            name="semidavil_stage_seconds",
            documentation="latency of one prediction stage",
            labelnames=["stage"],
            buckets=STAGE_BUCKETS,
        ),
        "batch": m.Histogram(
            name="semidavil_batch_size", documentation="images per backend call", buckets=BATCH_BUCKETS
        ),
        "caption": m.Counter(
            name="semidavil_caption_source", documentation="source of the caption", labelnames=["source"]
        ),
    }


def record_request(output: str, status: int) -> None:
    """Count one /segment request by its output kind ('unknown' before it was parsed) and status."""
    _metrics()["requests"].labels(output=output, status=str(status)).inc()


def record_prediction(pred: Prediction) -> None:
    """Stage timings, batch size and caption source of one served prediction."""
    m = _metrics()
    for stage, ms in pred.timings_ms.items():
        m["stage"].labels(stage=stage).observe(ms / 1000.0)
    m["batch"].observe(pred.batch_size)
    m["caption"].labels(source=pred.caption.source).inc()
