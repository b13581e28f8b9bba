"""The report: DESIGN.md's JSON shape, the offset in words (sign convention), and the pictures."""
import json

import numpy as np
import pytest

from syncnet import plots
from syncnet.constants import FPS
from syncnet.engines import Skipped
from syncnet.report import (
    Report,
    TrackReport,
    WindowResult,
    describe_failed_window,
    describe_fix,
    describe_offset,
    describe_verdict,
    result_rows,
    track_lines,
    window_to_dict,
)
from syncnet.scoring import OFFSETS, Calibration, summarize
from syncnet.verdict import SURE_S, TOO_SHORT, Tolerance


def _result(engine: str, offset: int, windows: int = 12, calibration: Calibration = Calibration()):
    """Distances whose minimum sits at ``offset`` in every window, plus some noise."""
    rng = np.random.default_rng(offset + 20)
    dists = 10.0 + np.abs(OFFSETS - offset)[None, :] + 0.1 * rng.random((windows, len(OFFSETS)))
    return summarize(engine, dists, calibration, time_s=0.25)


def _report() -> Report:
    return Report(
        input="clip.mp4",
        duration_s=4.56,
        frames=114,
        results=[_result("syncnet", 3), _result("landmarks", -2, calibration=Calibration(1.0, 0.5))],
        timing_s={"decode": 0.1, "faces": 1.5, "mfcc": 0.01, "syncnet": 0.25, "landmarks": 0.25},
        skipped=[Skipped("fcn", "weights unavailable: no network")],
        segment=(2, 110),
    )


@pytest.mark.parametrize(
    "offset, words",
    [
        (3, "audio is 120 ms early: delay it by 120 ms"),
        (-4, "audio is 160 ms late: advance it by 160 ms"),
        (-2, "in sync: 80 ms late is below what viewers notice"),  # ITU-R BT.1359: up to 125 ms late
        (1, "in sync: 40 ms early is below what viewers notice"),  # and up to 45 ms early
        (0, "in sync"),
        (15, "audio is 600 ms early: delay it by 600 ms"),
    ],
)
def test_offset_in_words_follows_the_sign_convention_and_the_tolerance(offset, words):
    assert describe_offset(_result("syncnet", offset)) == words


def test_fix_in_words():
    assert describe_fix(3) == "audio delayed by 120 ms"
    assert describe_fix(-2) == "audio advanced by 80 ms"
    assert describe_fix(2.75) == "audio delayed by 110 ms"
    assert describe_fix(0) == "audio left as it is (in sync)"


def test_json_has_exactly_the_cli_contract_shape():
    data = json.loads(_report().to_json())
    assert set(data) == {
        "input", "fps", "duration_s", "frames", "verdict", "results", "timing_s", "skipped", "protocol", "tracks"
    }
    assert data["fps"] == 25.0 and data["frames"] == 114 and data["input"] == "clip.mp4"
    assert data["verdict"] == "audio_early"  # syncnet's, the most trusted engine that ran
    first = data["results"][0]
    assert set(first) == {
        "engine", "offset_frames", "offset_ms", "calibrated_offset_frames", "confidence", "min_dist", "dists", "time_s",
        "verdict", "tolerance_ms",
    }
    assert first["verdict"] == "audio_early" and first["tolerance_ms"] == [45.0, 125.0]
    assert data["results"][1]["verdict"] == "in_sync"  # landmarks: 60 ms late
    assert first["engine"] == "syncnet" and first["offset_frames"] == 3 and first["offset_ms"] == 120.0
    assert len(first["dists"]) == 31
    assert int(np.argmin(first["dists"])) - 15 == 3  # dists run over offsets -15..+15
    assert first["confidence"] == pytest.approx(np.median(first["dists"]) - min(first["dists"]))
    assert data["results"][1]["offset_ms"] == -80.0
    assert data["results"][1]["calibrated_offset_frames"] == pytest.approx(-1.5, abs=0.5)
    assert data["skipped"] == [{"engine": "fcn", "reason": "weights unavailable: no network"}]
    assert set(data["timing_s"]) >= {"decode", "faces", "syncnet", "landmarks"}


def test_detail_adds_per_window_confidence_and_segment():
    data = _report().to_dict(detail=True)
    assert data["segment"] == {"start_frame": 2, "stop_frame": 110}
    assert len(data["results"][0]["frame_confidence"]) == 12
    assert data["results"][0]["verdict"] == "audio_early"
    assert data["results"][0]["verdict_text"] == "audio is 120 ms early: delay it by 120 ms"


def test_fix_follows_the_preferred_engines_verdict():
    report = _report()
    assert report.fix_offset_frames() == pytest.approx(3.0)  # syncnet beats landmarks: 120 ms early, delayed
    report.results = report.results[1:]
    assert report.verdict == "in_sync" and report.fix_offset_frames() == 0  # audio left where it is
    report.results = [_result("landmarks", -6, calibration=Calibration(1.0, 0.5))]  # 220 ms late
    assert report.verdict == "audio_late" and report.fix_offset_frames() == pytest.approx(-5.5)
    report.results = []
    assert report.verdict is None and report.fix_offset_frames() is None
    assert "no engine could run" in report.no_fix_reason()


