"""The pipeline call: engines loaded once, progress in order, the report's timing, segment and crops."""
import threading

import pytest

from syncnet import pipeline
from syncnet.errors import SyncNetError
from tests.paths import CLIPS

CLIP = CLIPS / "pcavs_posesrc_00067.mp4"


@pytest.fixture
def fresh_engines():
    pipeline.unload_engines()
    yield
    pipeline.unload_engines()


def test_engine_choices():
    assert pipeline.resolve_engines(None) == ["syncnet", "fcn", "landmarks"]
    assert pipeline.resolve_engines("all") == ["syncnet", "fcn", "landmarks"]
    assert pipeline.resolve_engines("fcn") == ["fcn"]
    assert pipeline.resolve_engines(["landmarks", "fcn", "landmarks"]) == ["landmarks", "fcn"]
    with pytest.raises(SyncNetError, match="unknown engine 'nope'"):
        pipeline.resolve_engines(["nope"])
    with pytest.raises(SyncNetError, match="at least one engine"):
        pipeline.resolve_engines([])


def test_engines_are_loaded_once_and_missing_weights_reported(fresh_engines, monkeypatch, tmp_path):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "missing.model"))
    first, skipped = pipeline.get_engines("all")
    again, _ = pipeline.get_engines(["landmarks"])
    assert [e.name for e in first] == ["landmarks"] and again[0] is first[0]
    assert [s.engine for s in skipped] == ["syncnet", "fcn"]
    assert all("SYNCNET_WEIGHTS" in s.reason and "no such file" in s.reason for s in skipped)
    status = pipeline.engine_status()
    assert [(name, loaded) for name, loaded, _ in status] == [("syncnet", False), ("fcn", False), ("landmarks", True)]


@pytest.mark.slow
def test_analyze_file_reports_progress_timing_segment_and_crops(fresh_engines):
    steps = []
    report = pipeline.analyze_file(CLIP, ["landmarks"], progress=lambda fraction, what: steps.append((fraction, what)))
    fractions = [fraction for fraction, _ in steps]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert steps[0][1] == "decoding" and steps[-1][1] == "done"
    assert [what for _, what in steps[1:-1]] == [f"faces and engines: {s} s of 5 s" for s in (1, 2, 3, 4, 5)]
    assert set(report.timing_s) == {"decode", "faces", "mfcc", "landmarks", "total"}
    assert all(seconds >= 0 for seconds in report.timing_s.values())
    assert report.results[0].time_s == report.timing_s["landmarks"]
    start, stop = report.segment
    assert 0 <= start < stop <= report.frames == 114
    assert report.crops.shape == (8, 224, 224, 3) and report.mouths.shape[0] == 8
    assert len(report.results[0].frame_confidence) > 0


@pytest.mark.slow
def test_engines_load_while_the_faces_are_tracked_and_their_failure_is_raised(monkeypatch):
    """The engines load in a thread of their own, started before decoding; if loading fails (a bug), the analysis
    raises that error instead of hanging or reporting without engines."""
    import threading

    loaded_in = []

    def failing_load(names=None):
        loaded_in.append(threading.current_thread().name)
        raise ZeroDivisionError("a bug while loading")

    monkeypatch.setattr(pipeline, "get_engines", failing_load)
    with pytest.raises(ZeroDivisionError, match="a bug while loading"):
        pipeline.analyze_file(CLIP, ["landmarks"])
    assert len(loaded_in) == 1 and loaded_in[0].startswith("syncnet-load")


STAGE_THREADS = ("syncnet-faces", "syncnet-decode")


def test_ctrl_c_while_a_stage_thread_starts_reaches_the_caller_and_stops_the_stages(fresh_engines, monkeypatch):
    """Ctrl-C can land while `Thread.start` waits for the new thread to run: the interrupt still reaches the caller
    (not an error from closing a decoder that another thread is reading: a batch would then go on to the next video),
    and no stage thread is left behind."""
    real_start = threading.Thread.start

    def start_then_interrupt(thread: threading.Thread) -> None:
        real_start(thread)
        if thread.name == "syncnet-faces":
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pipeline.analyze_file(CLIP, ["landmarks"])
    left = [t for t in threading.enumerate() if t.name in STAGE_THREADS]
    for thread in left:
        thread.join(timeout=10)
    assert not [t.name for t in left if t.is_alive()]
