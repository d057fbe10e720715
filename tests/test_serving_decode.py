"""serving.decode: formats, limits checked before decoding, broken data, EXIF, mode conversion."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from serving.decode import Limits, decode_array, decode_image, read_limited, sniff_format
from serving.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, ServingError, UnsupportedMediaType


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=-1)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (valid CRC) declares width x height RGB, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("fmt", "lossless"), [("PNG", True), ("JPEG", False), ("WEBP", True)])
def test_allowed_formats_decode_to_rgb(fmt, lossless):
    rgb = gradient()
    kwargs = {"lossless": True} if fmt == "WEBP" else {"quality": 95} if fmt == "JPEG" else {}
    out = decode_image(encode(Image.fromarray(rgb), fmt, **kwargs))
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (48, 64, 3)
    assert (out.format, out.width, out.height, out.original_mode) == (fmt, 64, 48, "RGB")
    assert out.rgb.flags.writeable and out.rgb.flags.c_contiguous
    diff = np.abs(out.rgb.astype(int) - rgb.astype(int)).max()
    assert diff == 0 if lossless else diff < 12


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_formats_off_the_allow_list_are_415(fmt):
    data = encode(Image.fromarray(gradient()), fmt)
    with pytest.raises(UnsupportedMediaType) as err:
        decode_image(data)
    assert err.value.status == 415 and err.value.code == "unsupported_media_type"


@pytest.mark.parametrize(
    "data",
    [
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        b"<!DOCTYPE html><html><body><img src=x></body></html>",
        b"just some text, not an image",
        b"\x00\x01\x02\x03" * 10,
    ],
)
def test_non_images_are_415(data):
    with pytest.raises(UnsupportedMediaType):
        decode_image(data)


def test_empty_body_is_422():
    with pytest.raises(InvalidImage) as err:
        decode_image(b"")
    assert err.value.status == 422 and err.value.code == "invalid_image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_data_is_422(fmt):
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # incompressible: truncation hits pixels
    data = encode(Image.fromarray(noisy), fmt)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_data_is_422():
    data = bytearray(encode(Image.fromarray(gradient()), "PNG"))
    data[60:80] = b"\xff" * 20  # inside the IDAT stream
    with pytest.raises(InvalidImage):
        decode_image(bytes(data))


def test_signature_only_png_is_422_not_415():
    with pytest.raises(InvalidImage):
        decode_image(b"\x89PNG\r\n\x1a\n")


def test_png_claiming_50000_squared_pixels_is_refused_before_decoding():
    data = png_header_only(50_000, 50_000)
    assert len(data) < 200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as err:
        decode_image(data)
    elapsed = time.perf_counter() - start
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert err.value.status == 413 and err.value.code == "image_too_large"
    assert "2500000000 pixels" in err.value.message  # PIL's own bomb check fires first here
    # one limit in the message, ours, with its setting's name (not PIL's 2x MAX_IMAGE_PIXELS as well)
    assert "the limit is 25000000 pixels (SEMIDAVIL_MAX_PIXELS)" in err.value.message
    assert "178956970" not in err.value.message and "could be decompression bomb" not in err.value.message
    assert elapsed < 0.5, f"took {elapsed:.3f} s"
    assert grown_kib < 50_000, f"peak RSS grew by {grown_kib} KiB"


def test_header_declaring_too_many_pixels_for_our_limit_is_413_before_decoding():
    limits = Limits(max_pixels=1_000_000)
    with pytest.raises(ImageTooLarge) as err:
        decode_image(png_header_only(2000, 1000), limits)  # tiny IDAT: decoding would fail with 422
    assert "2000x1000" in err.value.message


def test_pixel_limit_just_below_and_just_above():
    limits = Limits(max_pixels=100 * 100)
    ok = decode_image(encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG"), limits)
    assert ok.rgb.shape == (100, 100, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(encode(Image.new("RGB", (101, 100)), "PNG"), limits)
    with pytest.raises(ImageTooLarge):
        decode_image(encode(Image.new("RGB", (100, 101)), "PNG"), limits)


def test_side_limit():
    limits = Limits(max_side=64)
    assert decode_image(encode(Image.new("RGB", (64, 8)), "PNG"), limits).width == 64
    with pytest.raises(ImageTooLarge):
        decode_image(encode(Image.new("RGB", (65, 8)), "PNG"), limits)


def test_body_size_limit_is_413_and_read_limited_stops_early():
    data = encode(Image.fromarray(gradient()), "PNG")
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(data, Limits(max_body_bytes=len(data) - 1))
    assert err.value.status == 413 and err.value.code == "payload_too_large"
    assert decode_image(data, Limits(max_body_bytes=len(data))).width == 64

    class Endless(io.RawIOBase):
        read_calls = 0

        def read(self, size=-1):
            self.read_calls += 1
            assert size != -1, "must never read without a bound"
            return b"x" * size

    with pytest.raises(PayloadTooLarge):
        read_limited(Endless(), Limits(max_body_bytes=1000))
    assert read_limited(io.BytesIO(b"abc"), Limits(max_body_bytes=3)) == b"abc"


def test_exif_orientation_6_is_applied():
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red
    rgb[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = decode_image(encode(Image.fromarray(rgb), "JPEG", quality=95, exif=exif.tobytes()))
    assert out.rgb.shape == (40, 20, 3) and (out.width, out.height) == (20, 40)
    top, bottom = out.rgb[:15].reshape(-1, 3).mean(0), out.rgb[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60, "red (the left side) must end up on top"
    assert bottom[2] > 200 and bottom[0] < 60


def test_sixteen_bit_grey_png_is_scaled_not_clipped():
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(4, 0)
    img = Image.fromarray(values)
    assert img.mode.startswith("I;16")
    out = decode_image(encode(img, "PNG"))
    assert out.original_mode.startswith("I;16")
    np.testing.assert_array_equal(out.rgb[0, :, 0], [0, 1, 128, 255])
    assert (out.rgb[..., 0] == out.rgb[..., 1]).all() and (out.rgb[..., 1] == out.rgb[..., 2]).all()


def test_rgba_is_composited_on_black():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (200, 100, 50)
    rgba[:, :2, 3] = 255
    rgba[:, 2:, 3] = 0
    rgba[0, 3, 3] = 128
    out = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert out.original_mode == "RGBA"
    np.testing.assert_array_equal(out.rgb[1, 0], (200, 100, 50))
    np.testing.assert_array_equal(out.rgb[1, 3], (0, 0, 0))
    np.testing.assert_array_equal(out.rgb[0, 3], (100, 50, 25))


def test_palette_grey_la_one_bit_and_cmyk_become_rgb():
    p = Image.new("P", (6, 4))
    p.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    p.putpixel((1, 1), 1)
    out = decode_image(encode(p, "PNG"))
    assert out.original_mode == "P"
    np.testing.assert_array_equal(out.rgb[0, 0], (10, 20, 30))
    np.testing.assert_array_equal(out.rgb[1, 1], (200, 150, 100))

    grey = decode_image(encode(Image.new("L", (5, 3), 77), "PNG"))
    assert grey.original_mode == "L" and (grey.rgb == 77).all()

    la = decode_image(encode(Image.new("LA", (5, 3), (200, 255)), "PNG"))
    assert la.original_mode == "LA" and (la.rgb == 200).all()

    one = Image.new("1", (8, 2), 0)
    one.putpixel((3, 1), 1)
    bits = decode_image(encode(one, "PNG"))
    assert bits.original_mode == "1"
    assert bits.rgb[1, 3].tolist() == [255, 255, 255] and bits.rgb[0, 0].tolist() == [0, 0, 0]

    cmyk = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100))
    assert cmyk.original_mode == "CMYK" and cmyk.rgb.shape == (8, 8, 3)
    red = cmyk.rgb.reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def _frames(colours):
    return [Image.new("RGB", (16, 12), c) for c in colours]


def test_animated_gif_gives_first_frame_when_allowed():
    frames = _frames([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with pytest.raises(UnsupportedMediaType):
        decode_image(data)
    out = decode_image(data, Limits(allowed_formats=("PNG", "GIF")))
    assert out.format == "GIF" and out.rgb.shape == (12, 16, 3)
    assert out.rgb[..., 0].min() > 200 and out.rgb[..., 1].max() < 50


def test_animated_webp_gives_first_frame():
    frames = _frames([(0, 0, 255), (255, 0, 0)])
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    with Image.open(io.BytesIO(data)) as img:
        assert getattr(img, "n_frames", 1) == 2
    out = decode_image(data)
    assert out.rgb[..., 2].min() > 200 and out.rgb[..., 0].max() < 50


def test_sniffing_and_error_payload():
    assert sniff_format(encode(Image.new("RGB", (2, 2)), "PNG")) == "PNG"
    assert sniff_format(encode(Image.new("RGB", (2, 2)), "JPEG")) == "JPEG"
    assert sniff_format(encode(Image.new("RGB", (2, 2)), "WEBP")) == "WEBP"
    assert sniff_format(b"<svg") is None
    err = UnsupportedMediaType("nope")
    assert isinstance(err, ServingError)
    assert err.to_dict() == {"error": {"status": 415, "code": "unsupported_media_type", "message": "nope"}}


def test_decode_array_checks_dtype_shape_and_limits():
    assert decode_array(np.zeros((4, 5), np.uint8)).rgb.shape == (4, 5, 3)
    rgba = np.full((2, 2, 4), 255, np.uint8)
    rgba[0, 0, 3] = 0
    out = decode_array(rgba)
    assert out.rgb[0, 0].tolist() == [0, 0, 0] and out.rgb[1, 1].tolist() == [255, 255, 255]
    with pytest.raises(InvalidImage):
        decode_array(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(ImageTooLarge):
        decode_array(np.zeros((11, 10, 3), np.uint8), Limits(max_pixels=100))


# ---------------------------------------------------------------- the fast PNG path (serving.png_fast)
def _pil_reference(data: bytes) -> np.ndarray:
    """What PIL alone decodes (to_rgb_array's conversions), for comparison with the fast path."""
    from serving.decode import to_rgb_array

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return to_rgb_array(img)


@pytest.mark.parametrize(
    ("mode", "options"),
    [("RGB", {}), ("RGB", {"optimize": True}), ("RGBA", {}), ("L", {}), ("RGB", {"compress_level": 0})],
)
def test_fast_png_path_gives_pils_pixels(mode, options):
    from serving import png_fast

    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (33, 47, 4), dtype=np.uint8)
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    data = encode(img, "PNG", **options)
    assert png_fast.fast_mode(data) == mode  # the fast path is taken
    out = decode_image(data)
    assert out.original_mode == mode and out.format == "PNG"
    np.testing.assert_array_equal(out.rgb, _pil_reference(data))


