"""The Gradio demo (ui/app.py): plain function calls, the Gradio API through gradio_client, the ASGI
app mounted under /ui (what the BentoML service does), and a headless Chromium session.

All on semidavil-tiny with random weights and the real Cityscapes fixture image (read in place).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.class_sets import CLASS_SETS, TRAIN_ID_TO_LABEL_ID
from serving.decode import Limits
from serving.predictor import Predictor
from tests.browser import browser_or_skip, full_page_png
from tests.conftest import CITYSCAPES_FIXTURES, ROOT
from training.synthetic.demo_examples import MAX_BYTES
from ui.app import (
    SceneOutputs,
    app_kwargs,
    banner_html,
    build_demo,
    build_ui_asgi,
    colour_map_for,
    free_port,
    legend_html,
    reblend_overlay,
    segment_scene,
)
from ui.examples import EXAMPLES_DIR, load_examples

FIXTURE_IMAGE = CITYSCAPES_FIXTURES / "train_img" / "aachen_000000_000019_leftImg8bit.png"
CAPTION = "a rainy city street with a bus, parked cars and people on the sidewalk"
LEGEND_CLASS = re.compile(r'data-class="([^"]*)"')
# gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")


@pytest.fixture(scope="module", autouse=True)
def quiet_cpu():
    """One torch thread (the box is shared with long CPU jobs) and no Gradio analytics."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("serving.loading.DEFAULT_CHECKPOINT", Path("/nonexistent/default.safetensors"))
        # "auto" by the CPU rule, not this machine's measured choice (serving/backend_choice.json)
        mp.setattr("serving.backends.factory.CHOICE_FILE", Path("/nonexistent/backend_choice.json"))
        return Predictor.from_checkpoint(None)


@pytest.fixture(scope="module")
def fixture_image() -> Path:
    if not FIXTURE_IMAGE.is_file():
        pytest.skip(f"Cityscapes fixture not found at {FIXTURE_IMAGE}")
    return FIXTURE_IMAGE


@pytest.fixture(scope="module")
def fixture_result(predictor, fixture_image, tmp_path_factory) -> SceneOutputs:
    out = segment_scene(predictor, str(fixture_image), caption="", out_dir=tmp_path_factory.mktemp("ui"))
    assert out.error is None, out.error
    return out


def predicted_names(out: SceneOutputs, class_set: str = "cityscapes") -> list[str]:
    names = CLASS_SETS[class_set].names
    return [names[i] for i in np.unique(out.state.label_map)]


def check_table(rows: list[list]) -> None:
    """Areas in percent sum to 100 within the rounding of each row (2 decimals); confidences in (0, 1]."""
    areas = [float(r[1]) for r in rows]
    assert abs(sum(areas) - 100.0) <= 0.005 * len(rows) + 1e-9, sum(areas)
    assert all(0.0 < float(r[2]) <= 1.0 for r in rows)
    assert areas == sorted(areas, reverse=True)


# ------------------------------------------------------------------------------------------------
# Plain function calls


def test_fixture_scene_outputs(fixture_result, fixture_image):
    out = fixture_result
    with Image.open(out.overlay_path) as overlay:
        assert overlay.format == "PNG"
        assert overlay.size == (2048, 1024)  # the input's size, not the 128x256 working size
    names = predicted_names(out)
    assert out.legend_classes == names
    assert LEGEND_CLASS.findall(out.legend_html) == names  # the swatches: exactly the predicted classes
    for name in names:
        assert out.color_map[name] in out.legend_html
    assert [row[0] for row in sorted(out.table)] == sorted(names)
    check_table(out.table)
    base, annotations = out.annotated
    assert max(base.shape[:2]) <= 1024 and base.shape[1] == 2 * base.shape[0]
    assert [label for _, label in annotations] == names
    assert set(out.color_map) == set(CLASS_SETS["cityscapes"].names)
    # the downloads: train ids round-trip; label ids are the Cityscapes ids of the same map
    with Image.open(out.label_train_path) as train_ids:
        assert np.array_equal(np.asarray(train_ids), out.state.label_map)
    with Image.open(out.label_id_path) as label_ids:
        expected = np.asarray(TRAIN_ID_TO_LABEL_ID, dtype=np.uint8)[out.state.label_map]
        assert np.array_equal(np.asarray(label_ids), expected)
    assert Path(out.label_train_path).name == f"{fixture_image.stem}_trainids.png"
    # stage latencies, backend and checkpoint are reported
    for stage in ("decode", "forward", "postprocess", "total", "encode (UI)"):
        assert out.timings_ms[stage] >= 0.0
    assert "**predictor total" in out.info and "eager" in out.info and "random `semidavil-tiny`" in out.info
    assert "**Trained on** random weights: not trained on anything" in out.info
    assert out.caption_source == "none"  # blank caption, no captioner configured
    assert "2048×1024 PNG" in out.status


