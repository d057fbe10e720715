"""The bad-input table of the reliability suite: one request per case, its status and error code.

Shared by tests/test_reliability_inputs.py (asserts every case against the real server) and
reliability/run.py (runs the table and writes it into RELIABILITY.md). The cases run against a
server with SERVER_ENV (tight body and pixel limits, so that "just under / just over" each limit
stays small and fast); every other setting is the default.

    for case in CASES:
        response = case.request().send(client)
        problems = case.problems(response)   # [] when status, error shape and check hold

A refusal must have the service's error shape {"error": {"status", "code", "message"}}; an
accepted image is asked for `label_png`, whose size is checked against the input (EXIF rotation
applied). No case may get a 500, and the server must be ready after each one.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from PIL import Image

MAX_BODY = 300_000
MAX_PIXELS = 200_000
MAX_SIDE = 16_384  # serving.decode.Limits default (not an environment setting)
MAX_CAPTION = 2_000  # serving.predictor.MAX_CAPTION_CHARS
MAX_CLASSES = 64  # model.class_sets.MAX_CUSTOM_CLASSES
MAX_CLASSES_FIELD = 20_000  # serving.params.MAX_CLASSES_FIELD_CHARS
SERVER_ENV = {"SEMIDAVIL_MAX_BODY_BYTES": str(MAX_BODY), "SEMIDAVIL_MAX_PIXELS": str(MAX_PIXELS)}
BOUNDARY = "semidavil-reliability"
REQUEST_TIMEOUT_S = 60.0


# ------------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Request:
    """One HTTP request: either a hand-built multipart body (exact bytes) or httpx arguments."""

    path: str = "/segment"
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def send(self, client: httpx.Client, timeout_s: float = REQUEST_TIMEOUT_S) -> httpx.Response:
        return client.post(
            self.path, content=self.content or b"", headers=dict(self.headers), timeout=timeout_s
        )


def _part(name: str, value: bytes, filename: bytes | None = None, media_type: str | None = None) -> bytes:
    disposition = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    head = disposition + b"\r\n"
    if media_type is not None:
        head += f"Content-Type: {media_type}\r\n".encode()
    return b"--" + BOUNDARY.encode() + b"\r\n" + head + b"\r\n" + value + b"\r\n"


def multipart_request(
    image: bytes | None,
    fields: Mapping[str, str | bytes] | None = None,
    *,
    path: str = "/segment",
    filename: bytes = b"image.png",
    media_type: str = "image/png",
) -> Request:
    """A multipart/form-data request built by hand: text fields (str or raw bytes), then the image."""
    parts = [_part(k, v.encode() if isinstance(v, str) else v) for k, v in (fields or {}).items()]
    if image is not None:
        parts.append(_part("image", image, filename, media_type))
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return Request(path, body, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"})


def multipart_overhead(fields: Mapping[str, str] | None = None) -> int:
    """Bytes of a `multipart_request` body that are not the image."""
    return len(multipart_request(b"", fields).content or b"")


# ------------------------------------------------------------------------------------------------
# Images


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Uniform RGB noise (incompressible: a PNG of about 3 * width * height bytes)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def solid(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 60, 200))


def png(img: Image.Image, compress_level: int = 1) -> bytes:
    return encode(img, "PNG", compress_level=compress_level)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with far too little pixel data (never decodable)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def png_bad_zlib() -> bytes:
    """A 64x48 PNG whose IDAT is not a zlib stream, with correct chunk CRCs (only zlib can object)."""
    ihdr = struct.pack(">IIBBBBB", 64, 48, 8, 2, 0, 0, 0)
    garbage = bytes(range(256)) * 4
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", garbage) + _chunk(b"IEND", b"")


def pad_png(data: bytes, size: int) -> bytes:
    """A valid PNG of exactly `size` bytes: `data` with a tEXt chunk of filler after IHDR."""
    extra = size - len(data)
    if extra < 20:
        raise ValueError(f"cannot pad a {len(data)}-byte PNG to {size} bytes")
    filler = _chunk(b"tEXt", b"Comment\x00" + b"x" * (extra - 20))
    return data[:33] + filler + data[33:]


def sixteen_bit_grey() -> bytes:
    ramp = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    return png(Image.fromarray(ramp))


def palette_png() -> bytes:
    return png(noise(64, 48).quantize(colors=16))


def rgba_png() -> bytes:
    rgba = noise(64, 48).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 48)))
    return png(rgba)


def exif_rotated_jpeg() -> bytes:
    """A 64x48 JPEG whose EXIF orientation 6 says: rotate 90 degrees, i.e. show it as 48x64."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(noise(64, 48), "JPEG", exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def body_of_size(total: int) -> Request:
    """A /segment request whose multipart body is exactly `total` bytes (a 250x250 noise PNG, padded)."""
    fields = {"output": "label_png"}
    image = pad_png(png(noise(250, 250, seed=3), compress_level=0), total - multipart_overhead(fields))
    request = multipart_request(image, fields)
    assert len(request.content or b"") == total
    return request


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>'
HTML = b"<!DOCTYPE html><html><body><img src='x.png'></body></html>"


