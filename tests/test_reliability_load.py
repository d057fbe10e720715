"""Load against the real server on loopback (reliability/run.py's mix and runner).

The default suite sends 48 mixed requests at concurrency 16 (three waves, ~10 s); the slow
test is the soak of the report: 1000 requests after a warm-up, p50/p99 recorded, resident memory at the end within
10 % of memory after warm-up. Either way: no 5xx other than the documented 503, no transport error,
and the server is ready afterwards.
"""

from __future__ import annotations

import pytest

from reliability.run import MEMORY_TOLERANCE, WARMUP, LoadResult, plan, run_load, soak
from tests.server import Server

CONCURRENCY = 16


@pytest.fixture(scope="module")
def server(reliability_server: Server) -> Server:
    """conftest.py's API-only server without a captioner (shared with the bad-input table, whose
    tight limits the mix's small images fit)."""
    return reliability_server


def _assert_healthy(server: Server, result: LoadResult) -> None:
    assert result.server_errors == 0, result.statuses
    assert not result.transport_errors, result.transport_errors[:3]
    assert server.ready()


def test_48_mixed_requests_at_concurrency_16(server: Server) -> None:
    result = run_load(server.url, plan(48, seed=3), CONCURRENCY)
    assert result.count == 48
    assert result.statuses[200] >= 32, result.statuses
    assert set(result.statuses) <= {200, 415, 422, 503}, result.statuses
    # 503 only from /caption: this server has no captioner, and /caption says so
    assert all(503 not in counts or label == "caption" for label, counts in result.by_kind.items()), (
        result.by_kind
    )
    _assert_healthy(server, result)


@pytest.mark.slow
def test_soak_1000_requests_keeps_memory_flat(server: Server) -> None:
    result, rss = soak(server, 1000, CONCURRENCY, WARMUP)
    _assert_healthy(server, result)
    assert abs(rss[-1] - rss[0]) <= MEMORY_TOLERANCE * rss[0], rss