def test_edited_caption_is_used(predictor, fixture_image, tmp_path):
    out = segment_scene(predictor, str(fixture_image), caption=CAPTION, out_dir=tmp_path)
    assert out.error is None
    assert (out.caption, out.caption_source) == (CAPTION, "caller")
    assert "caller" in out.status


def test_no_caption_option(predictor, fixture_image, tmp_path):
    out = segment_scene(predictor, str(fixture_image), caption=CAPTION, no_caption=True, out_dir=tmp_path)
    assert out.error is None
    assert out.caption_source == "none"
    assert out.caption == CAPTION  # the user's text stays in the box, unused


def test_bad_uploads_give_messages_not_exceptions(predictor, tmp_path, monkeypatch):
    text_file = tmp_path / "notes.png"  # an image name does not make an image
    text_file.write_text("this is not an image")
    out = segment_scene(predictor, str(text_file), out_dir=tmp_path)
    assert out.error and "not a recognised image format" in out.error and "415" in out.error
    assert out.overlay_path is None and out.state is None and out.table == []
    assert "Traceback" not in out.status

    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="PNG")  # about 12 KB
    truncated = segment_scene(predictor, buf.getvalue()[:60], out_dir=tmp_path)
    assert truncated.error and "invalid_image" in truncated.error

    assert "missing_image" in segment_scene(predictor, None).error
    assert "invalid_parameter" in segment_scene(predictor, buf.getvalue(), class_set="ade20k").error
    assert "invalid_parameter" in segment_scene(predictor, buf.getvalue(), alpha=1.5).error
    assert "invalid_parameter" in segment_scene(predictor, buf.getvalue(), alpha="opaque").error

    monkeypatch.setattr(predictor, "limits", Limits(max_pixels=1000))
    too_many = segment_scene(predictor, buf.getvalue(), out_dir=tmp_path)
    assert too_many.error and "image_too_large" in too_many.error and "413" in too_many.error
    monkeypatch.setattr(predictor, "limits", Limits(max_body_bytes=1000))
    too_big = segment_scene(predictor, buf.getvalue(), out_dir=tmp_path)
    assert too_big.error and "payload_too_large" in too_big.error


def test_opacity_reblends_without_the_model(fixture_result, monkeypatch):
    state = fixture_result.state

    def no_model(*_args, **_kwargs):
        raise AssertionError("re-blending must not run the model")

    monkeypatch.setattr(Predictor, "predict", no_model)
    with Image.open(reblend_overlay(state, 0.0)) as plain:
        assert np.array_equal(np.asarray(plain), state.rgb)
    with Image.open(reblend_overlay(state, 1.0)) as colours:
        palette = np.asarray(state.palette, dtype=np.uint8)
        assert np.array_equal(np.asarray(colours), palette[state.label_map])


def test_class_sets_and_custom_prompts(predictor, fixture_image, tmp_path):
    synthia = segment_scene(predictor, str(fixture_image), class_set="synthia16", out_dir=tmp_path / "s")
    assert synthia.error is None
    assert set(synthia.legend_classes) <= set(CLASS_SETS["synthia16"].names)
    assert synthia.legend_classes == predicted_names(synthia, "synthia16")
    assert synthia.label_id_path is not None
    check_table(synthia.table)

    custom = segment_scene(
        predictor, str(fixture_image), custom_classes="road, car, tree|hedge, sky", out_dir=tmp_path / "c"
    )
    assert custom.error is None
    assert set(custom.legend_classes) <= {"road", "car", "tree", "sky"}
    assert custom.label_id_path is None and "label ids exist only" in custom.status
    assert set(colour_map_for("cityscapes", "road, car, tree|hedge, sky")) == {"road", "car", "tree", "sky"}
    assert "invalid_parameter" in segment_scene(predictor, str(fixture_image), custom_classes="a, a").error


def test_legend_escapes_custom_names():
    from model.class_sets import custom_class_set

    html_text = legend_html(custom_class_set(['<img src=x onerror="alert(1)">', "car"]), [0, 1])
    assert "<img" not in html_text and "&lt;img" in html_text


def test_banner_warns_about_random_weights(predictor):
    assert predictor.random_weights
    banner = banner_html(predictor)
    assert "RANDOM" in banner and "--checkpoint" in banner and 'role="alert"' in banner

    class Trained:
        random_weights = False
        zero_shot = False

    assert banner_html(Trained()) == ""
    assert "loading" in banner_html(None)


