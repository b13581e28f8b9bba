"""Turn a matrix of audio-visual distances into an offset, a confidence and a calibrated offset.

Every engine produces ``window_dists``: one row per analysis window, one column per candidate offset,
column k holding offset ``k - MAX_OFFSET``. Lower is more similar. The rules are the original SyncNet's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from syncnet.constants import MAX_OFFSET, MS_PER_FRAME
from syncnet.errors import EngineInputError
from syncnet.smooth import medfilt

OFFSETS = np.arange(-MAX_OFFSET, MAX_OFFSET + 1)
FRAME_CONFIDENCE_FILTER = 9  # median filter width of the original per-frame confidence


@dataclass(frozen=True)
class Calibration:
    """Linear map from an engine's raw sub-frame offset to the calibrated one: ``scale * raw + bias``."""

    scale: float = 1.0
    bias: float = 0.0

    def apply(self, raw_offset: float) -> float:
        return self.scale * raw_offset + self.bias


@dataclass
class SyncResult:
    """What one engine concludes about one clip."""

    engine: str
    dists: np.ndarray  # (31,) mean distance per offset, OFFSETS order
    offset_frames: int  # + means the audio is early (leads the lips); fix by delaying the audio
    min_dist: float  # LSE-D
    confidence: float  # LSE-C: median distance minus minimum distance
    subframe_offset: float  # parabola-refined offset, before calibration
    calibrated_offset_frames: float
    frame_confidence: np.ndarray  # (W,) per-window confidence, median filtered
    window_dists: np.ndarray = field(repr=False)  # (W, 31)
    time_s: float = 0.0

    @property
    def offset_ms(self) -> float:
        return self.offset_frames * MS_PER_FRAME

    @property
    def calibrated_offset_ms(self) -> float:
        return self.calibrated_offset_frames * MS_PER_FRAME


def refine_minimum(dists: np.ndarray, index: int) -> float:
    """Sub-frame position of the minimum: vertex of the parabola through the minimum and its two neighbours."""
    if index == 0 or index == len(dists) - 1:
        return float(OFFSETS[index])
    left, centre, right = (float(d) for d in dists[index - 1 : index + 2])
    curvature = left - 2.0 * centre + right
    if curvature <= 0.0:
        return float(OFFSETS[index])
    shift = 0.5 * (left - right) / curvature
    return float(OFFSETS[index] + np.clip(shift, -0.5, 0.5))


def summarize(
    engine: str,
    window_dists: np.ndarray,
    calibration: Calibration = Calibration(),
    time_s: float = 0.0,
) -> SyncResult:
    """Offset, LSE-D, LSE-C and per-window confidence from per-window distances, as SyncNet's evaluate() does."""
    window_dists = np.asarray(window_dists, dtype=np.float64)
    if window_dists.ndim != 2 or window_dists.shape[1] != len(OFFSETS) or window_dists.shape[0] == 0:
        raise EngineInputError(f"window_dists must be (windows, {len(OFFSETS)}), got {window_dists.shape}")
    dists = window_dists.mean(axis=0)
    # The original takes the first minimum in its own column order (offset 15 - j): the largest offset on ties.
    best = len(OFFSETS) - 1 - int(np.argmin(dists[::-1]))
    median = float(np.median(dists))
    min_dist = float(dists[best])
    frame_confidence = median - window_dists[:, best]
    subframe = refine_minimum(dists, best)
    frame_confidence = medfilt(frame_confidence, FRAME_CONFIDENCE_FILTER)  # zero-padded, as the original
    return SyncResult(
        engine=engine,
        dists=dists,
        offset_frames=int(OFFSETS[best]),
        min_dist=min_dist,
        confidence=median - min_dist,
        subframe_offset=subframe,
        calibrated_offset_frames=calibration.apply(subframe),
        frame_confidence=frame_confidence,
        window_dists=window_dists,
        time_s=time_s,
    )
