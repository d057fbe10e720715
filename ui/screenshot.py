"""The README's picture of the demo: `python -m ui.screenshot --out docs/demo.png`.

Launches the standalone demo on a free loopback port with the embedded default checkpoint, opens it
in headless Chromium (ui/browser.py), clicks an example scene, presses Segment, waits for the
overlay and saves a screenshot of the page. The examples are the project's own synthetic scenes:
the Cityscapes frames in ../shared/fixtures may not be redistributed, so no real photo is shown.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from serving.predictor import Predictor
from ui.app import app_kwargs, build_demo, free_port
from ui.browser import BrowserUnavailable, full_page_png, headless_chromium
from ui.examples import load_examples

WAIT_S = 180


def capture(url: str, example_label: str, out: Path, window: tuple[int, int]) -> None:
    """Drive the demo at `url`: click the example button `example_label`, segment, save a PNG."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = headless_chromium(window)
    try:
        wait = WebDriverWait(browser, WAIT_S)
        browser.get(url)
        button = f"//button[normalize-space()='{example_label}']"
        wait.until(ec.element_to_be_clickable((By.XPATH, button))).click()
        shown = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-input img")))
        wait.until(
            lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", shown)
        )
        browser.find_element(By.CSS_SELECTOR, "#sd-segment").click()
        overlay = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#sd-overlay img")))
        wait.until(
            lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay)
        )
        wait.until(lambda b: "Caption source" in b.find_element(By.CSS_SELECTOR, "#sd-status").text)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(full_page_png(browser, max_height=window[1]))
    finally:
        browser.quit()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ui.screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    parser.add_argument("--checkpoint", default=None, help="default: the embedded default checkpoint")
    parser.add_argument("--example", type=int, default=0, help="index of the example scene (default 0)")
    parser.add_argument("--window", type=int, nargs=2, default=(1280, 1100), metavar=("W", "H"))
    args = parser.parse_args(argv)
    examples = load_examples()
    if not examples:
        print("error: no example scenes in ui/examples", file=sys.stderr)
        return 1
    path, _caption = examples[args.example]
    predictor = Predictor.from_checkpoint(args.checkpoint, backend="eager-fp32", captioner="none")
    demo = build_demo(predictor)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        **app_kwargs(predictor),
    )
    try:
        if demo.local_url is None:
            raise RuntimeError("the demo did not start (no local URL)")
        capture(demo.local_url, Path(path).stem.replace("_", " "), args.out, tuple(args.window))
    except BrowserUnavailable as err:
        print(f"error: the screenshot {err}", file=sys.stderr)
        return 1
    finally:
        demo.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