def test_banner_says_zero_shot(predictor):
    class ZeroShot:
        random_weights = False
        zero_shot = True
        served = predictor.served

    banner = banner_html(ZeroShot())
    assert "Zero-shot" in banner and "no trained" in banner and 'role="alert"' in banner


def test_examples_are_generated_scenes(predictor, tmp_path):
    examples = load_examples()
    assert len(examples) >= 3, (
        f"run `python -m training.synthetic.demo_examples --out ui/examples` to create {EXAMPLES_DIR}"
    )
    index = json.loads((EXAMPLES_DIR / "examples.json").read_text())
    assert {e["domain"] for e in index} == {"target"}
    for path, caption in examples:
        assert Path(path).stat().st_size < MAX_BYTES
        assert caption
        assert "leftImg8bit" not in path and "aachen" not in path
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (512, 256)
    path, caption = examples[0]
    out = segment_scene(predictor, path, caption=caption, out_dir=tmp_path)
    assert out.error is None and out.caption_source == "caller"
    assert Image.open(out.overlay_path).size == (512, 256)


# ------------------------------------------------------------------------------------------------
# The Gradio API through gradio_client, against the app on a free loopback port


@pytest.fixture(scope="module")
def launched(predictor):
    demo = build_demo(predictor)
    demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **app_kwargs(predictor),
    )
    try:
        yield demo
    finally:
        demo.close()


def test_gradio_api(launched, fixture_image, tmp_path):
    from gradio_client import Client, handle_file

    assert launched.local_url.startswith("http://127.0.0.1:")
    client = Client(launched.local_url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/segment", "/reblend"}

    outputs = client.predict(
        handle_file(str(fixture_image)), CAPTION, False, "cityscapes", "", 0.5, api_name="/segment"
    )
    overlay, annotated, legend, table, caption, source, _status, info, train, label_ids, dl_overlay = outputs
    with Image.open(overlay) as img:
        assert img.size == (2048, 1024) and img.format == "PNG"
    classes = LEGEND_CLASS.findall(legend)
    with Image.open(train) as train_img:
        names = CLASS_SETS["cityscapes"].names
        assert classes == [names[i] for i in np.unique(np.asarray(train_img))]
    assert [a["label"] for a in annotated["annotations"]] == classes
    assert table["headers"] == ["class", "area (%)", "mean confidence"]
    assert sorted(r[0] for r in table["data"]) == sorted(classes)
    check_table(table["data"])
    assert (caption, source) == (CAPTION, "caller")
    assert "predictor total" in info and Path(label_ids).name.endswith("_labelids.png")
    assert Path(dl_overlay).read_bytes() == Path(overlay).read_bytes()

    # the opacity slider's endpoint re-blends the session's last result
    reblended, _ = client.predict(1.0, api_name="/reblend")
    with Image.open(reblended) as img, Image.open(train) as train_img:
        palette = np.asarray(CLASS_SETS["cityscapes"].palette, dtype=np.uint8)
        assert np.array_equal(np.asarray(img), palette[np.asarray(train_img)])

    # a bad upload is a message in the status, not an API error
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"<html>not an image</html>")
    bad = client.predict(handle_file(str(junk)), "", False, "cityscapes", "", 0.5, api_name="/segment")
    assert bad[0] is None and "not a recognised image format" in bad[6]


# ------------------------------------------------------------------------------------------------
# Mounted as an ASGI app under /ui (what the BentoML service does), served by uvicorn in a thread