def test_stream_line_carries_window_times_results_and_errors():
    line = window_to_dict(5.0, 10.0, _report())
    assert set(line) == {"t_start", "t_end", "verdict", "results", "skipped"}
    assert line["results"][0]["offset_frames"] == 3 and line["verdict"] == "audio_early"
    assert line["results"][0]["tolerance_ms"] == [45.0, 125.0]
    failed = window_to_dict(10.0, 15.0, None, error="no face found")
    assert failed["results"] == [] and failed["error"] == "no face found" and failed["verdict"] is None
    silent = window_to_dict(15.0, 20.0, None, error="the soundtrack is silent", silent=True)
    assert silent["verdict"] == "no_signal" and silent["results"] == []


def test_result_rows_put_engines_side_by_side():
    rows = result_rows(_report())
    assert [row[0] for row in rows] == ["syncnet", "landmarks"]
    assert rows[0][1:4] == ["audio is 120 ms early: delay it by 120 ms", 3, 120.0]


def test_plots_and_crop_strip():
    report = _report()
    distances = plots.render(plots.plot_distances(report.results))
    confidence = plots.render(plots.plot_confidence(report.results, report.segment[0]))
    assert distances.shape == (280, 720, 3) and confidence.shape == (280, 720, 3)  # 2 panels; one wide axis
    for image in (distances, confidence):
        assert image.dtype == np.uint8 and image.std() > 10  # something drawn on the white
    crops = np.full((30, 224, 224, 3), 200, np.uint8)
    mouths = np.full((30, 48, 96, 3), 50, np.uint8)
    strip = plots.crop_strip(crops, mouths)
    # 8 square faces, 112 px high; 8 mouths twice as wide as high: the face row is padded to the mouth row's width
    assert strip.dtype == np.uint8 and strip.shape == (2 * plots.STRIP_HEIGHT, 8 * 2 * plots.STRIP_HEIGHT, 3)
    assert strip[0, 0, 0] == 200 and strip[plots.STRIP_HEIGHT, 0, 0] == 50
    assert plots.crop_strip(None, None) is None


def _windowed_report() -> Report:
    """Three 5 s windows: syncnet sure of +3 frames (with landmarks), syncnet faint at +9 (no signal), nothing."""
    faint = summarize("syncnet", 10.0 + 0.01 * np.abs(OFFSETS - 9)[None, :].repeat(121, axis=0))  # 5 s of windows
    report = _report()
    report.tracks = [TrackReport(0, 375, report.results, True, "on the left")]
    report.windows = [WindowResult(0.0, 5.0, report.results), WindowResult(5.0, 10.0, [faint]),
                      WindowResult(10.0, 15.0, [])]
    return report


def test_window_lines_lead_with_the_windows_verdict_in_the_reports_words():
    report = _windowed_report()
    sure, faint, empty = [line for line in track_lines(report) if line.startswith("  window")]
    assert sure.startswith("  window    0.00 -    5.00 s: audio is 120 ms early: delay it by 120 ms (syncnet); "
                           "syncnet +3")
    assert describe_verdict(report) in sure  # the window has the report's results: the same words
    assert faint.startswith("  window    5.00 -   10.00 s: no sync signal: this sound does not follow these lips "
                            "(syncnet); syncnet +9 (confidence 0.09)")
    assert empty == "  window   10.00 -   15.00 s: too little of a speaking face to score"
    report.tolerance = Tolerance(200.0, 200.0)
    assert "s: in sync: 120 ms early is below what viewers notice (syncnet); " in track_lines(report)[1]


def test_no_signal_on_a_short_input_is_said_as_too_short_to_tell():
    faint = np.abs(OFFSETS - 9)[None, :] * 0.01 + 10.0
    short, long = (summarize("syncnet", faint.repeat(rows, axis=0)) for rows in (int(SURE_S * FPS) - 1, 121))
    assert describe_offset(short) == f"no sync signal: {TOO_SHORT}"
    assert "too short to tell whether this sound follows these lips" in TOO_SHORT
    assert describe_offset(long) == "no sync signal: this sound does not follow these lips"
    report = _report()
    report.results = [short]
    assert report.no_fix_reason() == f"no sync signal ({TOO_SHORT}), so there is no offset to correct"


def test_track_lines_lead_with_the_tracks_verdict():
    report = _windowed_report()
    report.tracks.append(TrackReport(375, 400, [], False, "on the right"))
    scored, unscored = [line for line in track_lines(report) if line.startswith("  track")]
    assert scored.startswith("  track    0.00 -   15.00 s, face on the left, speaking: audio is 120 ms early: delay "
                             "it by 120 ms (syncnet); syncnet +3")
    assert unscored.endswith("face on the right, not speaking: too little of a speaking face to score")


def test_a_window_without_a_report_is_worded_alike_in_the_cli_and_the_app():
    assert describe_failed_window("the soundtrack is silent", silent=True) == "no sync signal: the sound is silent"
    assert describe_failed_window("no face found") == "no face found"
    assert describe_failed_window(None) == "the window could not be analysed"


def test_offset_plot_greys_out_windows_without_a_signal():
    report = _windowed_report()
    lines = {line.get_label(): line for line in plots.plot_offsets(report).axes[0].get_lines()}
    assert list(lines["syncnet"].get_xdata()) == [2.5]  # the faint window is not on syncnet's line
    assert list(lines["no sync signal"].get_xdata()) == [7.5]
    assert lines["no sync signal"].get_markerfacecolor() == "none"
    assert plots.render(plots.plot_offsets(report)).dtype == np.uint8
