"""The training-free engine: lip-shape motion against speech-band energy, correlated over offsets -15..+15.

Each frame gets two visual numbers (fixed mixes of the lip-shape velocities from `syncnet.faces.lip_shapes`) and
two audio numbers (fixed mixes of the rates of change of log band energies). The mixes are the first two pairs of
canonical directions fitted once, jointly over a subset of the benchmark clips (`benchmarks/calibrate_landmarks.py
--projection` refits and prints them); they are 26 numbers, not a network. The per-frame products of the
standardised series, summed with the canonical correlations as weights, are the per-window similarities, so their
mean over the frames is a cross-correlation and `syncnet.scoring.summarize` turns ``1 - similarity`` into an offset,
a confidence and per-frame confidences as for the other engines. Frames whose audio is digital silence (or
padding) carry no weight; a silent or motionless input gives a flat curve, i.e. confidence ~0.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from scipy.ndimage import maximum_filter1d

from syncnet.card import calibration
from syncnet.constants import MFCC_HOP, MFCC_STEPS_PER_FRAME, MFCC_WINDOW_LENGTH, SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.engines import EngineInput
from syncnet.errors import EngineInputError
from syncnet.scoring import OFFSETS, Calibration, SyncResult, summarize

log = logging.getLogger(__name__)

NAME = "landmarks"

# audio analysis: 25 ms Hann windows every 10 ms (4 per video frame), as SyncNet's MFCC
WINDOW = MFCC_WINDOW_LENGTH
HOP = MFCC_HOP
N_FFT = 512
STEPS_PER_FRAME = MFCC_STEPS_PER_FRAME  # 4
BAND_EDGES_HZ = np.geomspace(150.0, 7000.0, 9)  # 8 log-spaced bands
DYNAMIC_RANGE_DB = 50.0  # band levels are floored this far below their 95th percentile
SILENCE_DB = -90.0  # frames quieter than this (digital silence, padding) carry no weight
SILENCE_DILATION = 2  # frames next to silence carry no weight either (their energy slope is a step)

# first two canonical pairs (columns) of (lip-shape velocities, band-energy slopes), each standardised per clip, and
# their canonical correlations; fitted by benchmarks/calibrate_landmarks.py --projection on every other clip of
# ../shared/clips (sorted by name)
# rows: inner_gap, mouth_width, outer_height, inner_area, jaw_drop
LIP_WEIGHTS = np.array([[-0.1136, -0.5929], [-0.1829, -0.6408], [0.8043, -0.794], [0.1558, 0.6358], [0.2563, 1.0496]])
BAND_WEIGHTS = np.array(
    [[0.0329, 0.2422], [-0.3782, -0.2392], [-0.04, -0.1905], [0.6814, 0.586], [0.0035, 0.7148], [0.5406, -0.8062],
     [0.2932, -0.0906], [-0.2039, -0.4873]]
)  # rows: the 8 bands, low to high
COMPONENT_WEIGHTS = np.array([0.4449, 0.1964])
NUM_LIP_FEATURES = LIP_WEIGHTS.shape[0]


class LandmarkInputError(EngineInputError):
    """The lip-shape series or the audio cannot be scored (wrong shape, too short, not finite)."""


def band_levels(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 8) log band energies in dB per video frame, floored DYNAMIC_RANGE_DB below each band's top."""
    levels = raw_band_levels(audio, num_frames)
    top = np.percentile(levels, 95, axis=0)
    return np.maximum(levels - (top - DYNAMIC_RANGE_DB), 0.0)


def raw_band_levels(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 8) band energies in dB, frame i from the 4 analysis windows centred in its 640 samples."""
    length = num_frames * SAMPLES_PER_FRAME
    signal = np.zeros(length, np.float64)
    signal[: min(length, len(audio))] = audio[:length]
    padded = np.pad(signal, (WINDOW // 2, WINDOW // 2))
    steps = num_frames * STEPS_PER_FRAME
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(steps)[:, None]
    power = np.abs(np.fft.rfft(padded[index] * np.hanning(WINDOW), N_FFT)) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    bands = np.stack(
        [power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:])],
        axis=1,
    )
    energy = bands.reshape(num_frames, STEPS_PER_FRAME, -1).mean(axis=1)
    return 10.0 * np.log10(energy + 1e-10)


def speech_weights(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) 1 where the frame has sound, 0 at (and next to) digital silence or padding."""
    length = num_frames * SAMPLES_PER_FRAME
    signal = np.zeros(length, np.float64)
    signal[: min(length, len(audio))] = audio[:length]
    power = (signal.reshape(num_frames, SAMPLES_PER_FRAME) ** 2).mean(axis=1)
    silent = 10.0 * np.log10(power + 1e-20) < SILENCE_DB
    return 1.0 - maximum_filter1d(silent.astype(np.float64), 2 * SILENCE_DILATION + 1)


