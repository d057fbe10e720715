"""serving.encode: PNG label maps, Cityscapes label ids, palette and overlay PNGs, base64."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from model.class_sets import (
    CITYSCAPES_PALETTE,
    SYNTHIA16_TRAIN_IDS,
    TRAIN_ID_TO_LABEL_ID,
    custom_class_set,
    get_class_set,
    label_id_lut,
)
from serving.encode import (
    color_png,
    from_base64,
    label_png,
    labelid_png,
    overlay_array,
    overlay_png,
    png_data_uri,
    to_base64,
)
from serving.errors import InvalidParameter


def read_png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture
def labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    out = rng.integers(0, 19, (37, 53), dtype=np.uint8)
    out[0, :5] = 255  # ignore pixels survive too
    return out


def test_label_png_round_trip_is_exact(labels):
    img = read_png(label_png(labels))
    assert img.mode == "L" and img.size == (53, 37)
    np.testing.assert_array_equal(np.array(img), labels)


def test_labelid_png_maps_train_ids_to_cityscapes_label_ids(labels):
    img = read_png(labelid_png(labels, get_class_set("cityscapes")))
    label_ids = np.array(img)
    valid = labels != 255
    np.testing.assert_array_equal(label_ids[valid], np.array(TRAIN_ID_TO_LABEL_ID)[labels[valid]])
    assert (label_ids[~valid] == 0).all(), "ignore becomes label id 0 (unlabeled)"
    np.testing.assert_array_equal(label_id_lut()[label_ids][valid], labels[valid])  # and back


def test_labelid_png_for_synthia16_uses_its_train_ids():
    labels = np.arange(16, dtype=np.uint8)[None].repeat(3, 0)
    label_ids = np.array(read_png(labelid_png(labels, get_class_set("synthia16"))))
    expected = [TRAIN_ID_TO_LABEL_ID[t] for t in SYNTHIA16_TRAIN_IDS]
    np.testing.assert_array_equal(label_ids[0], expected)
    np.testing.assert_array_equal(label_id_lut()[label_ids[0]], SYNTHIA16_TRAIN_IDS)


def test_labelid_png_for_custom_classes_is_422(labels):
    with pytest.raises(InvalidParameter) as err:
        labelid_png(labels % 3, custom_class_set(["sky", "road", "car"]))
    assert err.value.status == 422


def test_color_png_uses_the_palette(labels):
    img = read_png(color_png(labels, CITYSCAPES_PALETTE))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.array(img), labels)
    rgb = np.array(img.convert("RGB"))
    valid = labels != 255
    np.testing.assert_array_equal(rgb[valid], np.array(CITYSCAPES_PALETTE, dtype=np.uint8)[labels[valid]])
    assert (rgb[~valid] == 0).all()


def test_overlay_has_input_size_and_blends(labels):
    rgb = np.full((37, 53, 3), 200, dtype=np.uint8)
    img = read_png(overlay_png(rgb, labels, CITYSCAPES_PALETTE, alpha=0.5))
    assert img.mode == "RGB" and img.size == (53, 37)
    out = np.array(img).astype(int)
    colour = np.array(CITYSCAPES_PALETTE[int(labels[5, 5])])
    np.testing.assert_allclose(out[5, 5], 0.5 * 200 + 0.5 * colour, atol=1)
    np.testing.assert_array_equal(overlay_array(rgb, labels, CITYSCAPES_PALETTE, 0.0), rgb)
    with pytest.raises(InvalidParameter):
        overlay_array(rgb, labels, CITYSCAPES_PALETTE, 1.5)
    with pytest.raises(ValueError):
        overlay_array(rgb[:10], labels, CITYSCAPES_PALETTE)


def test_base64_helpers(labels):
    png = label_png(labels)
    assert from_base64(to_base64(png)) == png
    assert png_data_uri(png).startswith("data:image/png;base64,iVBOR")
    with pytest.raises(InvalidParameter):
        from_base64("not base64!!")
