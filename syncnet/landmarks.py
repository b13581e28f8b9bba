"""The training-free engine: lip shapes against speech-band energy, correlated over offsets -15..+15.

Each frame gets a visual vector (the standardised lip shapes from `syncnet.lips.lip_shapes`, i.e. 5 distances and
areas and 8 principal components of the pose-normalised lip contour, and their rates of change, plus MediaPipe's
mouth blendshapes and their rates of change when the input has them) and an audio vector (the floored log energies
of 8 speech bands and their rates of change, plus SyncNet's 13 MFCCs). Fixed linear maps project both onto a few
paired directions: the directions along which lips and sound agree at the right offset far more than at wrong ones
(a contrastive canonical fit, closed form, done once on half of the benchmark clips by `python -m
benchmarks.calibrate_landmarks --projection` and stored in `assets/landmarks_projection.json`; a few hundred
numbers, not a network). The per-frame products of the standardised projections, weighted per direction, are the
per-window similarities, so their mean over the frames is a cross-correlation; each is scored against its
surroundings (minus half its Gaussian-weighted mean over nearby offsets, which favours a sharp peak over a broad
rise) and `syncnet.scoring.summarize` turns ``1 - score`` into an offset, a confidence and per-frame confidences as
for the other engines. Frames whose audio is digital silence (or padding) carry no weight; a silent or motionless
input gives a flat curve, i.e. confidence ~0.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d, maximum_filter1d

from syncnet.audio import mfcc
from syncnet.card import calibration
from syncnet.constants import MFCC_HOP, MFCC_STEPS_PER_FRAME, MFCC_WINDOW_LENGTH, SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.engines import EngineInput, row_span
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
SURROUND_SIGMA = 4.0  # offsets: width of the Gaussian surround each offset's similarity is compared with
SURROUND_WEIGHT = 0.5  # share of that surround subtracted (chosen by cross-validation on the fit clips)

PROJECTION_PATH = Path(__file__).parent / "assets" / "landmarks_projection.json"
LIPS, LIPS_AND_BLENDSHAPES = "lips", "lips+blendshapes"  # the feature sets, each with its own projection
NUM_LIP_FEATURES = 13  # columns of syncnet.lips.lip_shapes: 5 lip shapes, 8 lip-contour components
NUM_BLENDSHAPES = 52  # MediaPipe Face Landmarker's blendshape scores, in its category order
# mouth blendshapes used (category indices; left and right halves summed): jawOpen, mouthClose, mouthFunnel,
# mouthPucker, mouthLowerDown, mouthUpperUp, mouthStretch, mouthRollLower, mouthRollUpper, mouthShrugLower,
# mouthShrugUpper, mouthPress, mouthSmile, mouthDimple, mouthFrown, mouthLeft, mouthRight, jawForward
MOUTH_BLENDSHAPES = (
    (25,), (27,), (32,), (38,), (34, 35), (48, 49), (46, 47), (40,), (41,), (42,), (43,), (36, 37), (44, 45),
    (28, 29), (30, 31), (33,), (39,), (23,),
)


@dataclass(frozen=True)
class Projection:
    """Paired directions: visual (Dv, C) and audio (Da, C) maps, and the weight of each of the C directions."""

    visual: np.ndarray
    audio: np.ndarray
    weights: np.ndarray


@lru_cache(maxsize=1)
def projections() -> dict[str, Projection]:
    """The fitted projections by feature set: LIPS and LIPS_AND_BLENDSHAPES (see PROJECTION_PATH)."""
    stored = json.loads(PROJECTION_PATH.read_text())
    return {
        name: Projection(np.array(p["visual"]), np.array(p["audio"]), np.array(p["weights"]))
        for name, p in stored["projections"].items()
    }


class LandmarkInputError(EngineInputError):
    """The lip-shape series or the audio cannot be scored (wrong shape, too short, not finite)."""


def band_levels(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 8) log band energies in dB per video frame, floored DYNAMIC_RANGE_DB below each band's top."""
    levels = raw_band_levels(audio, num_frames)
    top = np.percentile(levels, 95, axis=0)
    return np.maximum(levels - (top - DYNAMIC_RANGE_DB), 0.0)