def standardise(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Zero mean, unit variance along axis 0 (weighted); columns without variance become 0; zero-weight rows 0."""
    w = np.ones(len(x)) if weights is None else weights
    total = w.sum()
    if total <= 0:
        return np.zeros_like(x, dtype=np.float64)
    shape = (-1,) + (1,) * (x.ndim - 1)
    w = w.reshape(shape)
    mean = (w * x).sum(axis=0) / total
    std = np.sqrt((w * (x - mean) ** 2).sum(axis=0) / total)
    z = np.where(std > 1e-9, (x - mean) / np.where(std > 1e-9, std, 1.0), 0.0)
    return z * (w > 0)


def lip_velocity(lips: np.ndarray) -> np.ndarray:
    """(T, K) standardised rates of change of the standardised lip-shape columns."""
    return standardise(np.gradient(standardise(lips), axis=0))


def band_slopes(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, 8) standardised rates of change of the floored band levels."""
    return standardise(np.gradient(band_levels(audio, num_frames), axis=0))


def series(lips: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The visual and audio series (T, 2) that are cross-correlated, standardised; silent frames' audio is 0."""
    num_frames = len(lips)
    visual = standardise(lip_velocity(lips) @ LIP_WEIGHTS)
    weights = speech_weights(audio, num_frames)
    sound = standardise(band_slopes(audio, num_frames) @ BAND_WEIGHTS, weights)
    return visual, sound


def window_dists(visual: np.ndarray, sound: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(T, 31) ``1 - sum_c weights_c visual[t, c] sound[t - k, c] / sum(weights)`` for offset k (column k + 15).

    `weights` defaults to COMPONENT_WEIGHTS. Frames whose sound at that offset would lie outside the clip get 1.
    """
    weights = COMPONENT_WEIGHTS if weights is None else weights
    num_frames = len(visual)
    weighted = visual * (weights / weights.sum())
    dists = np.ones((num_frames, len(OFFSETS)))
    frames = np.arange(num_frames)
    for column, offset in enumerate(OFFSETS):
        source = frames - offset  # audio frame holding the sound of video frame t at this offset
        valid = (source >= 0) & (source < num_frames)
        dists[valid, column] = 1.0 - (weighted[valid] * sound[source[valid]]).sum(axis=1)
    return dists


def check_inputs(lips: np.ndarray, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 copies of the inputs; non-finite lip values become the column median. Raises LandmarkInputError."""
    lips = np.asarray(lips, dtype=np.float64)
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if lips.ndim != 2 or lips.shape[1] != NUM_LIP_FEATURES:
        raise LandmarkInputError(f"lip shapes must be (frames, {NUM_LIP_FEATURES}), got {lips.shape}")
    if len(lips) < 2:
        raise LandmarkInputError(f"need at least 2 frames of lip shapes, got {len(lips)}")
    if not np.isfinite(audio).all():
        raise LandmarkInputError("audio contains NaN or infinite samples")
    bad = ~np.isfinite(lips)
    if bad.all(axis=0).any():
        raise LandmarkInputError("a lip-shape column has no finite value")
    if bad.any():
        lips = np.where(bad, np.nanmedian(np.where(bad, np.nan, lips), axis=0), lips)
    return lips, audio


class LandmarkEngine:
    """Cross-correlation of lip-shape motion with band-energy changes; needs no weights."""

    name = NAME

    def __init__(self, calibration: Calibration = Calibration()):
        self.calibration = calibration

    def window_dists(self, lips: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """(T, 31) per-frame dissimilarities, column k = offset k - 15."""
        lips, audio = check_inputs(lips, audio)
        return window_dists(*series(lips, audio))

    def run(self, inputs: EngineInput) -> SyncResult:
        started = time.perf_counter()
        dists = self.window_dists(inputs.lips, inputs.audio)
        return summarize(self.name, dists, self.calibration, time.perf_counter() - started)


def load_engine() -> LandmarkEngine:
    """The landmark engine with the calibration stored in the card (``calibration.landmarks``)."""
    return LandmarkEngine(calibration(NAME))
