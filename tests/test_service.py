"""The BentoML service over real HTTP: `bentoml serve` on loopback, called with BentoML's own
client and with plain multipart requests.

Every endpoint and output format; results equal the in-process predictor; concurrent requests
batched together keep their own results; bad input gets the documented JSON error (never a 500)
and the server stays ready. The limits (413, 429, 504) are in test_service_limits.py.

One server for the module: random-weight semidavil-tiny (no checkpoint), eager fp32 (so that the
in-process predictor runs the same backend and results can be compared exactly) and the tiny
random BLIP captioner from testkit/tiny_captioners.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bentoml
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from model.class_sets import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    SYNTHIA16_TRAIN_IDS,
    TRAIN_ID_TO_LABEL_ID,
    label_id_lut,
)
from serving.loading import DEFAULT_CHECKPOINT
from serving.predictor import Predictor
from testkit.tiny_captioners import save_tiny_captioner
from tests.server import (
    Server,
    assert_error,
    decode_png,
    encode,
    metric_total,
    noise_image,
    png_bytes,
    running_server,
)

# Raised inside BentoML's client (pathspec, pydantic), not by this project.
pytestmark = [
    pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The `__get_pydantic_core_schema__` method:DeprecationWarning"),
]
SCENE = Path("pix2pixHD/datasets/cityscapes/train_img/aachen_000000_000019_leftImg8bit.png")
CAPTION = "a city street with parked cars and trees"
CUSTOM = ["road", "sky|heaven", "car"]
# The server loads the embedded default checkpoint when it is there, else random tiny weights (flagged).
RANDOM_WEIGHTS = not DEFAULT_CHECKPOINT.is_file()
# A batched forward rounds differently from a batch of one; with random weights (near-ties
# everywhere) a few pixels flip. Measured: at most 0.004 % of the pixels; allowed: 0.1 %.
BATCH_AGREEMENT = 0.999
ERROR_TIMEOUT_S = 20.0


# ------------------------------------------------------------------------------------------------
# Fixtures: one server, one HTTP client, one BentoML client, the in-process reference


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("service")
    blip = save_tiny_captioner("blip", work / "tiny_blip")
    env = {"SEMIDAVIL_CAPTIONER": "blip", "SEMIDAVIL_CAPTIONER_MODEL": str(blip)}
    with running_server(work, env) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[bentoml.SyncHTTPClient]:
    with bentoml.SyncHTTPClient(server.url, timeout=120) as bento_client:
        yield bento_client


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The server runs one thread; so does the in-process reference, for bit-equal float sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_checkpoint(None, backend="eager-fp32", captioner="none")


@pytest.fixture(scope="module")
def scene_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / SCENE


@pytest.fixture(scope="module")
def scene_png(scene_path: Path) -> bytes:
    return scene_path.read_bytes()


@pytest.fixture(scope="module")
def scene_expected(predictor: Predictor, scene_png: bytes) -> np.ndarray:
    return predictor.predict(scene_png, caption=CAPTION).label_map


@pytest.fixture(scope="module")
def small_png(scene_path: Path) -> bytes:
    """The scene at 320x160 (for outputs whose cost grows with the image)."""
    with Image.open(scene_path) as img:
        return png_bytes(img.convert("RGB").resize((320, 160), Image.BILINEAR))


# ------------------------------------------------------------------------------------------------
# Helpers


def segment(http: httpx.Client, image: bytes, timeout: float | None = None, **fields: str) -> httpx.Response:
    files = {"image": ("scene.png", image, "image/png")}
    return http.post("/segment", files=files, data=fields, timeout=timeout or http.timeout)


def ok(response: httpx.Response, media_type: str) -> httpx.Response:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith(media_type), response.headers
    return response


def label_of(body: dict[str, Any]) -> np.ndarray:
    return decode_png(base64.b64decode(body["label_png"]))


def assert_ready(http: httpx.Client) -> None:
    assert http.get("/readyz", timeout=ERROR_TIMEOUT_S).status_code == 200


# ------------------------------------------------------------------------------------------------
# Health, model info, captioning


def test_liveness_and_readiness(http: httpx.Client) -> None:
    assert http.get("/livez").status_code == 200
    assert http.get("/readyz").status_code == 200


def test_model_info_names_config_checkpoint_and_backend(
    http: httpx.Client, client: bentoml.SyncHTTPClient, predictor: Predictor
) -> None:
    info = ok(http.get("/model"), "application/json").json()
    assert info["model"] == predictor.served.name and info["random_weights"] is RANDOM_WEIGHTS
    assert info["metrics"] == json.loads(json.dumps(predictor.served.metrics))
    assert info["trained_on"] == predictor.info()["trained_on"]
    assert info["model_config"] == json.loads(json.dumps(predictor.info()["model_config"]))
    assert re.fullmatch(r"[0-9a-f]{64}", info["checkpoint_sha256"])
    assert info["checkpoint_sha256"] == predictor.served.checkpoint_sha256
    assert info["backend"]["name"] == "eager-fp32" and info["backend"]["precision"] == "fp32"
    assert info["classes"] == list(CITYSCAPES_CLASSES)
    assert info["captioner"].startswith("blip|")
    assert ok(http.post("/info"), "application/json").json() == info
    assert client.info() == info


def test_caption_endpoint_over_http_and_client(
    http: httpx.Client, client: bentoml.SyncHTTPClient, scene_path: Path, scene_png: bytes
) -> None:
    files = {"image": ("scene.png", scene_png, "image/png")}
    body = ok(http.post("/caption", files=files), "application/json").json()
    assert isinstance(body["caption"], str) and body["caption"], body
    assert body["source"] in ("captioner", "cache") and body["error"] is None
    assert body["ms"] >= 0
    from_client = client.caption(image=scene_path)
    assert isinstance(from_client, dict)
    assert from_client["caption"] == body["caption"]  # greedy decoding: deterministic
    seg = ok(segment(http, scene_png, output="json"), "application/json").json()
    assert seg["caption"]["text"] == body["caption"] and seg["caption"]["source"] in ("captioner", "cache")
    assert_error(http.post("/caption", files={"image": ("a.txt", b"text", "text/plain")}), 415)


def test_caption_sources(http: httpx.Client, small_png: bytes) -> None:
    by_caller = ok(segment(http, small_png, caption=CAPTION), "application/json").json()["caption"]
    assert by_caller == {"text": CAPTION, "source": "caller", "error": None}
    without = ok(segment(http, small_png, use_captioner="false"), "application/json").json()["caption"]
    assert without == {"text": "", "source": "none", "error": None}
    captioned = ok(segment(http, small_png, use_captioner="true"), "application/json").json()["caption"]
    assert captioned["text"] and captioned["source"] in ("captioner", "cache")


# ------------------------------------------------------------------------------------------------
# Segmentation outputs against the in-process predictor


def test_label_png_of_cityscapes_scene_equals_in_process(
    http: httpx.Client, scene_png: bytes, scene_expected: np.ndarray
) -> None:
    response = ok(segment(http, scene_png, output="label_png", caption=CAPTION), "image/png")
    assert response.headers["x-backend"] == "eager-fp32"
    assert response.headers["x-random-weights"] == str(RANDOM_WEIGHTS).lower()
    assert response.headers["x-caption-source"] == "caller"
    assert json.loads(response.headers["x-classes"]) == list(CITYSCAPES_CLASSES)
    label = decode_png(response.content)
    assert label.shape == (1024, 2048) and label.dtype == np.uint8  # the scene's own size
    assert len(np.unique(label)) >= 2
    np.testing.assert_array_equal(label, scene_expected)


def test_default_model_segments_a_real_val_frame_at_its_own_size(
    http: httpx.Client, fixtures_dir: Path, predictor: Predictor
) -> None:
    """A real Cityscapes val frame (a 1024x512 JPEG): a label map of its size; the trained default
    gets most of its labelled pixels right (its header says it was trained on real frames)."""
    val = fixtures_dir / "real/cityscapes"
    image = val / "leftImg8bit/val/frankfurt/frankfurt_000000_011810_leftImg8bit.jpg"
    truth = decode_png(
        (val / "gtFine/val/frankfurt/frankfurt_000000_011810_gtFine_labelTrainIds.png").read_bytes()
    )
    files = {"image": ("frame.jpg", image.read_bytes(), "image/jpeg")}
    label = decode_png(
        ok(http.post("/segment", files=files, data={"output": "label_png"}), "image/png").content
    )
    assert label.shape == truth.shape == (512, 1024)
    trained_on = predictor.served.metrics.get("trained_on") or {}
    if RANDOM_WEIGHTS or "real" not in trained_on.get("name", ""):
        pytest.skip("the embedded default is not a real-frames model: accuracy not checked")
    known = truth != 255
    accuracy = float((label[known] == truth[known]).mean())
    # A regression guard, not the issue's accuracy target (35 mIoU, missed: RESULTS.md "Real
    # frames"): the real-frames default (10.8 mIoU) gets 55 % of this frame's pixels; the synthetic
    # default it replaced got 47 % of the labelled fixtures' pixels by painting bands.
    assert accuracy >= 0.5, f"pixel accuracy {accuracy:.1%} on a real val frame"
    assert info_mentions_training(http)


def info_mentions_training(http: httpx.Client) -> bool:
    info = http.get("/model").json()
    metrics = info["metrics"]
    return (
        bool(metrics["trained_on"]["images"]["labeled"])
        and "mIoU" in info["trained_on"]
        and bool(metrics["commit"])
    )


def test_json_from_client_and_http_equals_in_process(
    http: httpx.Client,
    client: bentoml.SyncHTTPClient,
    scene_path: Path,
    scene_png: bytes,
    scene_expected: np.ndarray,
    predictor: Predictor,
) -> None:
    body = client.segment(image=scene_path, output="json", caption=CAPTION)
    assert isinstance(body, dict)  # the client decodes the JSON response
    assert (body["width"], body["height"]) == (2048, 1024)
    assert body["classes"] == list(CITYSCAPES_CLASSES) and body["class_set"] == "cityscapes"
    assert body["train_ids"] == list(range(19))
    assert body["palette"] == [list(c) for c in CITYSCAPES_PALETTE]
    assert body["caption"] == {"text": CAPTION, "source": "caller", "error": None}
    assert body["random_weights"] is RANDOM_WEIGHTS and body["backend"] == "eager-fp32"
    assert body["model"] == predictor.served.name and re.fullmatch(r"[0-9a-f]{64}", body["checkpoint_sha256"])
    assert sum(s["pixel_fraction"] for s in body["stats"]) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= s["mean_confidence"] <= 1.0 for s in body["stats"])
    assert {"decode", "forward", "postprocess", "total"} <= set(body["timings_ms"])
    np.testing.assert_array_equal(label_of(body), scene_expected)
    over_http = ok(segment(http, scene_png, output="json", caption=CAPTION), "application/json").json()
    volatile = ("timings_ms", "batch_size")
    assert {k: v for k, v in over_http.items() if k not in volatile} == {
        k: v for k, v in body.items() if k not in volatile
    }


def test_labelid_png_maps_back_to_the_same_train_ids(
    http: httpx.Client, scene_png: bytes, scene_expected: np.ndarray
) -> None:
    response = ok(segment(http, scene_png, output="labelid_png", caption=CAPTION), "image/png")
    label_ids = decode_png(response.content)
    assert label_ids.shape == (1024, 2048)
    assert set(np.unique(label_ids).tolist()) <= set(TRAIN_ID_TO_LABEL_ID)
    np.testing.assert_array_equal(label_id_lut()[label_ids], scene_expected)


def test_color_png_is_the_label_map_with_the_cityscapes_palette(
    http: httpx.Client, small_png: bytes, predictor: Predictor
) -> None:
    expected = predictor.predict(small_png, caption=CAPTION).label_map
    response = ok(segment(http, small_png, output="color_png", caption=CAPTION), "image/png")
    with Image.open(io.BytesIO(response.content)) as img:
        assert img.mode == "P" and img.size == (320, 160)
        palette = img.getpalette()[: 19 * 3]
        indices, rgb = np.array(img), np.array(img.convert("RGB"))
    assert palette == [v for colour in CITYSCAPES_PALETTE for v in colour]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(rgb, np.array(CITYSCAPES_PALETTE, dtype=np.uint8)[expected])


@pytest.mark.parametrize("alpha", ["0", "1", "0.25", None])
def test_overlay_png_blends_image_and_colours(
    http: httpx.Client, small_png: bytes, predictor: Predictor, alpha: str | None
) -> None:
    expected = predictor.predict(small_png, caption=CAPTION).label_map
    image = decode_png(small_png).astype(np.float64)
    colours = np.array(CITYSCAPES_PALETTE, dtype=np.float64)[expected]
    fields = {"output": "overlay_png", "caption": CAPTION} | ({} if alpha is None else {"alpha": alpha})
    overlay = decode_png(ok(segment(http, small_png, **fields), "image/png").content)
    assert overlay.shape == (160, 320, 3)
    weight = 0.5 if alpha is None else float(alpha)
    blend = (1 - weight) * image + weight * colours
    assert np.abs(overlay.astype(np.float64) - blend).max() <= 1.0


# ------------------------------------------------------------------------------------------------
# Class sets


def test_custom_classes_from_a_json_list(http: httpx.Client, small_png: bytes, predictor: Predictor) -> None:
    expected = predictor.predict(small_png, caption=CAPTION, classes=CUSTOM).label_map
    body = ok(segment(http, small_png, classes=json.dumps(CUSTOM), caption=CAPTION), "application/json")
    body = body.json()
    assert body["classes"] == ["road", "sky", "car"] and body["class_set"] == "custom"
    assert body["train_ids"] is None and len(body["palette"]) == 3
    np.testing.assert_array_equal(label_of(body), expected)
    response = ok(
        segment(http, small_png, classes=json.dumps(CUSTOM), caption=CAPTION, output="label_png"), "image/png"
    )
    assert json.loads(response.headers["x-classes"]) == ["road", "sky", "car"]
    np.testing.assert_array_equal(decode_png(response.content), expected)


def test_custom_classes_as_text_and_named_sets(
    http: httpx.Client, client: bentoml.SyncHTTPClient, small_png: bytes, scene_path: Path
) -> None:
    response = ok(segment(http, small_png, classes="road, sidewalk, car", output="label_png"), "image/png")
    assert json.loads(response.headers["x-classes"]) == ["road", "sidewalk", "car"]
    assert set(np.unique(decode_png(response.content)).tolist()) <= {0, 1, 2}
    synthia = ok(segment(http, small_png, classes="synthia16"), "application/json").json()
    assert synthia["class_set"] == "synthia16" and synthia["train_ids"] == list(SYNTHIA16_TRAIN_IDS)
    assert len(synthia["classes"]) == 16
    response = ok(segment(http, small_png, classes="synthia16", output="labelid_png"), "image/png")
    assert len(json.loads(response.headers["x-classes"])) == 16
    body = client.segment(image=scene_path, output="json", classes=json.dumps(CUSTOM), caption=CAPTION)
    assert body["classes"] == ["road", "sky", "car"]


# ------------------------------------------------------------------------------------------------
# Adaptive batching keeps results apart


def batch_images(scene_dir: Path) -> list[bytes]:
    """8 different scenes: the 5 fixtures at 512x256, 2 flipped crops at other sizes, 1 synthetic."""
    sources = sorted(scene_dir.glob("*_leftImg8bit.png"))[:5]
    images = []
    for path in sources:
        with Image.open(path) as img:
            images.append(img.convert("RGB").resize((512, 256), Image.BILINEAR))
    with Image.open(sources[0]) as img:
        flipped = img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    images.append(flipped.crop((0, 0, 1024, 768)).resize((384, 288), Image.BILINEAR))
    images.append(flipped.crop((1024, 256, 2048, 768)).resize((600, 300), Image.BILINEAR))
    images.append(noise_image(512, 256, seed=7))
    return [png_bytes(img) for img in images]


def fire_together(http: httpx.Client, images: list[bytes]) -> list[dict[str, Any]]:
    """All requests at once (a barrier releases them together); each with its own caption."""
    barrier = threading.Barrier(len(images), timeout=30)

    def one(index: int) -> dict[str, Any]:
        barrier.wait()
        return ok(segment(http, images[index], caption=f"scene {index}"), "application/json").json()

    with ThreadPoolExecutor(len(images)) as pool:
        return list(pool.map(one, range(len(images)), timeout=180))


def test_concurrent_requests_keep_their_own_results(
    http: httpx.Client, predictor: Predictor, fixtures_dir: Path
) -> None:
    images = batch_images((fixtures_dir / SCENE).parent)
    alone = [label_of(segment(http, img, caption=f"scene {i}").json()) for i, img in enumerate(images)]
    for i, img in enumerate(images):  # one by one, the server equals the in-process predictor
        np.testing.assert_array_equal(alone[i], predictor.predict(img, caption=f"scene {i}").label_map)
    same_size = [i for i, m in enumerate(alone) if m.shape == alone[0].shape]
    assert len(same_size) >= 5
    for a in same_size:  # a mix-up must be visible: the scenes give different maps
        for b in same_size:
            if a < b:
                assert np.mean(alone[a] == alone[b]) < 0.95, (a, b)
    batch_sizes, lanes = [], []
    for _ in range(3):
        results = fire_together(http, images)
        batch_sizes += [r["batch_size"] for r in results]
        lanes += [r["lane"] for r in results]
        for i, body in enumerate(results):
            assert body["caption"]["text"] == f"scene {i}"
            label = label_of(body)
            assert label.shape == alone[i].shape and (body["height"], body["width"]) == label.shape
            own = np.mean(label == alone[i])
            assert own >= BATCH_AGREEMENT, (i, own, body["batch_size"])
            for j in same_size:
                if j != i and label.shape == alone[j].shape:
                    assert np.mean(label == alone[j]) < own - 0.04, (i, j)
    # together, requests were batched (one lane) or ran on several one-thread CPU streams
    streams = {lane for lane in lanes if lane > 0}
    assert max(batch_sizes) > 1 or len(streams) > 1, f"batches {batch_sizes}, lanes {lanes}"


# ------------------------------------------------------------------------------------------------
# Boundaries that need no special settings


def test_longest_side_limit_just_below_and_above(http: httpx.Client) -> None:
    below = ok(
        segment(http, png_bytes(Image.new("RGB", (16384, 1), (90, 90, 90))), output="label_png"), "image/png"
    )
    assert decode_png(below.content).shape == (1, 16384)
    above = segment(http, png_bytes(Image.new("RGB", (16385, 1), (90, 90, 90))), output="label_png")
    assert_error(above, 413, "image_too_large")
    assert_ready(http)


# ------------------------------------------------------------------------------------------------
# Bad input: the documented error, never a 500, and the server stays ready


def _png() -> bytes:
    return png_bytes(noise_image(64, 48, seed=1))


def _jpeg() -> bytes:
    return encode(noise_image(64, 48, seed=1), "JPEG")


def _corrupt_png() -> bytes:
    data = bytearray(_png())
    idat = data.index(b"IDAT")
    data[idat + 40 : idat + 60] = bytes(20)  # zeroed compressed data: zlib or CRC error
    return bytes(data)


def _file(data: bytes, name: str, media_type: str, **fields: str) -> dict[str, Any]:
    return {"files": {"image": (name, data, media_type)}, "data": fields}


def _png_with(**fields: str) -> Callable[[], dict[str, Any]]:
    return lambda: _file(_png(), "image.png", "image/png", **fields)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>'
HTML = b"<!DOCTYPE html><html><body><img src='x.png'></body></html>"
ERROR_CASES: dict[str, tuple[Callable[[], dict[str, Any]], int, str]] = {
    "text": (lambda: _file(b"just some text\n", "notes.txt", "text/plain"), 415, "unsupported_media_type"),
    "html": (lambda: _file(HTML, "page.html", "text/html"), 415, "unsupported_media_type"),
    "svg": (lambda: _file(SVG, "drawing.svg", "image/svg+xml"), 415, "unsupported_media_type"),
    "gif": (lambda: _file(encode(noise_image(8, 8), "GIF"), "a.gif", "image/gif"), 415, "unsupported_media_type"),
    "bmp": (lambda: _file(encode(noise_image(8, 8), "BMP"), "a.bmp", "image/bmp"), 415, "unsupported_media_type"),
    "tiff": (lambda: _file(encode(noise_image(8, 8), "TIFF"), "a.tif", "image/tiff"), 415, "unsupported_media_type"),
    "truncated_png": (lambda: _file(_png()[: len(_png()) // 2], "a.png", "image/png"), 422, "invalid_image"),
    "truncated_jpeg": (lambda: _file(_jpeg()[: len(_jpeg()) // 2], "a.jpg", "image/jpeg"), 422, "invalid_image"),
    "corrupt_png": (lambda: _file(_corrupt_png(), "a.png", "image/png"), 422, "invalid_image"),
    "png_header_only": (lambda: _file(_png()[:8], "a.png", "image/png"), 422, "invalid_image"),
    "empty_file": (lambda: _file(b"", "a.png", "image/png"), 422, "invalid_image"),
    "bad_output": (_png_with(output="nope"), 422, "invalid_parameter"),
    "alpha_above_1": (_png_with(output="overlay_png", alpha="1.01"), 422, "invalid_parameter"),
    "alpha_negative": (_png_with(output="overlay_png", alpha="-0.1"), 422, "invalid_parameter"),
    "alpha_not_a_number": (_png_with(output="overlay_png", alpha="half"), 422, "invalid_parameter"),
    "use_captioner_not_bool": (_png_with(use_captioner="maybe"), 422, "invalid_parameter"),
    "classes_bad_json": (_png_with(classes='["road", "sky"'), 422, "invalid_parameter"),
    "classes_json_not_strings": (_png_with(classes="[1, 2]"), 422, "invalid_parameter"),
    "classes_empty_json_list": (_png_with(classes="[]"), 422, "invalid_parameter"),
    "classes_empty_text_list": (_png_with(classes=" , , "), 422, "invalid_parameter"),
    "classes_duplicate": (_png_with(classes="road, road"), 422, "invalid_parameter"),
    "classes_too_many": (_png_with(classes=", ".join(f"c{i}" for i in range(65))), 422, "invalid_parameter"),
    "labelid_with_custom_classes": (_png_with(classes="road, sky", output="labelid_png"), 422, "invalid_parameter"),
    "caption_too_long": (_png_with(caption="x" * 2001), 422, "invalid_parameter"),
    "missing_image_field": (lambda: {"files": {"other": ("a.png", _png(), "image/png")}}, 422, "invalid_parameter"),
    "no_body": (lambda: {}, 415, "unsupported_media_type"),  # not multipart: said before parsing
    "image_as_text_field": (lambda: {"files": {"caption": (None, "x")}, "data": {"image": "hello"}}, 422, "invalid_parameter"),
    "json_body_with_base64": (lambda: {"json": {"image": base64.b64encode(_png()).decode()}}, 415, "unsupported_media_type"),
    "malformed_json_body": (
        lambda: {"content": b"{not json", "headers": {"content-type": "application/json"}},
        415,
        "unsupported_media_type",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_gets_its_error_and_the_server_stays_ready(http: httpx.Client, case: str) -> None:
    build, status, code = ERROR_CASES[case]
    response = http.post("/segment", timeout=ERROR_TIMEOUT_S, **build())
    assert response.status_code != 500, response.text
    assert_error(response, status, code)
    assert_ready(http)


class _Listener:
    """A loopback TCP listener that counts connections (to prove nothing is fetched)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_image_given_as_url_is_refused_and_never_fetched(http: httpx.Client) -> None:
    listener = _Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/scene.png"
        as_field = http.post(
            "/segment", files={"caption": (None, "x")}, data={"image": url}, timeout=ERROR_TIMEOUT_S
        )
        assert_error(as_field, 422, "invalid_parameter")
        # a JSON body is not multipart: refused before any field is read (415)
        as_json = http.post("/segment", json={"image": url}, timeout=ERROR_TIMEOUT_S)
        assert_error(as_json, 415, "unsupported_media_type")
        as_caption_json = http.post("/caption", json={"image": url}, timeout=ERROR_TIMEOUT_S)
        assert_error(as_caption_json, 415, "unsupported_media_type")
        time.sleep(0.3)
        assert listener.connections == 0
    finally:
        listener.close()
    assert_ready(http)


