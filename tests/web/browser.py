"""A headless Chromium for the tests that look at dbtflow's pages as a user does.

Debian's ``chromium`` package, driven by Playwright's Python package (its own browser download
cannot be used here): ``make test`` installs both. A browser that cannot start fails the test
that asked for it, loudly: a browser test that is silently skipped cannot fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright browser on Debian's Chromium."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or CHROMIUM)
    if not executable.exists():
        raise AssertionError(
            f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium chromium-driver)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable),
            headless=True,
            # root in a container: Chromium's sandbox needs user namespaces it may not have.
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        )
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    """Saves numbered full-page screenshots of a page into the test's folder."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.taken: list[Path] = []

    def __call__(self, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path