@pytest.mark.parametrize("kind", ["palette", "16-bit", "transparent colour", "exif"])
def test_pngs_the_fast_path_leaves_to_pil(kind):
    from serving import png_fast

    rgb = gradient()
    if kind == "palette":
        data = encode(Image.fromarray(rgb).convert("P"), "PNG")
    elif kind == "16-bit":
        data = encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG")
    elif kind == "transparent colour":
        data = encode(Image.fromarray(rgb), "PNG", transparency=(0, 0, 128))
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(Image.fromarray(rgb), "PNG", exif=exif.tobytes())
    assert png_fast.fast_mode(data) is None
    out = decode_image(data)
    expected = _pil_reference(data)
    if kind == "exif":  # PIL's path applies the orientation
        expected = np.ascontiguousarray(np.rot90(expected, k=-1))
    np.testing.assert_array_equal(out.rgb, expected)


def test_fast_png_path_names_the_chunk_of_a_flipped_idat_byte():
    """The chunk walk checks every CRC before libpng sees the data, and names the chunk."""
    rng = np.random.default_rng(2)
    data = bytearray(encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 200] ^= 0xFF
    with pytest.raises(InvalidImage, match="CRC error in the IDAT chunk"):
        decode_image(bytes(data))


def test_fast_png_path_refuses_a_cut_chunk():
    data = encode(Image.fromarray(gradient()), "PNG")
    with pytest.raises(InvalidImage, match="IDAT chunk cut short"):
        decode_image(data[: data.index(b"IDAT") + 20])


def test_fast_png_path_refuses_a_corrupt_deflate_stream_under_a_valid_crc():
    """A flipped byte whose chunk CRC was recomputed passes the chunk walk; libpng refuses it (422)."""
    import struct
    import zlib

    from serving import png_fast

    rng = np.random.default_rng(3)
    data = bytearray(encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "PNG"))
    idat = data.index(b"IDAT")
    (length,) = struct.unpack_from(">I", data, idat - 4)
    data[idat + 4 + 50] ^= 0xFF
    struct.pack_into(">I", data, idat + 4 + length, zlib.crc32(bytes(data[idat : idat + 4 + length])))
    assert png_fast.fast_mode(bytes(data)) == "RGB"  # the chunk walk accepts it
    with pytest.raises(InvalidImage, match="libpng could not decode"):
        decode_image(bytes(data))
