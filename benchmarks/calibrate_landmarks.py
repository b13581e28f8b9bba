"""Fit the landmark engine's fixed choices from real clips, re-runnably.

Default: measure the engine's systematic lag (lips move before the sound) on clips believed in sync and store it
as ``calibration.landmarks`` = {scale: 1, bias: -median raw sub-frame offset} in syncnet/assets/card.json, so that
the calibrated offset of an in-sync clip is ~0. ``--projection`` instead refits the two canonical directions
(LIP_WEIGHTS, BAND_WEIGHTS, COMPONENT_WEIGHTS of
syncnet/landmarks.py) on every other clip and prints them to paste into the module.

    python -m benchmarks.calibrate_landmarks [--clips ../shared/clips] [--cache DIR] [--projection] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np

from benchmarks.clipdata import DEFAULT_CACHE, ClipData, load_clips
from syncnet import landmarks
from syncnet.landmarks import LandmarkEngine, band_slopes, lip_velocity, speech_weights
from syncnet.scoring import summarize
from syncnet.card import CARD_PATH as CARD_CONFIG

log = logging.getLogger("calibrate_landmarks")

# Clips not believed in sync: syncnet_example.avi is +3 by the original SyncNet; the interview has two faces
# taking turns; GEN_ clips are lip-sync model outputs.
NOT_IN_SYNC = {"syncnet_example.avi", "visualvoice_interview.mp4"}
RIDGE = 1e-2  # added to the (standardised) covariances before whitening
PROJECTION_ROUNDS = 3  # align clips with the current directions, refit, repeat
COMPONENTS = 2  # canonical pairs kept
START_LIP = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]]).T  # outer lip height
START_BANDS = np.array([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]]).T  # ~400-3000 Hz


def believed_in_sync(clip: ClipData) -> bool:
    return clip.kind == "real" and clip.name not in NOT_IN_SYNC


def projection_subset(clips: list[ClipData]) -> list[ClipData]:
    """Every other clip by name (the others are held out), real and single-speaker only."""
    return [c for c in sorted(clips, key=lambda c: c.name)[0::2] if believed_in_sync(c) or c.name == "syncnet_example.avi"]


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio made early by `frames` (late if negative), zero padded: sample n takes sample n + 640 * frames."""
    step = frames * landmarks.SAMPLES_PER_FRAME
    out = np.zeros_like(audio)
    if step > 0:
        out[:-step] = audio[step:]
    elif step < 0:
        out[-step:] = audio[:step]
    else:
        out[:] = audio
    return out


def fit_projection(clips: list[ClipData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First canonical pairs of (lip velocities, band slopes) pooled over clips, each clip aligned at its own offset."""
    lip_w, band_w, corr = START_LIP, START_BANDS, np.ones(1)
    for round_ in range(PROJECTION_ROUNDS):
        xs, ys = [], []
        for clip in clips:
            visual, sound = landmarks.check_inputs(clip.lips, clip.audio)
            visual = landmarks.standardise(lip_velocity(visual) @ lip_w)
            weights = speech_weights(sound, len(clip.lips))
            sound = landmarks.standardise(band_slopes(sound, len(clip.lips)) @ band_w, weights)
            offset = summarize("landmarks", landmarks.window_dists(visual, sound, corr)).offset_frames
            audio = shift_audio(clip.audio, -offset)  # undo the clip's own offset
            weights = speech_weights(audio, len(clip.lips)) > 0
            xs.append(lip_velocity(clip.lips)[weights])
            ys.append(band_slopes(audio, len(clip.lips))[weights])
        x, y = np.concatenate(xs), np.concatenate(ys)
        lip_w, band_w, corr = _cca(x, y)
        log.info("round %d: canonical correlations %s over %d frames", round_ + 1, np.round(corr, 3), len(x))
    return lip_w, band_w, corr


def _cca(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(x)
    cxx = x.T @ x / n + RIDGE * np.eye(x.shape[1])
    cyy = y.T @ y / n + RIDGE * np.eye(y.shape[1])
    cxy = x.T @ y / n

    def inverse_sqrt(c: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh(c)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    wx, wy = inverse_sqrt(cxx), inverse_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy)
    lip_w, band_w = wx @ u[:, :COMPONENTS], wy @ vt[:COMPONENTS].T
    sign = np.sign(lip_w[np.argmax(np.abs(lip_w), axis=0), np.arange(COMPONENTS)])  # largest lip weight positive
    return lip_w * sign, band_w * sign, s[:COMPONENTS]


def measure_lag(clips: list[ClipData]) -> tuple[float, list[tuple[str, float, float]]]:
    """Median raw sub-frame offset of the in-sync clips, and (name, offset, confidence) for each."""
    engine = LandmarkEngine()
    rows = []
    for clip in clips:
        result = summarize("landmarks", engine.window_dists(clip.lips, clip.audio))
        rows.append((clip.name, result.subframe_offset, result.confidence))
    return float(np.median([r[1] for r in rows])), rows


def write_calibration(bias: float, note: str, config: Path = CARD_CONFIG) -> None:
    """Set calibration.landmarks = {scale: 1, bias} (and its note) in the card, keeping everything else."""
    card = json.loads(config.read_text()) if config.exists() else {}
    card.setdefault("calibration", {})["landmarks"] = {"scale": 1.0, "bias": round(bias, 3)}
    card["calibration_landmarks_note"] = note
    config.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(card, indent=2)
    text = re.sub(r'\{\s+"scale": ([^,]+),\s+"bias": ([^\s]+)\s+\}', r'{"scale": \1, "bias": \2}', text)  # one line each
    config.write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("../shared/clips"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--projection", action="store_true", help="refit LIP_WEIGHTS/BAND_WEIGHTS and print them")
    parser.add_argument("--dry-run", action="store_true", help="print the calibration, do not write the card")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = load_clips(args.clips, args.cache)
    if args.projection:
        subset = projection_subset(clips)
        lip_w, band_w, corr = fit_projection(subset)
        print(f"fitted on {len(subset)} clips: {', '.join(c.name for c in subset)}")
        print(f"LIP_WEIGHTS = np.array({np.round(lip_w, 4).tolist()})")
        print(f"BAND_WEIGHTS = np.array({np.round(band_w, 4).tolist()})")
        print(f"COMPONENT_WEIGHTS = np.array({np.round(corr, 4).tolist()})")
        return
    in_sync = [c for c in clips if believed_in_sync(c)]
    lag, rows = measure_lag(in_sync)
    for name, offset, confidence in rows:
        print(f"{name:48s} raw {offset:+6.2f} frames  confidence {confidence:.3f}")
    spread = np.percentile([r[1] for r in rows], [25, 75])
    note = (
        f"landmarks: bias = -(median raw sub-frame offset) over {len(rows)} real clips believed in sync "
        f"(all real clips of ../shared/clips but {', '.join(sorted(NOT_IN_SYNC))}): median {lag:+.2f} frames, "
        f"interquartile {spread[0]:+.2f}..{spread[1]:+.2f}; refit with python -m benchmarks.calibrate_landmarks"
    )
    print(note)
    if not args.dry_run:
        write_calibration(-lag, note)
        print(f"written to {CARD_CONFIG}")


if __name__ == "__main__":
    main()
