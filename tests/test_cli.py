"""`python -m syncnet` as a user runs it: a subprocess, JSON on stdout, exit codes, one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hls_server import TestServer, make_hls
from tests.media_tools import ffmpeg
from tests.paths import CLIPS

ROOT = Path(__file__).resolve().parents[1]
CLIP = CLIPS / "pcavs_posesrc_00067.mp4"
RESULT_KEYS = {
    "engine", "offset_frames", "offset_ms", "calibrated_offset_frames", "confidence", "min_dist", "dists", "time_s",
    "verdict", "tolerance_ms",
}
VERDICTS = {"in_sync", "audio_early", "audio_late", "no_signal"}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI with no SyncNet weights reachable (empty HF cache, offline) unless ``env`` provides them."""
    base = {k: v for k, v in os.environ.items() if k not in ("SYNCNET_WEIGHTS", "SYNCNET_ALLOW_PRIVATE_HOSTS")}
    base.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "syncnet", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**base, **(env or {})},
    )


def assert_bad_input(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr naming the problem, no traceback."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["required"]),
        (["detect"], ["video"]),
        (["detect", "x.mp4", "--engine", "nope"], ["--engine", "nope"]),
        (["stream", "http://example.com/a.m3u8", "--window", "0"], ["--window"]),
    ],
)
@pytest.mark.slow
def test_bad_arguments_exit_2_with_one_line(args, words):
    assert_bad_input(run_cli(*args), *words)


@pytest.mark.slow
def test_missing_file_exits_2_with_its_name(tmp_path):
    # (the corpus of broken files, through the CLI and the API, is in test_bad_inputs.py)
    assert_bad_input(run_cli("detect", str(tmp_path / "missing.mp4")), "missing.mp4")


@pytest.mark.slow
def test_fix_may_not_overwrite_the_input():
    assert_bad_input(run_cli("detect", str(CLIP), "--fix", str(CLIP)), "--fix")


@pytest.mark.slow
def test_detect_json_lists_engines_that_cannot_run(tmp_path):
    done = run_cli("detect", str(CLIP), "--json", env={"HF_HOME": str(tmp_path / "hf")})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is exactly one JSON object
    assert set(report) == {
        "input", "fps", "duration_s", "frames", "verdict", "results", "timing_s", "skipped", "protocol", "tracks"
    }
    assert report["input"] == str(CLIP) and report["fps"] == 25.0
    assert report["frames"] == 114 and report["duration_s"] == pytest.approx(4.56)
    assert [r["engine"] for r in report["results"]] == ["landmarks"]
    assert {s["engine"] for s in report["skipped"]} == {"syncnet", "fcn"}
    assert all(s["reason"] for s in report["skipped"])
    landmarks = report["results"][0]
    assert set(landmarks) == RESULT_KEYS and len(landmarks["dists"]) == 31
    assert landmarks["verdict"] == report["verdict"] in VERDICTS and landmarks["tolerance_ms"] == [45, 125]
    assert landmarks["offset_ms"] == 40.0 * landmarks["offset_frames"]
    assert landmarks["confidence"] > 0
    assert {"decode", "faces", "landmarks"} <= set(report["timing_s"])
    assert done.stderr == ""  # no terminal: no progress bar; skipped engines are in the JSON, not logged


def audio_early(src: Path, dst: Path, ms: int) -> Path:
    """A copy of ``src`` whose audio leads the lips by ``ms``: the first ``ms`` of sound cut, the video kept."""
    ffmpeg("-i", str(src), "-map", "0:v", "-map", "0:a", "-c:v", "copy",
           "-af", f"atrim=start={ms / 1000},asetpts=PTS-STARTPTS,apad", "-shortest", "-c:a", "aac", str(dst),
           timeout=60)
    return dst


@pytest.mark.slow
def test_detect_says_it_in_words_and_fix_puts_it_back_in_sync(tmp_path):
    early = audio_early(CLIP, tmp_path / "early.mp4", 120)
    fixed = tmp_path / "fixed.mp4"
    done = run_cli("detect", str(early), "--engine", "landmarks", "--fix", str(fixed))
    assert done.returncode == 0, done.stderr
    assert "landmarks: audio is 120 ms early: delay it by 120 ms (offset +3 frames" in done.stdout
    assert f"wrote {fixed}: audio delayed by 120 ms" in done.stderr
    again = json.loads(run_cli("detect", str(fixed), "--engine", "landmarks", "--json").stdout)
    assert again["results"][0]["offset_frames"] == 0


@pytest.fixture(scope="module")
def hls_server(tmp_path_factory):
    """8 s of a real clip as HLS (2 s segments) on 127.0.0.1: finished at /vod, live (growing) at /live."""
    stream = make_hls(CLIPS / "syncnet_example.avi", tmp_path_factory.mktemp("hls"), seconds=8)
    with TestServer() as server:
        server.add_stream("/vod", stream)
        server.add_live("/live/index.m3u8", stream, "/vod", interval=1.0)
        yield server


def _windows(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.slow
def test_stream_finished_playlist_window_by_window(hls_server):
    url = hls_server.url("/vod/index.m3u8")
    done = run_cli("stream", url, "--engine", "landmarks", "--window", "4", "--json", "--allow-private-hosts")
    windows = _windows(done)
    assert [(w["t_start"], w["t_end"]) for w in windows] == [(0.0, 4.0), (4.0, 8.0)]
    for window in windows:
        assert set(window) == {"t_start", "t_end", "verdict", "results", "skipped"}
        assert window["verdict"] == window["results"][0]["verdict"] in VERDICTS
        assert [r["engine"] for r in window["results"]] == ["landmarks"]
        assert set(window["results"][0]) == RESULT_KEYS and len(window["results"][0]["dists"]) == 31


@pytest.mark.slow
def test_stream_live_playlist_with_the_environment_switch(hls_server):
    url = hls_server.url("/live/index.m3u8")
    done = run_cli("stream", url, "--engine", "landmarks", "--window", "2", "--max-seconds", "6", "--json",
                   env={"SYNCNET_ALLOW_PRIVATE_HOSTS": "1"})
    windows = _windows(done)
    assert 1 <= len(windows) <= 3
    assert all(w["t_end"] - w["t_start"] == pytest.approx(2.0, abs=0.1) for w in windows)
    assert all(w["results"] or w.get("error") for w in windows)
    assert any(w["results"] for w in windows)


@pytest.mark.slow
@pytest.mark.parametrize("url, words", [("file:///etc/passwd", ["file"]), ("/vod/index.m3u8", ["loopback"])])
def test_stream_refused_urls_exit_2(hls_server, url, words):
    url = hls_server.url(url) if url.startswith("/") else url
    asked = len(hls_server.requests)
    assert_bad_input(run_cli("stream", url, "--engine", "landmarks", "--json"), *words)
    assert len(hls_server.requests) == asked  # refused before anything was fetched