def test_client_raises_the_service_error(client: bentoml.SyncHTTPClient, scene_path: Path) -> None:
    with pytest.raises(bentoml.exceptions.BentoMLException) as info:
        client.segment(image=scene_path, output="nope")
    assert info.value.error_code == 422
    assert json.loads(info.value.message)["error"]["code"] == "invalid_parameter"


# ------------------------------------------------------------------------------------------------
# Metrics (the counts include the requests of the tests above; this test makes enough of its own)


def test_metrics_count_requests_in_prometheus_text(http: httpx.Client, small_png: bytes) -> None:
    for _ in range(2):
        ok(segment(http, small_png, caption=CAPTION), "application/json")
    assert_error(segment(http, b"not an image"), 415)
    assert_error(segment(http, small_png, output="nope"), 422)
    response = ok(http.get("/metrics"), "text/plain")
    text = response.text
    assert "# TYPE bentoml_service_request_total counter" in text
    assert "# TYPE bentoml_service_request_duration_seconds histogram" in text
    assert (
        metric_total(text, "bentoml_service_request_total", endpoint="/segment", http_response_code="200")
        >= 2
    )
    assert (
        metric_total(text, "bentoml_service_request_total", endpoint="/segment", http_response_code="415")
        >= 1
    )
    assert (
        metric_total(text, "bentoml_service_request_total", endpoint="/segment", http_response_code="422")
        >= 1
    )
    assert (
        metric_total(text, "bentoml_service_request_total", endpoint="/segment", http_response_code="500")
        == 0
    )
    assert metric_total(text, "bentoml_service_request_duration_seconds_count", endpoint="/segment") >= 3
    # the service's own metrics (serving/metrics.py)
    assert metric_total(text, "semidavil_segment_requests_total", output="json", status="200") >= 2
    assert metric_total(text, "semidavil_segment_requests_total", output="unknown", status="422") >= 1
    assert metric_total(text, "semidavil_segment_requests_total", status="415") >= 1
    assert metric_total(text, "semidavil_stage_seconds_count", stage="forward") >= 2
    assert metric_total(text, "semidavil_caption_source_total", source="caller") >= 2
    assert metric_total(text, "semidavil_batch_size_bucket", le="+Inf") >= 2


