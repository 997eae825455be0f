"""Browser fixtures: one headless Chromium per module (starting it costs about a second), a fresh
page per test, and screenshots saved in the test's ``tmp_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from web.browser import Screenshots, headless_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def screenshot(page: Any, tmp_path: Path) -> Screenshots:
    """``screenshot("grid")`` saves the page as ``tmp_path/screenshots/01-grid.png``."""
    return Screenshots(page, tmp_path / "screenshots")
