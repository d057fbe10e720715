"""A real browser for the UI tests: ui/browser.py's headless Chromium, or a skip saying what is missing."""

from __future__ import annotations

from typing import Any

import pytest

from ui.browser import BrowserUnavailable, full_page_png, headless_chromium

__all__ = ["browser_or_skip", "full_page_png"]


def browser_or_skip() -> Any:
    """Headless Chromium through Selenium (loopback only), or skip saying what is missing."""
    try:
        return headless_chromium()
    except BrowserUnavailable as err:
        pytest.skip(f"browser test {err}")
