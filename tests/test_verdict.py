"""The verdict: its rule, the tolerance presets and their parsing, the thresholds in the card, and every output."""
from __future__ import annotations

import json

import numpy as np
import pytest

from syncnet import card
from syncnet.engines import ENGINE_NAMES
from syncnet.errors import BadArgument
from syncnet.report import Report, summary_lines
from syncnet.scoring import OFFSETS, Calibration, summarize
from syncnet.verdict import (
    AUDIO_EARLY,
    AUDIO_LATE,
    DEFAULT_TOLERANCE,
    IN_SYNC,
    NO_SIGNAL,
    PRESETS,
    Tolerance,
    describe,
    fix_frames,
    has_signal,
    judge,
    parse_tolerance,
    verdict_of,
)
from tests.hls_server import TestServer, make_hls
from tests.media_tools import ffmpeg
from tests.paths import CLIPS
from tests.test_cli import assert_bad_input, run_cli


@pytest.mark.parametrize(
    "offset_ms, confidence, expected",
    [
        (0.0, 5.0, IN_SYNC),
        (45.0, 5.0, IN_SYNC),  # the edges belong to the tolerance
        (-125.0, 5.0, IN_SYNC),
        (45.5, 5.0, AUDIO_EARLY),
        (-125.5, 5.0, AUDIO_LATE),
        (400.0, 0.99, NO_SIGNAL),  # below the threshold, whatever the offset
        (0.0, 0.99, NO_SIGNAL),
        (0.0, float("nan"), NO_SIGNAL),
        (0.0, 1.0, IN_SYNC),  # at the threshold: a signal
    ],
)
def test_rule_with_the_default_tolerance(offset_ms, confidence, expected):
    assert judge(offset_ms, confidence, threshold=1.0) == expected


def test_default_is_itu_detectability_and_the_presets_are_the_recommendations():
    assert DEFAULT_TOLERANCE == PRESETS["itu"] == parse_tolerance(None)
    windows = {name: tolerance.as_list() for name, tolerance in PRESETS.items()}
    assert windows == {"itu": [45, 125], "itu-accept": [90, 185], "ebu-r37": [40, 60], "atsc": [15, 45]}
    assert judge(60.0, 5.0, 1.0, PRESETS["itu-accept"]) == IN_SYNC
    assert judge(-50.0, 5.0, 1.0, PRESETS["atsc"]) == AUDIO_LATE
    assert judge(-50.0, 5.0, 1.0, PRESETS["ebu-r37"]) == IN_SYNC


@pytest.mark.parametrize(
    "text, window",
    [("ATSC", [15, 45]), (" ebu-r37 ", [40, 60]), ("40,60", [40, 60]), ("+45,-125", [45, 125]), ("0,0", [0, 0]),
     ("22.5,80", [22.5, 80])],
)
def test_parse_presets_and_two_numbers(text, window):
    assert parse_tolerance(text).as_list() == window


@pytest.mark.parametrize(
    "text, words",
    [("itu2", "unknown tolerance"), ("40", "unknown tolerance"), ("1,2,3", "unknown tolerance"),
     ("a,60", "not two numbers"), ("-10,60", "EARLY_MS must be"), ("40,nan", "EARLY_MS must be"),
     ("40,5000", "LATE_MS within"), ("", "unknown tolerance")],
)
def test_bad_tolerances_are_refused_in_one_line(text, words):
    with pytest.raises(BadArgument, match=words) as refused:
        parse_tolerance(text)
    assert "\n" not in str(refused.value)


def test_words_follow_the_verdict():
    assert describe(IN_SYNC, -40.0) == "in sync: 40 ms late is below what viewers notice"
    assert describe(IN_SYNC, 3.0) == "in sync"
    assert describe(NO_SIGNAL, 200.0) == "no sync signal: this sound does not follow these lips"
    assert describe(AUDIO_EARLY, 200.0) == "audio is 200 ms early: delay it by 200 ms"
    assert describe(AUDIO_LATE, -163.0) == "audio is 160 ms late: advance it by 160 ms"


