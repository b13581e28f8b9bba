"""A real browser: headless Debian Chromium (driven by Playwright) uploads a clip and reads the result."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.app_server import running_app
from tests.paths import CLIPS

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
CLIP = CLIPS / "pcavs_posesrc_00067.mp4"
RESULT_TIMEOUT_MS = 180_000


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
def test_upload_analyze_and_see_the_offset_and_plot(tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "missing.model"))  # as offline: only landmarks runs
    with running_app() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            status = page.locator("#engine-status")
            expect(status).to_contain_text("landmarks: loaded", timeout=60_000)
            expect(status).to_contain_text("syncnet: off: SyncNet weights: SYNCNET_WEIGHTS=")  # and says why
            page.locator("input[type=file]").first.set_input_files(str(CLIP))
            expect(page.locator("video").first).to_be_visible(timeout=30_000)  # the upload has landed
            page.get_by_role("button", name="Analyze").click()

            verdict = page.locator("#verdict h3")
            expect(verdict).to_be_visible(timeout=RESULT_TIMEOUT_MS)
            assert any(words in verdict.inner_text().lower() for words in ("in sync", "ms early", "ms late"))
            expect(page.locator("#verdict")).to_contain_text("landmarks: ")
            plot = page.locator("#distance-plot img")
            expect(plot).to_be_visible(timeout=30_000)
            assert plot.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG loaded and decoded

            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
