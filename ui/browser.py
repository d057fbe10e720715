"""Headless Chromium driven by Selenium, for the README's screenshot and the UI's browser tests.

Needs Debian's chromium and chromium-driver (`make setup-browser`) and the Python package selenium
(the dev extra). Every host name but 127.0.0.1 resolves to nothing: the page can reach only the
demo on loopback.
"""

from __future__ import annotations

import base64
import shutil
from typing import Any

SELENIUM_PIN = "selenium==4.51.0"


class BrowserUnavailable(RuntimeError):
    """Chromium, its driver or selenium is missing; the message says how to install it."""


def headless_chromium(window: tuple[int, int] = (1440, 1500)) -> Any:
    """A selenium webdriver.Chrome on headless Chromium (loopback only), window (width, height)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise BrowserUnavailable(
            "needs the Debian packages chromium and chromium-driver: `make setup-browser`"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        raise BrowserUnavailable(f"needs the Python package selenium (pip install {SELENIUM_PIN})") from err
    options = Options()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={window[0]},{window[1]}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing but loopback
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def full_page_png(browser: Any, max_height: int = 6000) -> bytes:
    """A screenshot of the whole page, not just the window (Chrome DevTools protocol)."""
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    return base64.b64decode(shot["data"])
