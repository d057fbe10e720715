"""Property-based checks (hypothesis) of decoding and parameter parsing, in-process.

Whatever the bytes or the text, decoding and parsing either succeed with a well-formed result or
raise one of the documented client errors (413, 415, 422); anything else would be a 500.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from model.class_sets import ClassSet
from serving.decode import DecodedImage, Limits, decode_image
from serving.errors import ImageTooLarge, InvalidImage, InvalidParameter, ServingError
from serving.params import form_text, parse_alpha, parse_bool, parse_classes, parse_output
from serving.predictor import Predictor

# PIL warns about huge declared sizes while opening the header; the limits then refuse them.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
LIMITS = Limits(max_body_bytes=200_000, max_pixels=40_000, max_side=1_000)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ("RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK")
FORMATS = ("PNG", "JPEG", "WEBP")


def _encode(array: np.ndarray, mode: str, fmt: str) -> bytes:
    img = (
        Image.fromarray(array).convert(mode)
        if mode != "I;16"
        else Image.fromarray(array[..., 0].astype(np.uint16))
    )
    if fmt == "JPEG" and mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    if fmt == "PNG" and mode == "CMYK":
        img = img.convert("RGB")
    if fmt == "WEBP" and mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _valid_images() -> st.SearchStrategy[tuple[bytes, int, int]]:
    """(encoded bytes, width, height) of small random images in every mode and format."""

    @st.composite
    def build(draw: Any) -> tuple[bytes, int, int]:
        width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        seed = draw(st.integers(0, 2**16))
        array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        return _encode(array, draw(st.sampled_from(MODES)), draw(st.sampled_from(FORMATS))), width, height

    return build()


def _assert_documented(err: ServingError) -> None:
    assert err.status in (413, 415, 422), repr(err)
    assert err.code in ("payload_too_large", "image_too_large", "unsupported_media_type", "invalid_image")
    assert err.message


def _decode_or_documented_error(data: bytes) -> DecodedImage | None:
    try:
        decoded = decode_image(data, LIMITS)
    except ServingError as err:
        _assert_documented(err)
        return None
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.ndim == 3 and decoded.rgb.shape[2] == 3
    assert decoded.rgb.shape[0] * decoded.rgb.shape[1] <= LIMITS.max_pixels
    return decoded


# ------------------------------------------------------------------------------------------------
# Decoding


@FAST
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_decode_or_get_a_documented_error(data: bytes) -> None:
    _decode_or_documented_error(data)


@FAST
@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP", b"GIF89a", b"BM"]),
    st.binary(max_size=1_000),
)
def test_bytes_behind_a_valid_magic_decode_or_get_a_documented_error(magic: bytes, rest: bytes) -> None:
    _decode_or_documented_error(magic + rest)


@FAST
@given(_valid_images())
def test_valid_images_of_every_mode_decode_at_their_size(image: tuple[bytes, int, int]) -> None:
    data, width, height = image
    decoded = _decode_or_documented_error(data)
    assert decoded is not None
    assert (decoded.width, decoded.height) == (width, height)


@FAST
@given(_valid_images(), st.data())
def test_mutated_images_decode_or_get_a_documented_error(
    image: tuple[bytes, int, int], data: st.DataObject
) -> None:
    raw = bytearray(image[0])
    for _ in range(data.draw(st.integers(0, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    _decode_or_documented_error(bytes(raw[:cut]))


@FAST
@given(st.integers(1, 70_000), st.integers(1, 70_000))
def test_declared_size_over_the_limits_is_refused_before_decoding(width: int, height: int) -> None:
    """A header declaring width x height with no pixel data: 413 when over a limit, else 422."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00")  # 1 byte: too little for any image
    idat_chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    data = b"\x89PNG\r\n\x1a\n" + chunk + idat_chunk
    over = width * height > LIMITS.max_pixels or max(width, height) > LIMITS.max_side
    with pytest.raises(ImageTooLarge if over else InvalidImage):
        decode_image(data, LIMITS)


# ------------------------------------------------------------------------------------------------
# Parameters


@FAST
@given(st.one_of(st.none(), st.text(max_size=50)))
def test_output_is_known_or_invalid_parameter(value: str | None) -> None:
    try:
        assert parse_output(value) in ("json", "label_png", "labelid_png", "overlay_png", "color_png")
    except InvalidParameter as err:
        assert err.status == 422


@FAST
@given(st.one_of(st.none(), st.text(max_size=30), st.floats(allow_nan=True), st.integers()))
def test_alpha_is_in_0_1_or_invalid_parameter(value: Any) -> None:
    try:
        alpha = parse_alpha(value)
    except InvalidParameter:
        return
    assert 0.0 <= alpha <= 1.0


@FAST
@given(st.one_of(st.none(), st.booleans(), st.text(max_size=20)))
def test_booleans_parse_or_invalid_parameter(value: Any) -> None:
    with contextlib.suppress(InvalidParameter):
        assert parse_bool(value, "use_captioner") in (True, False)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@FAST
@given(_JSON)
def test_form_text_gives_text_back_for_every_json_value(value: Any) -> None:
    assert form_text(value) is None or isinstance(form_text(value), str)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, backend="eager-fp32", captioner="none")


@FAST
@given(
    st.one_of(
        st.none(),
        st.text(max_size=300),
        st.lists(st.text(max_size=30), max_size=70).map(lambda xs: ", ".join(xs)),
        st.lists(st.one_of(st.text(max_size=30), st.integers()), max_size=70).map(repr),
        st.lists(st.text(max_size=30), max_size=70).map(json.dumps),
    )
)
def test_class_lists_resolve_or_invalid_parameter(predictor: Predictor, value: str | None) -> None:
    try:
        class_set = predictor.resolve_classes(parse_classes(form_text(value)))
    except InvalidParameter as err:
        assert err.status == 422 and err.message
        return
    assert isinstance(class_set, ClassSet) and 2 <= len(class_set) <= 64