def test_corrected_video_shifts_only_out_of_sync_audio():
    assert fix_frames(NO_SIGNAL, 200.0) is None  # nothing to trust: no corrected video
    assert fix_frames(IN_SYNC, -80.0) == 0.0  # below what viewers notice: the audio stays where it is
    assert fix_frames(AUDIO_EARLY, 200.0) == pytest.approx(5.0)  # delay by 200 ms
    assert fix_frames(AUDIO_LATE, -163.0) == pytest.approx(-4.0)  # said and corrected to 10 ms: 160 ms


def test_every_engine_has_a_threshold_in_the_card():
    thresholds = card.load_card()["no_signal_threshold"]
    assert set(thresholds) == set(ENGINE_NAMES)
    assert all(card.no_signal_threshold(name) == thresholds[name] > 0 for name in ENGINE_NAMES)
    assert card.no_signal_threshold("an engine the card does not know") == 0.0


def _result(engine: str, offset: int, confidence_scale: float, bias: float = 0.0, windows: int = 125):
    """Distances whose minimum sits at ``offset``: confidence = median - min = confidence_scale * 8."""
    dists = 10.0 + confidence_scale * np.abs(OFFSETS - offset)[None, :].repeat(windows, axis=0)
    return summarize(engine, dists, Calibration(1.0, bias))


def test_result_verdict_uses_that_engines_threshold():
    low = card.no_signal_threshold("landmarks", 125)
    weak = _result("landmarks", 4, 0.5 * low / 8)
    strong = _result("landmarks", 4, 2.0 * low / 8)
    assert weak.confidence < low <= strong.confidence
    assert verdict_of(weak) == NO_SIGNAL and verdict_of(strong) == AUDIO_EARLY
    assert verdict_of(_result("landmarks", 4, 2.0 * low / 8, bias=-3.5)) == IN_SYNC  # calibrated: +0.5 frame
    # a chance peak shrinks as 1/sqrt(frames): 4 times the frames, half the threshold
    assert card.no_signal_threshold("landmarks", 500) == pytest.approx(low / 2)
    assert verdict_of(_result("landmarks", 4, 0.6 * low / 8, windows=500)) == AUDIO_EARLY
    assert card.no_signal_threshold("syncnet", 500) == card.no_signal_threshold("syncnet")  # published: fixed


def test_has_signal_is_the_verdict_not_being_no_signal_whatever_the_tolerance():
    low = card.no_signal_threshold("landmarks", 125)
    weak, strong = _result("landmarks", 4, 0.9 * low / 8), _result("landmarks", 4, 1.1 * low / 8)
    assert not has_signal(weak) and has_signal(strong)
    for tolerance in [*PRESETS.values(), Tolerance(0.0, 0.0), Tolerance(600.0, 600.0)]:
        assert verdict_of(weak, tolerance) == NO_SIGNAL != verdict_of(strong, tolerance)


def test_top_level_verdict_is_the_most_trusted_engines():
    landmarks = _result("landmarks", -5, 1.0)  # 200 ms late, sure
    fcn = _result("fcn", 0, 1.0)
    report = Report("clip.mp4", 4.0, 100, [landmarks, fcn], {}, [])
    assert report.verdict == IN_SYNC  # fcn outranks landmarks
    report.tolerance = Tolerance(0.0, 0.0)
    data = report.to_dict()
    assert data["verdict"] == IN_SYNC and [r["tolerance_ms"] for r in data["results"]] == [[0, 0], [0, 0]]
    assert [r["verdict"] for r in data["results"]] == [AUDIO_LATE, IN_SYNC]
    assert summary_lines(report)[0].startswith("  verdict: in sync (fcn); tolerance custom")
    report.results = []
    assert report.to_dict()["verdict"] is None  # no engine ran: nothing was judged (see "skipped")