def test_browser_on_the_mounted_demo_loads_examples_segments_and_downloads(
    server: Server, tmp_path: Path
) -> None:
    """Headless Chromium on /ui/ of the real BentoML server: an example's image loads (its file URL
    carries the mount path), segmenting works, legend, table and hover view show the result, and the
    label PNG download is served."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from model.class_sets import CLASS_SETS
    from tests.browser import browser_or_skip
    from ui.examples import load_examples

    browser = browser_or_skip()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        wait = WebDriverWait(browser, 120)
        browser.get(server.url + "/ui/")
        path, _ = load_examples()[0]
        label = Path(path).stem.replace("_", " ")
        wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[normalize-space()='{label}']"))).click()
        shown = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-input img")))
        wait.until(lambda b: b.execute_script("return arguments[0].complete", shown))
        src = shown.get_attribute("src")
        assert browser.execute_script("return arguments[0].naturalWidth", shown) > 0, (
            src
        )  # not a broken image
        assert "/ui/" in src, src
        browser.find_element(By.CSS_SELECTOR, "#sd-segment").click()
        overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-overlay img")))
        wait.until(
            lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay)
        )
        assert "Caption source: caller" in browser.find_element(By.CSS_SELECTOR, "#sd-status").text
        # the result panels (the standalone demo's full browser test is under -m slow): a legend of
        # the class set's names, the per-class table, and the hover view with one button per class
        items = browser.find_elements(By.CSS_SELECTOR, "#sd-legend .sd-legend-item")
        legend = [i.get_attribute("data-class") for i in items]
        assert legend and set(legend) <= set(CLASS_SETS["cityscapes"].names), legend
        table_text = browser.find_element(By.CSS_SELECTOR, "#sd-table").get_attribute("textContent")
        assert "area (%)" in table_text and all(name in table_text for name in legend)
        browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Hover a class')]").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-annotated img")))
        buttons = [b.text.strip() for b in browser.find_elements(By.CSS_SELECTOR, "#sd-annotated button")]
        assert [b for b in buttons if b] == legend
        browser.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        button = "//button[contains(normalize-space(), 'Label map PNG (train ids)')]"
        wait.until(ec.element_to_be_clickable((By.XPATH, button))).click()
        wait.until(lambda _: [f for f in downloads.iterdir() if f.suffix == ".png"])
        saved = next(f for f in downloads.iterdir() if f.suffix == ".png")
        assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", saved
    finally:
        browser.quit()


def test_demo_mounted_at_ui_loads_and_segments(http: httpx.Client, server: Server, scene_path: Path) -> None:
    """One process serves API and UI: the Gradio page under /ui answers and runs a real segmentation."""
    from gradio_client import Client, handle_file
    from PIL import Image

    page = http.get("/ui/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    client = Client(server.url + "/ui/", verbose=False)
    try:
        outputs = client.predict(
            handle_file(str(scene_path)), "a street", False, "cityscapes", "", 0.5, api_name="/segment"
        )
    finally:
        client.close()
    with Image.open(outputs[0]) as overlay:
        assert overlay.size == (2048, 1024)
    assert (outputs[4], outputs[5]) == ("a street", "caller")
    assert_ready(http)
