"""The app as its API users see it: launched on 127.0.0.1, called with gradio_client on a real clip."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
from syncnet import pipeline
from syncnet.media import load_media
from tests.app_server import running_app
from tests.hls_server import TestServer, make_hls
from tests.paths import CLIPS

pytestmark = pytest.mark.slow

CLIP = CLIPS / "pcavs_posesrc_00067.mp4"
EARLY = Path(__file__).resolve().parents[1] / "examples" / "pcavs_posesrc_00067_audio_early_120ms.mp4"


@pytest.fixture(scope="module")
def client(synthetic_weights):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
        with running_app() as url:
            yield Client(url, verbose=False)


def test_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/detect", "/analyze", "/stream"} <= set(endpoints)


def test_detect_returns_the_cli_json_and_matches_the_library(client):
    data = client.predict(handle_file(str(CLIP)), api_name="/detect")
    assert set(data) == {
        "input", "fps", "duration_s", "frames", "verdict", "results", "timing_s", "skipped", "protocol", "tracks"
    }
    assert data["input"] == CLIP.name  # the upload's name, not the server's path
    assert data["verdict"] == data["results"][0]["verdict"]  # syncnet's, the most trusted engine
    assert data["frames"] == 114 and data["skipped"] == []
    by_engine = {r["engine"]: r for r in data["results"]}
    assert set(by_engine) == {"syncnet", "fcn", "landmarks"}
    assert by_engine["fcn"]["offset_frames"] == by_engine["syncnet"]["offset_frames"]

    direct = pipeline.analyze_file(CLIP, ["landmarks"]).to_dict()  # the library in this process
    for ours in direct["results"]:  # the API adds nothing to the library's numbers
        theirs = by_engine[ours["engine"]]
        assert theirs["offset_frames"] == ours["offset_frames"]
        assert theirs["dists"] == pytest.approx(ours["dists"], rel=1e-6)
        assert theirs["confidence"] == pytest.approx(ours["confidence"], rel=1e-6)


def test_detect_with_one_engine_and_a_tolerance(client):
    data = client.predict(handle_file(str(CLIP)), ["landmarks"], "atsc", api_name="/detect")
    assert [r["engine"] for r in data["results"]] == ["landmarks"]
    assert data["results"][0]["tolerance_ms"] == [15, 45]
    custom = client.predict(handle_file(str(CLIP)), ["landmarks"], "+30,-90", api_name="/detect")
    assert custom["results"][0]["tolerance_ms"] == [30, 90]
    with pytest.raises(AppError, match="tolerance 'soon'"):
        client.predict(handle_file(str(CLIP)), ["landmarks"], "soon", api_name="/detect")


def test_analyze_returns_words_plots_crops_and_the_corrected_video(client):
    verdict, table, timing, distances, confidence, strip, corrected, details, shots, offsets = client.predict(
        handle_file(str(CLIP)), ["fcn", "landmarks"], api_name="/analyze"
    )
    assert verdict.startswith("### ") and "(fcn)" in verdict.splitlines()[0]  # the most trusted engine leads
    assert any(words in verdict for words in ("In sync", "early: delay it by", "late: advance it by", "No sync signal"))
    assert [row[0] for row in table["data"]] == ["fcn", "landmarks"]
    assert [row[0] for row in timing["data"]][:2] == ["decode", "faces"]
    assert [row[4] for row in shots["data"]] == ["fcn", "landmarks"]  # one face track, both engines
    for png in (distances, confidence, offsets):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert strip  # an image file of the crops
    if details["verdict"] in ("in_sync", "no_signal"):  # nothing to correct, or nothing to trust: no video
        assert corrected is None and "No corrected video" in verdict
    assert details["segment"]["stop_frame"] > details["segment"]["start_frame"]
    assert list(app.output_root().iterdir()) == []  # our copy of the corrected video is gone, Gradio serves its own
    for result in details["results"]:
        assert len(result["frame_confidence"]) > 0 and np.isfinite(result["frame_confidence"]).all()


def test_analyze_corrects_early_audio(client):
    outputs = client.predict(handle_file(str(EARLY)), ["landmarks"], api_name="/analyze")
    verdict, corrected, details = outputs[0], outputs[6], outputs[7]
    assert details["verdict"] == "audio_early"
    assert verdict.startswith("### Audio is 1") and "Corrected video below: audio delayed by" in verdict
    video = corrected["video"] if isinstance(corrected, dict) else corrected
    assert abs(load_media(video).duration_s - details["duration_s"]) < 1.0
    assert list(app.output_root().iterdir()) == []  # our copy of the corrected video is gone, Gradio serves its own


def test_bad_input_gets_a_clear_error_and_the_server_lives_on(client, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    with pytest.raises(AppError, match="notes.mp4"):
        client.predict(handle_file(str(text)), api_name="/detect")
    with pytest.raises(AppError, match="Upload or record a video first"):
        client.predict(None, api_name="/detect")
    assert client.predict(handle_file(str(CLIP)), ["landmarks"], api_name="/detect")["frames"] == 114


def test_stream_refuses_a_local_url(client):
    with pytest.raises(AppError, match="file"):
        client.predict("file:///etc/passwd", ["landmarks"], 2, 10, api_name="/stream")


def test_stream_endpoint_gives_a_result_per_window(client, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCNET_ALLOW_PRIVATE_HOSTS", "1")  # the app runs in this process
    stream = make_hls(CLIPS / "syncnet_example.avi", tmp_path / "hls", seconds=8)
    with TestServer() as server:
        server.add_live("/live/index.m3u8", stream, "/vod")  # a new 2 s segment every 2 s
        server.add_segments("/vod", stream)
        job = client.submit(server.url("/live/index.m3u8"), ["landmarks"], 4, 30, api_name="/stream")
        updates = list(job)  # one update per window, as they come
    # joined at the start (or a segment later on a slow machine): 8 s or 6 s of stream in 4 s windows
    assert len(updates) == 2
    for count, (table, latest) in enumerate(updates, 1):
        assert len(table["data"]) == count  # the table grows by one row per window
        assert table["data"][-1][:3] == [latest["t_start"], latest["t_end"], "landmarks"]
        assert latest["results"][0]["engine"] == "landmarks" and len(latest["results"][0]["dists"]) == 31
        assert latest["verdict"] == latest["results"][0]["verdict"] and table["data"][-1][3]  # words in the table
    spans = [(row[0], row[1]) for row in updates[-1][0]["data"]]
    assert spans[0] == (0.0, 4.0) and spans[1][0] == 4.0 and spans[1][1] in (6.0, 8.0)


@pytest.mark.parametrize("path", [Path(__file__).resolve().parents[1] / "app.py", Path("/etc/passwd"), CLIP.resolve()])
def test_only_the_apps_own_files_are_served(client, path):
    response = httpx.get(f"{client.src.rstrip('/')}/gradio_api/file={path}", timeout=10)
    assert response.status_code in (403, 404)
    assert b"import" not in response.content and b"root:" not in response.content


def test_stop_stream_ends_a_live_monitor(client, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCNET_ALLOW_PRIVATE_HOSTS", "1")
    stream = make_hls(CLIP, tmp_path / "hls")
    with TestServer() as server:
        server.add_segments("/vod", stream)
        server.add_live("/live/index.m3u8", stream, "/vod", loop=True)  # never ends by itself
        job = client.submit(server.url("/live/index.m3u8"), ["landmarks"], 2, 600, api_name="/stream")
        deadline = time.monotonic() + 120
        while not job.outputs() and time.monotonic() < deadline:  # wait for the first window
            time.sleep(0.2)
        assert job.outputs(), "no window arrived"
        client.predict(api_name="/stop_stream")
        stopped = time.monotonic()
        while not job.done() and time.monotonic() - stopped < 15:
            time.sleep(0.2)
        assert job.done()  # ended within seconds, not after 600 s of stream
        asked = len(server.requests)
        time.sleep(4.0)
        assert len(server.requests) == asked  # nothing more is read


def test_stopping_the_app_with_sigterm_removes_its_temp_folder(tmp_path):
    """`python app.py` stopped as a process manager stops it leaves nothing in the temp folder."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=Path(app.__file__).parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start within 60 s")
        assert list(tmp_path.glob("syncnet-app-*")), "the app keeps its outputs under TMPDIR"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        server.kill()
    assert list(tmp_path.glob("syncnet-app-*")) == []