# ------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Case:
    """A request, the status and error code it must get, and for a 200 either the label map size
    (H, W) of a `label_png` answer or fields that a JSON answer must have (`expect`)."""

    name: str
    what: str
    request: Callable[[], Request]
    status: int
    code: str | None = None
    size: tuple[int, int] | None = None
    expect: Mapping[str, Any] | None = None

    def problems(self, response: httpx.Response) -> list[str]:
        """What is wrong with `response` for this case ([] when it is as documented)."""
        found: list[str] = []
        if response.status_code != self.status:
            found.append(f"status {response.status_code}, expected {self.status}: {response.text[:300]}")
        elif self.status == 200 and self.expect is not None:
            found += _json_problems(response, self.expect)
        elif self.status == 200:
            found += _label_problems(response, self.size)
        else:
            found += error_shape_problems(response, self.status, self.code)
        return found


def error_shape_problems(response: httpx.Response, status: int, code: str | None) -> list[str]:
    """Problems with the JSON error contract {"error": {"status", "code", "message"}}."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return [f"content-type {response.headers.get('content-type')!r}, expected JSON"]
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return [f"not the error shape: {response.text[:300]}"]
    found = []
    if error.get("status") != status:
        found.append(f"error.status {error.get('status')!r} != {status}")
    if code is not None and error.get("code") != code:
        found.append(f"error.code {error.get('code')!r} != {code!r} ({error.get('message')})")
    if not isinstance(error.get("message"), str) or not error["message"]:
        found.append("no error message")
    return found


def _json_problems(response: httpx.Response, expect: Mapping[str, Any]) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [f"not JSON: {response.text[:200]}"]
    return [
        f"{key}: {body.get(key)!r}, expected {value!r}"
        for key, value in expect.items()
        if body.get(key) != value
    ]


def _label_problems(response: httpx.Response, size: tuple[int, int] | None) -> list[str]:
    if not response.headers.get("content-type", "").startswith("image/png"):
        return [f"content-type {response.headers.get('content-type')!r}, expected image/png"]
    with Image.open(io.BytesIO(response.content), formats=["PNG"]) as img:
        shape = (img.height, img.width)
    return [] if size is None or shape == size else [f"label map {shape}, expected {size}"]


def _ok(image: bytes, **fields: str) -> Callable[[], Request]:
    return lambda: multipart_request(image, {"output": "label_png", **fields})


def _image(data: Callable[[], bytes], media_type: str = "image/png", **fields: str) -> Callable[[], Request]:
    return lambda: multipart_request(data(), fields, media_type=media_type)


def _with(**fields: str | bytes) -> Callable[[], Request]:
    return lambda: multipart_request(png(noise(64, 48)), fields)


# The table in sections; the shared images are built once.
_SMALL = png(noise(64, 48))
_JPEG = encode(noise(64, 48), "JPEG")
_MANY = ", ".join(f"class {i}" for i in range(MAX_CLASSES))


def _not_images() -> list[Case]:
    """Bodies that are not images."""
    return [
        Case("empty_body", "POST /segment with no body at all (not multipart)", lambda: Request(), 415,
             "unsupported_media_type"),
        Case("empty_image", "an image part of 0 bytes", _image(lambda: b""), 422, "invalid_image"),
        Case("non_image_bytes", "64 random bytes as the image", _image(lambda: bytes(range(7, 71))), 415,
             "unsupported_media_type"),
        Case("svg_as_image", "an SVG document sent as image/svg+xml", _image(lambda: SVG, "image/svg+xml"), 415,
             "unsupported_media_type"),
        Case("html_as_image", "an HTML page sent as image/png", _image(lambda: HTML), 415, "unsupported_media_type"),
    ]  # fmt: skip


def _broken_images() -> list[Case]:
    """Broken images."""
    return [
        Case("truncated_png", "the first half of a PNG", _image(lambda: _SMALL[: len(_SMALL) // 2]), 422,
             "invalid_image"),
        Case("truncated_jpeg", "the first half of a JPEG", _image(lambda: _JPEG[: len(_JPEG) // 2], "image/jpeg"),
             422, "invalid_image"),
        Case("corrupt_zlib", "a PNG whose IDAT is not zlib data (CRCs valid)", _image(png_bad_zlib), 422,
             "invalid_image"),
        Case("header_50000x50000", "a PNG header declaring 50000x50000 px (refused before decoding: the data "
             "is missing, so a decode would give 422)", _image(lambda: png_declaring(50_000, 50_000)), 413,
             "image_too_large"),
    ]  # fmt: skip


def _size_limits() -> list[Case]:
    """Every size limit, just under and just over."""
    return [
        Case("body_at_limit", f"multipart body of exactly {MAX_BODY} bytes", lambda: body_of_size(MAX_BODY), 200,
             size=(250, 250)),
        Case("body_over_limit", f"multipart body of {MAX_BODY + 1} bytes", lambda: body_of_size(MAX_BODY + 1), 413,
             "payload_too_large"),
        Case("pixels_at_limit", f"500x400 = {MAX_PIXELS} px", _ok(png(solid(500, 400))), 200,
             size=(400, 500)),
        Case("pixels_over_limit", f"500x401 = {MAX_PIXELS + 500} px", _ok(png(solid(500, 401))), 413,
             "image_too_large"),
        Case("side_at_limit", f"{MAX_SIDE}x1 px", _ok(png(solid(MAX_SIDE, 1))), 200,
             size=(1, MAX_SIDE)),
        Case("side_over_limit", f"{MAX_SIDE + 1}x1 px", _ok(png(solid(MAX_SIDE + 1, 1))), 413,
             "image_too_large"),
        Case("caption_at_limit", f"a caption of {MAX_CAPTION} characters", _ok(_SMALL, caption="a" *
             MAX_CAPTION), 200, size=(48, 64)),
        Case("caption_over_limit", f"a caption of {MAX_CAPTION + 1} characters", _with(caption="a" *
             (MAX_CAPTION + 1)), 422, "invalid_parameter"),
        Case("caption_100000", "a caption of 100000 characters", _with(caption="x" * 100_000), 422,
             "invalid_parameter"),
        Case("classes_at_limit", f"{MAX_CLASSES} custom classes", _ok(_SMALL, classes=_MANY), 200,
             size=(48, 64)),
        Case("classes_over_limit", f"{MAX_CLASSES + 1} custom classes (huge list)", _with(classes=_MANY + ", x"),
             422, "invalid_parameter"),
        Case("classes_field_too_long", f"a classes field of {MAX_CLASSES_FIELD + 1} characters",
             _with(classes="a" * (MAX_CLASSES_FIELD + 1)), 422, "invalid_parameter"),
    ]  # fmt: skip


def _unusual_images() -> list[Case]:
    """Unusual but valid images."""
    return [
        Case("one_by_one", "a 1x1 PNG", _ok(png(solid(1, 1))), 200, size=(1, 1)),
        Case("wide_10000x2", "a 10000x2 PNG", _ok(png(solid(10_000, 2))), 200, size=(2, 10_000)),
        Case("png_16bit_grey", "16-bit greyscale PNG (I;16)", _ok(sixteen_bit_grey()), 200,
             size=(48, 64)),
        Case("png_grey", "8-bit greyscale PNG (L)", _ok(png(noise(64, 48).convert("L"))), 200,
             size=(48, 64)),
        Case("png_palette", "palette PNG (P, 16 colours)", _ok(palette_png()), 200, size=(48, 64)),
        Case("png_rgba", "RGBA PNG with a gradient alpha", _ok(rgba_png()), 200, size=(48, 64)),
        Case("jpeg_cmyk", "CMYK JPEG", _ok(encode(noise(64, 48).convert("CMYK"), "JPEG")), 200,
             size=(48, 64)),
        Case("jpeg_exif_rotated", "64x48 JPEG with EXIF orientation 6 (shown as 48x64)",
             _ok(exif_rotated_jpeg()), 200, size=(64, 48)),
        Case("webp_animated", "animated WebP, 3 frames (the first is segmented)", _ok(animated("WEBP")),
             200, size=(48, 64)),
        Case("png_animated", "animated PNG (APNG), 3 frames (the first is segmented)", _ok(animated("PNG")),
             200, size=(48, 64)),
        Case("gif_animated", "animated GIF (GIF is not on the allow-list)", _image(lambda: animated("GIF"),
             "image/gif"), 415, "unsupported_media_type"),
    ]  # fmt: skip


def _content_types() -> list[Case]:
    """Wrong content types."""
    return [
        Case("png_labelled_text_plain", "a PNG whose part says text/plain (the bytes decide)",
             lambda: multipart_request(_SMALL, {"output": "label_png"}, media_type="text/plain"), 200,
             size=(48, 64)),
        Case("jpeg_labelled_png", "a JPEG whose part says image/png",
             lambda: multipart_request(_JPEG, {"output": "label_png"}, filename=b"x.png"), 200, size=(48, 64)),
        Case("raw_png_body", "the PNG as the whole body, Content-Type image/png (not multipart)",
             lambda: Request("/segment", _SMALL, {"content-type": "image/png"}), 415, "unsupported_media_type"),
        Case("form_urlencoded", "an urlencoded form instead of multipart",
             lambda: Request("/segment", b"image=abc&output=json",
                             {"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type"),
    ]  # fmt: skip


def _parameters() -> list[Case]:
    """Parameters."""
    return [
        Case("classes_empty_list", "classes = [] (empty custom list)", _with(classes="[]"), 422,
             "invalid_parameter"),
        Case("classes_unknown_set", "classes = mapillary (no such class set)", _with(classes="mapillary"), 422,
             "invalid_parameter"),
        Case("classes_path", "classes = ../../etc/passwd (never a file)", _with(classes="../../etc/passwd"), 422,
             "invalid_parameter"),
        Case("caption_not_utf8", "a caption of bytes ff fe fd (not UTF-8: read as Latin-1, used as given)",
             _with(caption=b"\xff\xfe\xfd"), 200,
             expect={"caption": {"text": "\xff\xfe\xfd", "source": "caller", "error": None}}),
        Case("classes_not_utf8", "classes 'caf\\xe9, road' in Latin-1 (not UTF-8: read as Latin-1)",
             _with(classes="caf\xe9, road".encode("latin-1")), 200, expect={"classes": ["caf\xe9", "road"]}),
        Case("filename_not_utf8", "an image part whose filename is not UTF-8 (the name is ignored)",
             lambda: multipart_request(_SMALL, {"output": "label_png"}, filename=b"\xff\xfe.png"), 200,
             size=(48, 64)),
        Case("output_unknown", "output = nope", _with(output="nope"), 422, "invalid_parameter"),
        Case("output_path", "output = ../../tmp/x.png (never a file)", _with(output="../../tmp/x.png"), 422,
             "invalid_parameter"),
        Case("output_case", "output = ' LABEL_PNG ' (case and spaces ignored)",
             _ok(_SMALL, output=" LABEL_PNG "), 200, size=(48, 64)),
        Case("alpha_nan", "alpha = nan", _with(output="overlay_png", alpha="nan"), 422, "invalid_parameter"),
        Case("alpha_inf", "alpha = inf", _with(output="overlay_png", alpha="inf"), 422, "invalid_parameter"),
    ]  # fmt: skip


def _caption_endpoint() -> list[Case]:
    """The caption endpoint."""
    return [
        Case("caption_endpoint_svg", "POST /caption with an SVG",
             lambda: multipart_request(SVG, path="/caption", media_type="image/svg+xml"), 415,
             "unsupported_media_type"),
        Case("caption_endpoint_truncated", "POST /caption with a truncated JPEG",
             lambda: multipart_request(_JPEG[:200], path="/caption", media_type="image/jpeg"), 422, "invalid_image"),
    ]  # fmt: skip


def _cases() -> list[Case]:
    return [
        case
        for section in (
            _not_images,
            _broken_images,
            _size_limits,
            _unusual_images,
            _content_types,
            _parameters,
            _caption_endpoint,
        )
        for case in section()
    ]


CASES: list[Case] = _cases()
CASE_NAMES: list[str] = [case.name for case in CASES]
assert len(set(CASE_NAMES)) == len(CASE_NAMES), "case names must be unique"


def run_case(client: httpx.Client, case: Case) -> dict[str, Any]:
    """Send one case, then GET /readyz: {name, status, expected, code, problems, ready, ms}."""
    import time

    start = time.perf_counter()
    try:
        response = case.request().send(client)
    except httpx.HTTPError as err:
        return {"name": case.name, "status": None, "code": None, "problems": [f"{type(err).__name__}: {err}"],
                "ready": _ready(client), "ms": (time.perf_counter() - start) * 1000}  # fmt: skip
    elapsed = (time.perf_counter() - start) * 1000
    problems = case.problems(response)
    ready = _ready(client)
    if not ready:
        problems.append("/readyz did not answer 200 afterwards")
    return {"name": case.name, "status": response.status_code, "code": _code(response), "problems": problems,
            "ready": ready, "ms": elapsed}  # fmt: skip


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz", timeout=REQUEST_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False
