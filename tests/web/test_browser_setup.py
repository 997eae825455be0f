"""The browser of the UI tests starts, renders a page and saves a screenshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from web.browser import Screenshots


def test_headless_chromium_renders_a_page_and_saves_a_screenshot(
    page: Any, screenshot: Screenshots, tmp_path: Path
) -> None:
    page.set_content("<h1 id='t'>dbtflow</h1><p style='color:rgb(214, 39, 40)'>failed</p>")
    assert page.inner_text("#t") == "dbtflow"
    assert page.eval_on_selector("p", "e => getComputedStyle(e).color") == "rgb(214, 39, 40)"
    shot = screenshot("blank")
    assert shot.parent == tmp_path / "screenshots"
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 1000
