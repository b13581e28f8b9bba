"""A real browser: headless Debian Chromium (driven by Playwright) uses the app as a person would."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from tests.app_server import running_app
from tests.hls_server import TestServer, make_hls
from tests.paths import CLIPS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]
FAKE_WEBCAM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # test pattern + beeps
CLIP = CLIPS / "pcavs_posesrc_00067.mp4"
RESULT_TIMEOUT_MS = 180_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A browser page on the app, started as offline (no SyncNet weights: only landmarks runs)."""
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SYNCNET_WEIGHTS", str(tmp_path_factory.mktemp("weights") / "missing.model"))
        env.setenv("SYNCNET_ALLOW_PRIVATE_HOSTS", "1")  # the HLS test serves on 127.0.0.1
        with running_app() as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + FAKE_WEBCAM_ARGS)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1800})
                context.grant_permissions(["camera", "microphone"], origin=url.rstrip("/"))
                page = context.new_page()
                page.goto(url)
                yield page
            finally:
                browser.close()


def test_upload_analyze_and_see_the_offset_and_plot(page, tmp_path):
    from playwright.sync_api import expect

    status = page.locator("#engine-status")
    expect(status).to_contain_text("landmarks: loaded", timeout=60_000)
    expect(status).to_contain_text("syncnet: off: SyncNet weights: SYNCNET_WEIGHTS=")  # and says why
    page.locator("input[type=file]").first.set_input_files(str(CLIP))
    expect(page.locator("video").first).to_be_visible(timeout=30_000)  # the upload has landed
    page.get_by_role("button", name="Analyze").click()

    verdict = page.locator("#verdict h3")
    expect(verdict).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    assert any(words in verdict.inner_text().lower() for words in ("in sync", "ms early", "ms late", "no sync signal"))
    expect(page.locator("#verdict")).to_contain_text("landmarks: ")
    expect(page.locator("#verdict")).to_contain_text("tolerance ITU-R BT.1359 detectability")
    for width in (1400, 390):  # desktop and phone: every header and cell word on one line (never letter by letter)
        page.set_viewport_size({"width": width, "height": 1800})
        expect(page.locator("#results").get_by_text("calibrated (frames)")).to_be_visible()
        for table in ("#results", "#tracks"):
            cells = page.locator(f"{table} th span, {table} .body-cell span")
            assert _words_split_across_lines(cells) == []
            assert _clipped(cells) == []  # and every word fits its column (scrolled to, on a phone)
    page.set_viewport_size({"width": 1400, "height": 1800})
    for table in ("#results", "#tracks"):  # at desktop width every column is on screen, none behind a scroll
        assert page.locator(f"{table} table").evaluate("t => t.scrollWidth <= t.parentElement.clientWidth + 1")
    plot = page.locator("#distance-plot img")
    expect(plot).to_be_visible(timeout=30_000)
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG loaded and decoded

    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def _clipped(spans) -> list[str]:
    """The texts of these elements that are wider than their box (cut off by the column's edge)."""
    return spans.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")


def _words_split_across_lines(spans) -> list[str]:
    """The words of these elements' text that the browser broke over two lines or more."""
    return spans.evaluate_all("""elements => elements.flatMap(element => {
        const node = element.firstChild;
        if (!node || node.nodeType !== Node.TEXT_NODE) return [];
        return [...node.textContent.matchAll(/\\S+/g)].filter(match => {
            const range = document.createRange();
            range.setStart(node, match.index);
            range.setEnd(node, match.index + match[0].length);
            return new Set([...range.getClientRects()].map(rect => Math.round(rect.top))).size > 1;
        }).map(match => match[0]);
    })""")


