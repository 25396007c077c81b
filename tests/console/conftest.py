"""Console tests: one real Chromium (Debian's package, driven by Playwright) for the module, on the live test gateway.

Playwright cannot download its own browser here, so it launches the system ``chromium`` (``make test`` installs
it through scripts/test_services.sh). A missing browser fails the tests with that instruction; it never skips.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Screenshots go to a temporary folder, so a test run never changes the checkout; to refresh the committed ones:
# RAGSWAP_SCREENSHOTS_DIR=docs/console make test PYTEST_ARGS=tests/console/test_console_browser.py
SCREENSHOTS = Path(os.environ.get("RAGSWAP_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="ragswap-console-"))
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# Playwright's assertions wait 5 s by default; on a loaded 2-core machine a streamed answer or a report rendered
# with matplotlib can take longer. Assertions still fail when the page never gets there.
ASSERT_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=ASSERT_TIMEOUT_MS)

    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: run `make test-services` (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
