"""The engine registry: unknown names are refused, unavailable engines are reported, not dropped; and the engine
contract for ``EngineInput.rows``: every engine returns the rows asked for, as its full run computes them."""
import re
from dataclasses import replace

import numpy as np
import pytest

from syncnet import engines
from syncnet.audio import mfcc
from syncnet.constants import SAMPLES_PER_FRAME
from syncnet.engines import (
    ENGINE_NAMES,
    Engine,
    EngineInput,
    EngineUnavailable,
    Skipped,
    load_engine,
    load_engines,
    row_span,
)
from syncnet.errors import EngineInputError, SyncNetError
from syncnet.fcn import PRECISION_ENV
from syncnet.landmarks import NUM_LIP_FEATURES
from syncnet.scoring import SyncResult, summarize
from tests.paths import SYNCNET_REF

ROWS_FRAMES = 12  # the fixture's first 12 frames: 7 lip windows, quick for every engine
# The SyncNet engines' rows are the same operations on the same data as the full run's, on batches of another size,
# which MKL/oneDNN may sum in another order: equal to float32 rounding (about 1e-7 relative).
ROWS_RTOL = {"syncnet": 1e-5, "fcn": 1e-5, "landmarks": 0.0}


def test_unknown_engine_is_refused():
    with pytest.raises(SyncNetError, match="unknown engine 'nope'"):
        load_engines(["nope"])


def test_unavailable_engine_is_listed_as_skipped(monkeypatch):
    def factory():
        raise EngineUnavailable("weights unavailable: no network")

    monkeypatch.setitem(engines.ENGINE_FACTORIES, "broken", "tests.test_engines:_unavailable")
    monkeypatch.setattr("tests.test_engines._unavailable", factory, raising=False)
    loaded, skipped = load_engines(["broken"])
    assert loaded == []
    assert skipped == [Skipped("broken", "weights unavailable: no network")]


def rows_input(frames: int = ROWS_FRAMES) -> EngineInput:
    """The SyncNet fixture's first ``frames`` frames (RGB crops, audio, MFCC) with random lip shapes."""
    crops = np.ascontiguousarray(np.load(SYNCNET_REF / "input.npz")["frames_bgr"][:frames, ..., ::-1])
    samples = np.load(SYNCNET_REF / "input.npz")["audio_int16"][: frames * SAMPLES_PER_FRAME]
    audio = samples.astype(np.float32) / 32768.0
    lips = np.random.default_rng(0).standard_normal((frames, NUM_LIP_FEATURES)).astype(np.float32)
    return EngineInput(crops, audio, mfcc(audio), lips)


def row_ranges(n: int) -> list[tuple[int, int]]:
    """Ranges of rows to ask an engine scoring ``n`` windows for: inside, over the start, over the end."""
    return [(2, n - 3), (-4, n // 2), (n // 2, n + 6)]


def runs_with_rows(engine: Engine, inputs: EngineInput) -> list[tuple[SyncResult, np.ndarray]]:
    """The engine's result for each of :func:`row_ranges`, and the rows of its full result that it must hold."""
    full = engine.run(inputs).window_dists
    n = len(full)
    return [(engine.run(replace(inputs, rows=(lo, hi))), full[max(lo, 0) : min(hi, n)]) for lo, hi in row_ranges(n)]


@pytest.mark.parametrize(
    ("rows", "span"), [(None, (0, 10)), ((0, 10), (0, 10)), ((2, 5), (2, 5)), ((-3, 4), (0, 4)), ((8, 40), (8, 10))]
)
def test_row_span_clips_the_range_to_the_windows(rows, span):
    assert row_span(rows, 10) == span


@pytest.mark.parametrize("rows", [(4, 4), (6, 2), (10, 12), (-5, 0)])
def test_row_span_refuses_a_range_without_rows(rows):
    with pytest.raises(EngineInputError, match=re.escape(f"rows [{rows[0]}, {rows[1]}) select none of")):
        row_span(rows, 10)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_returns_the_rows_asked_for(synthetic_engines, monkeypatch, name):
    """Rows inside, over the start and over the end equal the full run's; the summary is that of those rows."""
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    engine = load_engine(name)
    for part, expected in runs_with_rows(engine, rows_input()):
        np.testing.assert_allclose(part.window_dists, expected, rtol=ROWS_RTOL[name], atol=0)
        reference = summarize(name, expected)
        assert part.offset_frames == reference.offset_frames and len(part.frame_confidence) == len(expected)
        assert part.min_dist == pytest.approx(reference.min_dist, rel=ROWS_RTOL[name], abs=0)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_every_engine_refuses_rows_outside_the_input(synthetic_engines, name):
    with pytest.raises(EngineInputError, match=re.escape("rows [20, 30) select none of")):
        load_engine(name).run(replace(rows_input(), rows=(20, 30)))
