"""Every limit of the service just below and just above, with real requests to real servers.

One server, TestTightLimits: SEMIDAVIL_MAX_BODY_BYTES=200000, SEMIDAVIL_MAX_PIXELS=100000 and
SEMIDAVIL_MAX_CONCURRENCY=1 (413 from Content-Length and from a chunked stream, 413 from the image
header before decoding, 429). Every refusal has the service's JSON error shape, and the server is
ready after each. The request deadline (504 for a slow upload and a slow forward) is tested on the
fault-injection server of tests/test_reliability_faults.py, whose slow forward is injected.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.server import (
    API_ONLY,
    Server,
    assert_error,
    decode_png,
    encode,
    metric_total,
    multipart,
    multipart_overhead,
    noise_image,
    pad_png,
    png_bytes,
    running_server,
    slow_stream,
)

MAX_BODY = 200_000
MAX_PIXELS = 100_000
REQUEST_TIMEOUT_S = 60.0


def chunks(body: bytes, size: int = 16_384) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def solid_png(width: int, height: int) -> bytes:
    return png_bytes(Image.new("RGB", (width, height), (120, 60, 200)))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but whose pixel data is missing (truncated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", len(idat)) + b"IDAT" + idat


def post_image(http: httpx.Client, image: bytes, **fields: str) -> httpx.Response:
    files = {"image": ("image.png", image, "image/png")}
    return http.post("/segment", files=files, data=fields, timeout=REQUEST_TIMEOUT_S)


def assert_ready(http: httpx.Client) -> None:
    assert http.get("/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200


def assert_no_500(http: httpx.Client, *codes: str) -> None:
    """No request got a 500, and each of `codes` was answered at least once (Prometheus counts)."""
    text = http.get("/metrics").text
    total = "bentoml_service_request_total"
    assert metric_total(text, total, http_response_code="500") == 0
    for code in codes:
        assert metric_total(text, total, endpoint="/segment", http_response_code=code) >= 1, code


def burst(http: httpx.Client, image: bytes, count: int) -> list[httpx.Response]:
    """`count` requests released together by a barrier."""
    barrier = threading.Barrier(count, timeout=30)

    def one(_: int) -> httpx.Response:
        barrier.wait()
        return post_image(http, image, output="overlay_png")

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count), timeout=120))


def label_shape(response: httpx.Response) -> tuple[int, ...]:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:300]}"
    assert response.headers["content-type"] == "image/png"
    return decode_png(response.content).shape


# ------------------------------------------------------------------------------------------------
# Body size, pixel count, concurrency


@pytest.fixture(scope="class")
def tight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "SEMIDAVIL_MAX_BODY_BYTES": str(MAX_BODY),
        "SEMIDAVIL_MAX_PIXELS": str(MAX_PIXELS),
        "SEMIDAVIL_MAX_CONCURRENCY": "1",
        **API_ONLY,
    }
    with running_server(tmp_path_factory.mktemp("tight"), env) as srv:
        yield srv


@pytest.fixture(scope="class")
def tight(tight_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tight_server.url, timeout=REQUEST_TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="class")
def bodies() -> dict[str, bytes]:
    """Multipart bodies of exactly MAX_BODY and MAX_BODY + 1 bytes (a 250x250 noise PNG, padded)."""
    fields = {"output": "label_png"}
    base = png_bytes(noise_image(250, 250, seed=3), compress_level=0)
    image_bytes = MAX_BODY - multipart_overhead(fields)
    assert len(base) < image_bytes < len(base) + 20_000
    at_limit, _ = multipart(pad_png(base, image_bytes), fields)
    over, _ = multipart(pad_png(base, image_bytes + 1), fields)
    assert (len(at_limit), len(over)) == (MAX_BODY, MAX_BODY + 1)
    return {"at_limit": at_limit, "over": over}


class TestTightLimits:
    def test_info_reports_the_limits(self, tight: httpx.Client) -> None:
        limits = tight.post("/info").json()["limits"]
        assert (limits["max_body_bytes"], limits["max_pixels"]) == (MAX_BODY, MAX_PIXELS)

    def test_body_size_with_content_length(self, tight: httpx.Client, bodies: dict[str, bytes]) -> None:
        headers = multipart(b"")[1]
        at_limit = tight.post("/segment", content=bodies["at_limit"], headers=headers)
        assert at_limit.request.headers["content-length"] == str(MAX_BODY)
        assert label_shape(at_limit) == (250, 250)
        over = tight.post("/segment", content=bodies["over"], headers=headers)
        assert over.request.headers["content-length"] == str(MAX_BODY + 1)
        assert_error(over, 413, "payload_too_large")
        assert_ready(tight)

    def test_body_size_when_streamed_without_content_length(
        self, tight: httpx.Client, bodies: dict[str, bytes]
    ) -> None:
        headers = multipart(b"")[1]
        at_limit = tight.post("/segment", content=chunks(bodies["at_limit"]), headers=headers)
        assert "content-length" not in at_limit.request.headers
        assert at_limit.request.headers["transfer-encoding"] == "chunked"
        assert label_shape(at_limit) == (250, 250)
        over = tight.post("/segment", content=chunks(bodies["over"]), headers=headers)
        assert_error(over, 413, "payload_too_large")
        huge_body = multipart(png_bytes(noise_image(250, 250)) + bytes(2_000_000))[0]
        start = time.monotonic()
        try:
            huge = tight.post("/segment", content=chunks(huge_body, 65_536), headers=headers)
        except httpx.TransportError:  # the server may close while the client still sends: refused
            pass
        else:
            assert_error(huge, 413, "payload_too_large")
        assert time.monotonic() - start < 30
        assert_ready(tight)

    @pytest.mark.parametrize(
        ("width", "height", "allowed"),
        [(400, 250, True), (9091, 11, False), (330, 300, True), (337, 300, False)],
        ids=["100000px", "100001px", "99000px", "101100px"],
    )
    def test_pixel_count(self, tight: httpx.Client, width: int, height: int, allowed: bool) -> None:
        for image in (solid_png(width, height), encode(Image.new("RGB", (width, height), (9, 9, 9)), "JPEG")):
            response = post_image(tight, image, output="label_png")
            if allowed:
                assert label_shape(response) == (height, width)
            else:
                error = assert_error(response, 413, "image_too_large")
                assert str(width * height) in error["message"]
        assert_ready(tight)

    def test_pixel_count_is_checked_from_the_header_before_decoding(self, tight: httpx.Client) -> None:
        # Same broken pixel data: within the limit it is decoded (422), over it is refused first (413).
        assert_error(post_image(tight, png_declaring(400, 250)), 422, "invalid_image")
        assert_error(post_image(tight, png_declaring(400, 251)), 413, "image_too_large")
        assert_error(post_image(tight, png_declaring(60_000, 60_000)), 413, "image_too_large")
        assert_ready(tight)

    def test_wrong_body_kind_and_method_get_the_json_error_shape(self, tight: httpx.Client) -> None:
        image = png_bytes(noise_image(40, 30, seed=4))
        raw = tight.post("/segment", content=image, headers={"content-type": "image/png"})
        error = assert_error(raw, 415, "unsupported_media_type")
        assert "multipart/form-data" in error["message"] and "'image'" in error["message"]
        as_json = tight.post("/caption", json={"image": "street.png"})
        assert_error(as_json, 415, "unsupported_media_type")
        assert_error(tight.get("/segment"), 405, "method_not_allowed")
        big = assert_error(post_image(tight, png_declaring(60_000, 60_000)), 413, "image_too_large")
        assert f"the limit is {MAX_PIXELS} pixels (SEMIDAVIL_MAX_PIXELS)" in big["message"]
        assert "178956970" not in big["message"]
        # this server has no captioner: /caption says so (503), /model tells why
        no_caption = tight.post("/caption", files={"image": ("a.png", image, "image/png")})
        assert "no captioner configured" in assert_error(no_caption, 503, "unavailable")["message"]
        assert tight.get("/model").json()["captioner_status"]["available"] is False
        # this server runs with SEMIDAVIL_UI=off: no demo, and /ui is a JSON 404, not a Gradio page
        assert "SEMIDAVIL_UI=off" in assert_error(tight.get("/ui/"), 404, "not_found")["message"]
        assert_ready(tight)

    def test_concurrency_limit_refuses_while_the_slot_is_held(self, tight: httpx.Client) -> None:
        body, headers = multipart(solid_png(64, 48), {"output": "label_png"})
        held: dict[str, httpx.Response] = {}

        def hold() -> None:  # the only slot, held by an upload that takes ~3 s
            held["response"] = tight.post("/segment", content=slow_stream(body, 3.0), headers=headers)

        holder = threading.Thread(target=hold)
        holder.start()
        time.sleep(0.6)
        with ThreadPoolExecutor(5) as pool:
            refused = list(pool.map(lambda _: post_image(tight, solid_png(64, 48)), range(5), timeout=60))
        assert_ready(tight)  # health checks bypass the limit
        holder.join(timeout=60)
        assert not holder.is_alive()
        for response in refused:
            assert_error(response, 429, "over_capacity")
        assert label_shape(held["response"]) == (48, 64)
        assert label_shape(post_image(tight, solid_png(64, 48), output="label_png")) == (48, 64)

    def test_concurrent_burst_gets_some_served_and_some_refused(self, tight: httpx.Client) -> None:
        image = png_bytes(noise_image(300, 200, seed=5))
        statuses: list[int] = []
        for _ in range(5):  # bounded: stop once both outcomes were seen
            responses = burst(tight, image, 6)
            for response in responses:
                assert response.status_code in (200, 429), response.text
                if response.status_code == 429:
                    assert_error(response, 429, "over_capacity")
            statuses += [r.status_code for r in responses]
            if 200 in statuses and 429 in statuses:
                break
        assert 200 in statuses and 429 in statuses, statuses
        assert_ready(tight)

    def test_no_request_got_a_500(self, tight: httpx.Client) -> None:
        assert_no_500(tight, "200", "413", "422", "429")


def test_an_upload_stays_in_memory_with_its_base_name_only() -> None:
    """serving/upload.py: the bytes of the multipart part, no temporary file; the client's file name
    is kept as a name (base name only), never used as a path; anything but a file part is refused."""
    import io

    from starlette.datastructures import UploadFile

    from serving.upload import Upload

    part = UploadFile(io.BytesIO(b"\x89PNG fake"), filename="../../etc/passwd")
    part.file.read(3)  # the parser may leave the position anywhere: the whole part is read
    upload = Upload.validate(part)
    assert upload.data == b"\x89PNG fake" and str(upload) == "passwd" and not upload.is_absolute()
    assert Upload.validate(b"abc").data == b"abc" and str(Upload.validate(b"abc")) == "upload"
    assert Upload.validate(upload) is upload
    with pytest.raises(ValueError, match="multipart file part"):
        Upload.validate("http://example.com/x.png")
