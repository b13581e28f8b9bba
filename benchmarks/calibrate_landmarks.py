"""Fit the landmark engine's fixed choices from real clips, re-runnably.

Default: measure the engine's systematic lag (lips move before the sound) on clips believed in sync and store it
as ``calibration.landmarks`` = {scale: 1, bias: -median raw sub-frame offset} in syncnet/assets/card.json, so that
the calibrated offset of an in-sync clip is ~0. ``--projection`` instead refits the engine's paired directions on
every other clip (by name) and writes them to syncnet/assets/landmarks_projection.json, for both feature sets
(lip shapes alone; lip shapes and blendshapes), after refitting on the same clips the lip-contour model of
`syncnet.lips.lip_shapes` (syncnet/assets/lip_contour.json: a pose template and 8 principal directions of the
lip contour's motion). The fit is a contrastive canonical analysis: with each clip
aligned at its own offset, the directions maximise the cross-covariance of visual and audio features at that
offset minus their mean cross-covariance at wrong offsets (3..15 frames away), relative to their variances
(closed form: an SVD of the whitened difference). Shift amounts and excerpts play no part in it.

    python -m benchmarks.calibrate_landmarks [--clips ../shared/clips] [--cache DIR] [--projection] [--dry-run]
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np

from benchmarks.clipdata import DEFAULT_CACHE, ClipData, load_clips, with_contour
from syncnet import landmarks
from syncnet.card import CARD_PATH as CARD_CONFIG
from syncnet.landmarks import LandmarkEngine, Projection
from syncnet.lips import CONTOUR_PATH, LipContour, fit_lip_contour, lip_contour_model
from syncnet.scoring import OFFSETS, summarize

log = logging.getLogger("calibrate_landmarks")

# Clips not believed in sync: syncnet_example.avi is +3 by the original SyncNet; the interview has two faces
# taking turns; GEN_ clips are lip-sync model outputs.
NOT_IN_SYNC = {"syncnet_example.avi", "visualvoice_interview.mp4"}
RIDGE = 0.1  # share of the mean variance added to each (standardised) covariance before whitening
PROJECTION_ROUNDS = 3  # align clips with the current directions, refit, repeat
COMPONENTS = 6  # paired directions kept
NEAR_OFFSETS = 2  # wrong offsets closer than this to the clip's own are not contrasted (the peak is ~2 frames wide)


def believed_in_sync(clip: ClipData) -> bool:
    return clip.kind == "real" and clip.name not in NOT_IN_SYNC


def projection_subset(clips: list[ClipData]) -> list[ClipData]:
    """Every other clip by name (the others are held out), real and single-speaker only."""
    every_other = sorted(clips, key=lambda c: c.name)[0::2]
    return [c for c in every_other if believed_in_sync(c) or c.name == "syncnet_example.avi"]


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


def clip_features(clip: ClipData, use_blendshapes: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visual (T, Dv) and audio (T, Da) features of a whole clip as the engine computes them, and its speech weights."""
    blendshapes = clip.blendshapes if use_blendshapes else None
    lips, audio, blendshapes = landmarks.check_inputs(clip.lips, clip.audio, blendshapes)
    weights = landmarks.speech_weights(audio, len(lips))
    return landmarks.visual_features(lips, blendshapes), landmarks.audio_features(audio, len(lips), weights), weights


def cross_covariance(visual: np.ndarray, sound: np.ndarray, weights: np.ndarray, offset: int) -> tuple[np.ndarray, int]:
    """Sum over frames t with sound of visual[t] sound[t - offset]^T, and the number of such frames."""
    frames = np.arange(len(visual))
    source = frames - offset
    valid = (source >= 0) & (source < len(visual))
    valid[valid] = weights[source[valid]] > 0
    return visual[valid].T @ sound[source[valid]], int(valid.sum())


def fit_projection(clips: list[ClipData], use_blendshapes: bool) -> Projection:
    """Contrastive canonical directions pooled over clips, each clip aligned at its own offset (see the top)."""
    features = [clip_features(clip, use_blendshapes) for clip in clips]
    projection = Projection(np.zeros((features[0][0].shape[1], 1)), np.zeros((features[0][1].shape[1], 1)), np.ones(1))
    projection.visual[2, 0] = projection.audio[2:6, 0] = 1.0  # start: outer lip height against ~400-3000 Hz
    for round_ in range(PROJECTION_ROUNDS):
        right = wrong = 0.0
        right_frames = wrong_frames = sound_frames = 0
        cxx = cyy = 0.0
        for visual, sound, weights in features:
            offset = _offset(visual, sound, weights, projection)
            for lag in OFFSETS:
                if abs(lag) >= NEAR_OFFSETS + 1 or lag == 0:
                    product, count = cross_covariance(visual, sound, weights, offset + lag)
                    if lag == 0:
                        right, right_frames = right + product, right_frames + count
                    else:
                        wrong, wrong_frames = wrong + product, wrong_frames + count
            cxx = cxx + visual.T @ visual
            cyy = cyy + sound[weights > 0].T @ sound[weights > 0]
            sound_frames += int((weights > 0).sum())
        contrast = right / right_frames - wrong / wrong_frames
        frames = sum(len(v) for v, _, _ in features)
        projection = _directions(cxx / frames, cyy / sound_frames, contrast)
        log.info("round %d: direction weights %s over %d frames", round_ + 1, np.round(projection.weights, 3), frames)
    return projection


def _offset(visual: np.ndarray, sound: np.ndarray, weights: np.ndarray, projection: Projection) -> int:
    """The engine's offset for a clip's features under `projection`."""
    dists = landmarks.window_dists(
        landmarks.standardise(visual @ projection.visual),
        landmarks.standardise(sound @ projection.audio, weights),
        projection.weights,
    )
    return summarize("landmarks", dists).offset_frames