def frames_audio(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """float64 samples of exactly `num_frames` video frames: `audio` cut there, or zero-padded to there."""
    length = num_frames * SAMPLES_PER_FRAME
    signal = np.zeros(length, np.float64)
    signal[: min(length, len(audio))] = audio[:length]
    return signal


def raw_band_levels(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 8) band energies in dB, frame i from the 4 analysis windows centred in its 640 samples."""
    signal = frames_audio(audio, num_frames)
    padded = np.pad(signal, (WINDOW // 2, WINDOW // 2))
    steps = num_frames * STEPS_PER_FRAME
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(steps)[:, None]
    power = np.abs(np.fft.rfft(padded[index] * np.hanning(WINDOW), N_FFT)) ** 2
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    edges = zip(BAND_EDGES_HZ[:-1], BAND_EDGES_HZ[1:], strict=True)
    bands = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) for lo, hi in edges], axis=1)
    energy = bands.reshape(num_frames, STEPS_PER_FRAME, -1).mean(axis=1)
    return 10.0 * np.log10(energy + 1e-10)


def speech_weights(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) 1 where the frame has sound, 0 at (and next to) digital silence or padding."""
    signal = frames_audio(audio, num_frames)
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


def with_velocity(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(T, 2K): the standardised columns of x, then their standardised rates of change."""
    z = standardise(x, weights)
    return np.concatenate([z, standardise(np.gradient(z, axis=0), weights)], axis=1)


def mouth_blendshapes(blendshapes: np.ndarray) -> np.ndarray:
    """(T, 18) the mouth blendshapes of MOUTH_BLENDSHAPES (left and right summed) from (T, 52) scores."""
    return np.stack([blendshapes[:, list(group)].sum(axis=1) for group in MOUTH_BLENDSHAPES], axis=1)


def visual_features(lips: np.ndarray, blendshapes: np.ndarray | None = None) -> np.ndarray:
    """(T, 26) lip shapes (contour components included) and their velocities; (T, 62) with the mouth blendshapes
    and theirs appended."""
    features = with_velocity(lips)
    if blendshapes is not None:
        features = np.concatenate([features, with_velocity(mouth_blendshapes(blendshapes))], axis=1)
    return features


def mfcc_levels(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames, 13) SyncNet's MFCCs (`syncnet.audio.mfcc`), averaged over the 4 analysis steps of each frame."""
    signal = frames_audio(audio, num_frames)
    cepstra = mfcc(signal).T
    steps = num_frames * STEPS_PER_FRAME
    if len(cepstra) < steps:
        cepstra = np.pad(cepstra, ((0, steps - len(cepstra)), (0, 0)), mode="edge")
    return cepstra[:steps].reshape(num_frames, STEPS_PER_FRAME, -1).mean(axis=1)


def audio_features(audio: np.ndarray, num_frames: int, weights: np.ndarray) -> np.ndarray:
    """(T, 29) floored band levels and their slopes, then the 13 MFCCs (no slopes), standardised over the frames
    with sound (others 0)."""
    levels = np.concatenate(
        [with_velocity(band_levels(audio, num_frames), weights), standardise(mfcc_levels(audio, num_frames), weights)],
        axis=1,
    )
    return levels * (weights > 0)[:, None]


def feature_set(blendshapes: np.ndarray | None) -> str:
    return LIPS if blendshapes is None else LIPS_AND_BLENDSHAPES


def series(
    lips: np.ndarray, audio: np.ndarray, blendshapes: np.ndarray | None = None, projection: Projection | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The visual and audio series (T, C) that are cross-correlated, standardised, and the C direction weights.

    `projection`: the stored one for the feature set by default.
    """
    projection = projection or projections()[feature_set(blendshapes)]
    num_frames = len(lips)
    weights = speech_weights(audio, num_frames)
    visual = standardise(visual_features(lips, blendshapes) @ projection.visual)
    sound = standardise(audio_features(audio, num_frames, weights) @ projection.audio, weights)
    return visual, sound, projection.weights


def window_dists(visual: np.ndarray, sound: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(T, 31) ``1 - score`` for offset k (column k + 15), per frame t.

    The similarity is ``sum_c weights_c visual[t, c] sound[t - k, c] / sum(weights)`` (0 where the sound at that
    offset would lie outside the clip); the score is the similarity minus SURROUND_WEIGHT times its Gaussian
    average over nearby offsets (SURROUND_SIGMA), linear, so the mean over frames is scored the same way.
    """
    num_frames = len(visual)
    weighted = visual * (weights / weights.sum())
    dists = np.ones((num_frames, len(OFFSETS)))
    frames = np.arange(num_frames)
    for column, offset in enumerate(OFFSETS):
        source = frames - offset  # audio frame holding the sound of video frame t at this offset
        valid = (source >= 0) & (source < num_frames)
        dists[valid, column] = 1.0 - (weighted[valid] * sound[source[valid]]).sum(axis=1)
    surround = gaussian_filter1d(dists, SURROUND_SIGMA, axis=1, mode="nearest")
    return dists - SURROUND_WEIGHT * (surround - 1.0)


def check_inputs(
    lips: np.ndarray, audio: np.ndarray, blendshapes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 copies of the inputs; non-finite lip or blendshape values become the column median.

    Raises LandmarkInputError.
    """
    lips = np.asarray(lips, dtype=np.float64)
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if lips.ndim != 2 or lips.shape[1] != NUM_LIP_FEATURES:
        raise LandmarkInputError(f"lip shapes must be (frames, {NUM_LIP_FEATURES}), got {lips.shape}")
    if len(lips) < 2:
        raise LandmarkInputError(f"need at least 2 frames of lip shapes, got {len(lips)}")
    if not np.isfinite(audio).all():
        raise LandmarkInputError("audio contains NaN or infinite samples")
    lips = _fill_gaps(lips, "a lip-shape column has no finite value")
    if blendshapes is not None:
        blendshapes = np.asarray(blendshapes, dtype=np.float64)
        if blendshapes.shape != (len(lips), NUM_BLENDSHAPES):
            raise LandmarkInputError(
                f"blendshapes must be (frames, {NUM_BLENDSHAPES}) with one row per lip-shape frame, "
                f"got {blendshapes.shape} for {len(lips)} frames"
            )
        blendshapes = _fill_gaps(blendshapes, "a blendshape column has no finite value")
    return lips, audio, blendshapes


def _fill_gaps(x: np.ndarray, message: str) -> np.ndarray:
    """x with non-finite values replaced by their column's median; LandmarkInputError if a column has none."""
    bad = ~np.isfinite(x)
    if bad.all(axis=0).any():
        raise LandmarkInputError(message)
    if bad.any():
        x = np.where(bad, np.nanmedian(np.where(bad, np.nan, x), axis=0), x)
    return x


class LandmarkEngine:
    """Cross-correlation of lip-shape motion with band-energy changes; needs no weights."""

    name = NAME

    def __init__(self, calibration: Calibration = Calibration(), fitted: dict[str, Projection] | None = None):
        """`fitted`: projections by feature set instead of the stored ones (to cross-validate a fit)."""
        self.calibration = calibration
        self.fitted = fitted

    def window_dists(self, lips: np.ndarray, audio: np.ndarray, blendshapes: np.ndarray | None = None) -> np.ndarray:
        """(T, 31) per-frame dissimilarities, column k = offset k - 15; `blendshapes` (T, 52) are optional."""
        lips, audio, blendshapes = check_inputs(lips, audio, blendshapes)
        projection = self.fitted[feature_set(blendshapes)] if self.fitted else None
        return window_dists(*series(lips, audio, blendshapes, projection))

    def run(self, inputs: EngineInput) -> SyncResult:
        """Score one face segment; uses `inputs.blendshapes` (T, 52) where the input carries them.

        With `inputs.rows`, the rows of those frames of the whole segment's result (it is cheap: all are computed).
        """
        started = time.perf_counter()
        dists = self.window_dists(inputs.lips, inputs.audio, getattr(inputs, "blendshapes", None))
        lo, hi = row_span(inputs.rows, len(dists))
        return summarize(self.name, dists[lo:hi], self.calibration, time.perf_counter() - started)


def load_engine() -> LandmarkEngine:
    """The landmark engine with the calibration stored in the card (``calibration.landmarks``)."""
    return LandmarkEngine(calibration(NAME))