def test_asgi_app_mounted_under_ui(predictor, fixture_image):
    import httpx
    import uvicorn
    from gradio_client import Client, handle_file
    from starlette.applications import Starlette
    from starlette.routing import Mount

    holder: dict[str, Predictor] = {}
    ui = build_ui_asgi(lambda: holder.get("predictor"))  # lazily resolved, like the service does

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # BentoML enters every mounted app's lifespan (that starts Gradio's queue); so do we.
        async with ui.router.lifespan_context(ui):
            yield

    outer = Starlette(routes=[Mount("/ui", app=ui)], lifespan=lifespan)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/ui"
        page = httpx.get(base + "/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        config = httpx.get(base + "/config", timeout=30)
        assert config.status_code == 200
        labels = {c.get("props", {}).get("label") for c in config.json()["components"]}
        assert "Driving scene (JPEG, PNG or WebP)" in labels and "Overlay" in labels

        client = Client(base + "/", verbose=False)
        loading = client.predict(
            handle_file(str(fixture_image)), "", False, "cityscapes", "", 0.5, api_name="/segment"
        )
        assert loading[0] is None and "still loading" in loading[6]
        holder["predictor"] = predictor
        ready = client.predict(
            handle_file(str(fixture_image)), "", False, "cityscapes", "", 0.5, api_name="/segment"
        )
        with Image.open(ready[0]) as img:
            assert img.size == (2048, 1024)
        client.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ------------------------------------------------------------------------------------------------
# A real browser: headless Chromium driven by Selenium


# The standalone demo (`make demo`) in a browser: a 2048x1024 upload, the random-weights banner, the
# screenshots, a new upload clearing the caption. The same UI mounted in the real server is driven by
# test_service.py's browser test in the default suite (example, segment, legend, table, hover,
# download); this one, ~18 s, runs under -m slow.
@pytest.mark.slow
def test_browser_upload_and_segment(launched, fixture_image, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = browser_or_skip()
    try:
        wait = WebDriverWait(browser, 90)
        browser.get(launched.local_url)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#sd-input input[type=file]")))
        banner = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-banner .sd-warning")))
        assert "RANDOM" in banner.text
        upload.send_keys(str(fixture_image))
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-input img")))
        browser.find_element(By.CSS_SELECTOR, "#sd-segment").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-legend .sd-legend-item")))
        overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-overlay img")))
        wait.until(
            lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay)
        )
        assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 2048
        items = browser.find_elements(By.CSS_SELECTOR, "#sd-legend .sd-legend-item")
        assert items and all(item.is_displayed() for item in items)
        assert {i.get_attribute("data-class") for i in items} <= set(CLASS_SETS["cityscapes"].names)
        assert "Caption source: none" in browser.find_element(By.CSS_SELECTOR, "#sd-status").text
        table_text = browser.find_element(By.CSS_SELECTOR, "#sd-table").get_attribute("textContent")
        assert "area (%)" in table_text
        assert all(i.get_attribute("data-class") in table_text for i in items)
        downloads = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "button, a") if "PNG" in b.text]
        assert len(downloads) >= 3, downloads
        assert "predictor total" in browser.find_element(By.CSS_SELECTOR, "#sd-info").text
        time.sleep(0.5)  # let the table and images finish painting
        shot = tmp_path / "ui.png"
        shot.write_bytes(full_page_png(browser))
        target = os.environ.get("SEMIDAVIL_TEST_ARTIFACTS")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(target) / "ui.png")
        with Image.open(shot) as img:
            assert img.size[0] >= 1000

        # pick a generated example: it fills the caption, which is then used (source caller)
        path, caption = load_examples()[0]
        label = Path(path).stem.replace("_", " ")
        browser.find_element(By.XPATH, f"//button[normalize-space()='{label}']").click()
        wait.until(
            lambda b: (
                b.find_element(By.CSS_SELECTOR, "#sd-caption textarea").get_attribute("value") == caption
            )
        )
        browser.find_element(By.CSS_SELECTOR, "#sd-segment").click()
        wait.until(lambda b: "512×256" in b.find_element(By.CSS_SELECTOR, "#sd-status").text)
        assert "Caption source: caller" in browser.find_element(By.CSS_SELECTOR, "#sd-status").text
        # the hover view: one legend entry per predicted class, in the class-set colours
        browser.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Hover a class')]").click()
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-annotated img")))
        legend_classes = [
            i.get_attribute("data-class") for i in browser.find_elements(By.CSS_SELECTOR, ".sd-legend-item")
        ]
        buttons = [b.text.strip() for b in browser.find_elements(By.CSS_SELECTOR, "#sd-annotated button")]
        assert [b for b in buttons if b] == legend_classes
        (tmp_path / "ui-hover.png").write_bytes(full_page_png(browser))
        if target:
            shutil.copy(tmp_path / "ui-hover.png", Path(target) / "ui-hover.png")
        # a new upload clears the previous scene's caption (so the captioner describes the new one)
        browser.find_element(By.CSS_SELECTOR, "#sd-input input[type=file]").send_keys(str(fixture_image))
        wait.until(
            lambda b: b.find_element(By.CSS_SELECTOR, "#sd-caption textarea").get_attribute("value") == ""
        )
    finally:
        browser.quit()


def test_no_generated_files_in_the_source_tree():
    """Importing ui.app writes no Gradio .pyi stub into ui/; the UI's images are the generated
    examples only, never Cityscapes images."""
    assert not list((ROOT / "ui").glob("*.pyi"))
    shipped = [p for p in (ROOT / "ui").rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
    assert shipped and all(p.parent == EXAMPLES_DIR for p in shipped)
    assert not any("leftImg8bit" in p.name or "gtFine" in p.name for p in shipped)