def _directions(cxx: np.ndarray, cyy: np.ndarray, contrast: np.ndarray) -> Projection:
    def inverse_sqrt(c: np.ndarray) -> np.ndarray:
        c = c + RIDGE * np.trace(c) / len(c) * np.eye(len(c))
        values, vectors = np.linalg.eigh(c)
        return vectors @ np.diag(values**-0.5) @ vectors.T

    wx, wy = inverse_sqrt(cxx), inverse_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ contrast @ wy)
    visual, audio = wx @ u[:, :COMPONENTS], wy @ vt[:COMPONENTS].T
    sign = np.sign(visual[np.argmax(np.abs(visual), axis=0), np.arange(COMPONENTS)])  # largest visual weight positive
    return Projection(visual * sign, audio * sign, s[:COMPONENTS])


def write_projections(fitted: dict[str, Projection], names: list[str], path: Path = landmarks.PROJECTION_PATH) -> None:
    """Store the fitted projections (rounded to 5 digits) with a note on how and on what they were fitted."""
    stored = {
        "note": f"fitted by python -m benchmarks.calibrate_landmarks --projection on {len(names)} clips of "
        f"../shared/clips (every other clip by name, real single-speaker ones): {', '.join(names)}",
        "projections": {
            name: {"visual": np.round(p.visual, 5).tolist(), "audio": np.round(p.audio, 5).tolist(),
                   "weights": np.round(p.weights, 5).tolist()}
            for name, p in fitted.items()
        },
    }
    path.write_text(json.dumps(stored) + "\n")
    landmarks.projections.cache_clear()


def write_contour(contour: LipContour, path: Path = CONTOUR_PATH) -> None:
    """Store the lip-contour model of `syncnet.lips.lip_shapes` (rounded to 6 digits)."""
    stored = {
        "note": "fitted by python -m benchmarks.calibrate_landmarks --projection on the same clips as "
        "landmarks_projection.json: pose template (eye-normalised rigid points) and principal directions of the "
        "pose-normalised lip contour",
        **{key: np.round(getattr(contour, key), 6).tolist() for key in ("template", "mean", "basis")},
    }
    path.write_text(json.dumps(stored) + "\n")
    lip_contour_model.cache_clear()


def measure_lag(clips: list[ClipData], use_blendshapes: bool = False) -> tuple[float, list[tuple[str, float, float]]]:
    """Median raw sub-frame offset of the in-sync clips, and (name, offset, confidence) for each."""
    engine = LandmarkEngine()
    rows = []
    for clip in clips:
        blendshapes = clip.blendshapes if use_blendshapes else None
        result = summarize("landmarks", engine.window_dists(clip.lips, clip.audio, blendshapes))
        rows.append((clip.name, result.subframe_offset, result.confidence))
    return float(np.median([r[1] for r in rows])), rows


def write_calibration(bias: float, note: str, config: Path = CARD_CONFIG) -> None:
    """Set calibration.landmarks = {scale: 1, bias} (and its note) in the card, keeping the rest of its text."""
    text = config.read_text()
    entry = json.dumps({"scale": 1.0, "bias": round(bias, 3)})
    text = re.sub(r'"landmarks": \{"scale": [^}]*\}', lambda _: f'"landmarks": {entry}', text, count=1)
    key = "calibration_landmarks_note"
    text = re.sub(rf'  "{key}": "(?:[^"\\]|\\.)*"', lambda _: f'  "{key}": {json.dumps(note)}', text)
    card = json.loads(text)  # still valid
    if card["calibration"]["landmarks"]["bias"] != round(bias, 3) or card.get(key) != note:
        raise ValueError(f"{config}: no calibration.landmarks entry or {key} to update")
    config.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("../shared/clips"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--projection", action="store_true", help="refit the engine's directions and store them")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the card or the projections")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = load_clips(args.clips, args.cache)
    if args.projection:
        subset = projection_subset(clips)
        contour = fit_lip_contour([c.landmarks for c in subset])
        subset = [with_contour(c, contour) for c in subset]
        fitted = {landmarks.LIPS: fit_projection(subset, use_blendshapes=False)}
        if all(c.blendshapes is not None for c in subset):
            fitted[landmarks.LIPS_AND_BLENDSHAPES] = fit_projection(subset, use_blendshapes=True)
        if not args.dry_run:
            write_contour(contour)
            write_projections(fitted, [c.name for c in subset])
        names = ", ".join(c.name for c in subset)
        print(f"fitted on {len(subset)} clips: {names}; written to {landmarks.PROJECTION_PATH}, {CONTOUR_PATH}")
        return
    in_sync = [c for c in clips if believed_in_sync(c)]
    lag, rows = measure_lag(in_sync)
    for name, offset, confidence in rows:
        print(f"{name:48s} raw {offset:+6.2f} frames  confidence {confidence:.3f}")
    spread = np.percentile([r[1] for r in rows], [25, 75])
    with_shapes = ""
    if all(c.blendshapes is not None for c in in_sync):
        with_shapes = f"; with blendshapes the median is {measure_lag(in_sync, use_blendshapes=True)[0]:+.2f}"
    note = (
        f"landmarks: bias = -(median raw sub-frame offset, lip shapes without blendshapes) over {len(rows)} real "
        f"clips believed in sync (all real clips of ../shared/clips but {', '.join(sorted(NOT_IN_SYNC))}): median "
        f"{lag:+.2f} frames, interquartile {spread[0]:+.2f}..{spread[1]:+.2f}{with_shapes}; refit with "
        "python -m benchmarks.calibrate_landmarks"
    )
    print(note)
    if not args.dry_run:
        write_calibration(-lag, note)
        print(f"written to {CARD_CONFIG}")


if __name__ == "__main__":
    main()
