"""The bad-input table of the reliability suite (reliability/cases.py) against the real server.

One `bentoml serve` on loopback for every case, with the table's tight limits (conftest.py's
`reliability_server`, which the load test shares). Each case gets its
documented status and JSON error (or, for a valid but unusual image, a label map of the right
size); after each one the server answers /readyz, and no request of the module got a 500.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from reliability.cases import CASE_NAMES, CASES, run_case
from tests.server import Server, metric_total

BY_NAME = {case.name: case for case in CASES}
LISTED_IN_THE_ISSUE = (
    "empty_body", "non_image_bytes", "truncated_png", "truncated_jpeg", "corrupt_zlib", "header_50000x50000",
    "body_at_limit", "body_over_limit", "pixels_at_limit", "pixels_over_limit", "side_at_limit",
    "side_over_limit", "one_by_one", "wide_10000x2", "png_16bit_grey", "png_grey", "png_palette", "png_rgba",
    "jpeg_cmyk", "jpeg_exif_rotated", "gif_animated", "webp_animated", "svg_as_image", "html_as_image",
    "png_labelled_text_plain", "caption_100000", "classes_empty_list", "classes_over_limit",
    "classes_unknown_set", "caption_not_utf8", "output_unknown",
)  # fmt: skip


# Cases this module has sent to its server (the metrics check below needs all of them).
SENT: set[str] = set()


@pytest.fixture(scope="module")
def server(reliability_server: Server) -> Server:
    """conftest.py's server with the table's limits (shared with the load test)."""
    return reliability_server


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_the_table_covers_the_issue() -> None:
    assert len(CASES) >= 30
    assert not set(LISTED_IN_THE_ISSUE) - set(CASE_NAMES)
    assert {case.status for case in CASES} >= {200, 413, 415, 422}
    assert all(case.status != 500 for case in CASES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_case_gets_its_documented_answer_and_the_server_stays_ready(http: httpx.Client, name: str) -> None:
    result = run_case(http, BY_NAME[name])
    SENT.add(name)
    assert result["status"] != 500, result
    assert not result["problems"], result
    assert result["ready"]


def test_no_case_got_a_500(http: httpx.Client) -> None:
    for name in CASE_NAMES:  # when run alone (-k), send the table first
        if name not in SENT:
            run_case(http, BY_NAME[name])
    text = http.get("/metrics").text
    assert metric_total(text, "bentoml_service_request_total", http_response_code="500") == 0
    assert metric_total(text, "bentoml_service_request_total", endpoint="/segment") >= len(CASES) - 2