@pytest.mark.parametrize(
    "args, words",
    [
        (["detect", "x.mp4", "--tolerance", "itu3"], ["--tolerance", "itu3"]),
        (["detect", "x.mp4", "--tolerance=-5,60"], ["--tolerance", "EARLY_MS"]),
        (["stream", "http://example.com/a.m3u8", "--tolerance", "1,2,3"], ["--tolerance"]),
    ],
)
def test_cli_refuses_bad_tolerances_with_exit_2_and_one_line(args, words):
    assert_bad_input(run_cli(*args), *words)


def test_api_refuses_a_bad_tolerance_before_decoding(tmp_path):
    import syncnet

    with pytest.raises(BadArgument, match="tolerance"):
        syncnet.analyze(tmp_path / "not even there.mp4", engines=["landmarks"], tolerance="sometimes")


@pytest.fixture(scope="module")
def mismatched(tmp_path_factory):
    """One clip's face with another recording's speech (its own sound dropped), cut to the shorter."""
    out = tmp_path_factory.mktemp("mismatched") / "face_of_one_voice_of_another.mp4"
    ffmpeg("-i", str(CLIPS / "pcavs_posesrc_00067.mp4"), "-i", str(CLIPS / "pcavs_audiosrc_00086.mp4"),
           "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(out))
    return out


@pytest.mark.slow
def test_detect_json_says_no_signal_for_another_recordings_speech(mismatched):
    done = run_cli("detect", str(mismatched), "--engine", "landmarks", "--json", "--tolerance", "ebu-r37")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (landmarks,) = report["results"]
    assert landmarks["verdict"] == report["verdict"] == NO_SIGNAL
    assert landmarks["tolerance_ms"] == [40, 60]
    assert landmarks["confidence"] < card.no_signal_threshold("landmarks")


@pytest.mark.slow
def test_genuine_clip_has_a_signal_and_no_signal_writes_no_corrected_video(mismatched, tmp_path):
    import syncnet

    genuine = syncnet.analyze(CLIPS / "pcavs_posesrc_00067.mp4", engines=["landmarks"])
    assert genuine.verdict in (IN_SYNC, AUDIO_EARLY, AUDIO_LATE)
    assert genuine.results[0].confidence >= card.no_signal_threshold("landmarks")
    fixed = tmp_path / "fixed.mp4"
    done = run_cli("detect", str(mismatched), "--engine", "landmarks", "--fix", str(fixed))
    assert done.returncode == 2 and not fixed.exists()
    assert "no sync signal: this sound does not follow these lips" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        "syncnet: error: no corrected video: no sync signal (this sound does not follow these lips), "
        "so there is no offset to correct"
    )


@pytest.mark.slow
def test_stream_windows_carry_verdicts_and_a_silent_window_says_no_signal(tmp_path):
    """8 s of a real clip as HLS, its sound muted after 4 s: window 1 is judged, window 2 has no signal."""
    muted = tmp_path / "muted.mkv"
    ffmpeg("-i", str(CLIPS / "syncnet_example.avi"), "-t", "8", "-c:v", "copy",
           "-af", "volume=enable='gte(t,4)':volume=0", "-c:a", "pcm_s16le", str(muted))
    stream = make_hls(muted, tmp_path / "hls")
    with TestServer() as server:
        server.add_stream("/vod", stream)
        done = run_cli("stream", server.url("/vod/index.m3u8"), "--engine", "landmarks", "--window", "4", "--json",
                       "--allow-private-hosts", "--tolerance", "atsc")
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    (landmarks,) = first["results"]
    assert first["verdict"] == landmarks["verdict"] != NO_SIGNAL and landmarks["tolerance_ms"] == [15, 45]
    assert second["verdict"] == NO_SIGNAL and second["results"] == [] and "silent" in second["error"]