def test_example_with_early_audio(page):
    """The example whose audio was advanced by 120 ms (examples/README.md): said in words, with the fix."""
    from playwright.sync_api import expect

    page.locator("button.gallery-item:has(video[src*='audio_early_120ms'])").click()
    expect(page.locator("video").first).to_have_attribute("src", re.compile("audio_early_120ms"), timeout=30_000)
    page.get_by_role("button", name="Analyze").click()
    verdict = page.locator("#verdict h3")
    expect(verdict).to_have_text("Audio is 120 ms early: delay it by 120 ms (landmarks)", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#verdict")).to_contain_text("Corrected video below: audio delayed by 120 ms.")


def test_live_stream_monitor_until_stopped(page, tmp_path):
    from playwright.sync_api import expect

    stream = make_hls(CLIP, tmp_path / "hls")
    with TestServer() as server:
        server.add_segments("/vod", stream)
        server.add_live("/live/index.m3u8", stream, "/vod", loop=True)  # never ends
        page.get_by_role("tab", name="HLS stream").click()
        page.get_by_label("HLS playlist URL").fill(server.url("/live/index.m3u8"))
        page.get_by_label("Window (s)").fill("2")
        page.get_by_role("button", name="Start").click()

        rows = page.locator("#stream-windows").get_by_role("row").filter(has_text="landmarks")
        expect(rows.nth(1)).to_be_visible(timeout=RESULT_TIMEOUT_MS)  # a second window arrived
        page.get_by_role("button", name="Stop").click()
        time.sleep(1.0)  # a window being read when Stop was pressed may still land
        count, asked = rows.count(), len(server.requests)
        time.sleep(6.0)  # three more windows' worth of live stream
        assert rows.count() == count  # no new window after Stop
        assert len(server.requests) <= asked + 1  # and the stream is no longer being read
        page.screenshot(path=str(tmp_path / "stream.png"), full_page=True)


def test_webcam_recording_with_sound_reaches_the_pipeline(page):
    """Chromium's fake camera (a test pattern, no face) and microphone: the WebM recording with its sound is
    uploaded and decoded, and the user is told there is no face."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Video").click()
    page.get_by_role("button", name="Capture from camera").click()
    page.get_by_role("button", name="Click to Access Webcam").click()
    page.get_by_role("button", name="start recording").click()
    time.sleep(3.0)
    page.get_by_role("button", name="start recording").click()  # the same button, now labelled Stop
    expect(page.locator("video").first).to_have_attribute("src", re.compile(r"\.webm"), timeout=30_000)
    page.get_by_role("button", name="Analyze").click()
    expect(page.get_by_text("no face found in the video").first).to_be_visible(timeout=RESULT_TIMEOUT_MS)


def test_batch_scores_two_videos_in_a_readable_table(page, tmp_path):
    from playwright.sync_api import expect

    examples = Path(__file__).parent.parent / "examples"
    long_name = tmp_path / "a_long_recording_name_as_datasets_have_them_00067.mp4"  # one 50-letter word
    shutil.copy(examples / "pcavs_posesrc_00067.mp4", long_name)
    page.get_by_role("tab", name="Batch").click()
    videos = [str(long_name), str(examples / "videoretalking_face5.mp4")]
    page.locator("input[type=file][multiple]").set_input_files(videos)
    page.get_by_role("button", name="Score").click()
    expect(page.locator("#batch-summary")).to_contain_text("2 videos scored, 0 could not be", timeout=RESULT_TIMEOUT_MS)
    expect(page.locator("#batch-scores").get_by_role("row").filter(has_text="landmarks")).to_have_count(2)
    for width in (1400, 390):  # headers, names and verdicts uncut, on a desktop and a phone
        page.set_viewport_size({"width": width, "height": 1800})
        cells = page.locator("#batch-scores th span, #batch-scores .body-cell span")
        expect(cells.filter(has_text="videoretalking_face5.mp4").first).to_be_attached()
        assert _clipped(cells) == []
        other_columns = page.locator('#batch-scores th span, #batch-scores .body-cell:not([data-col="0"]) span')
        assert _words_split_across_lines(other_columns) == []  # file names may break; words elsewhere may not
    page.set_viewport_size({"width": 1400, "height": 1800})
    page.get_by_role("tab", name="Video").click()
