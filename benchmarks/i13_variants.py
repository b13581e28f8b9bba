"""Issue 13 experiments: landmark-engine variants judged by 4-fold cross-validation within the fit half only.

Each variant patches `syncnet.landmarks` (and, where it needs to, the fit's feature function) in this process, then
runs the cross-validation of `benchmarks.accuracy --cross-validate`: the fit half split in 4 folds by name, the
projections refitted on 3 folds, the 1 s / 2 s excerpt test run on the fourth, in turn. The held-out half is never
scored here. The base is the engine as it is: band levels, their slopes and 13 MFCCs (from branch
lm13) against 5 lip shapes and 8 lip-contour components (`syncnet.lips.lip_shapes`; the contour model refitted per
fold by `benchmarks.accuracy.cross_validate`), with their velocities.

    python -m benchmarks.i13_variants VARIANT [VARIANT ...] [--clips ../shared/clips]

The vad variants need silero-vad, which the project does not install: ``pip install --no-deps silero-vad==6.2.3``
(it needs only torch and packaging).

Variants (combine them with "+", e.g. ``vad-soft+avg``):
- base: the engine as it is.
- lm13: without the lip-contour components (the engine of branch lm13, commit afb96b7).
- vad-soft: each frame's audio weighted by silero-vad's speech probability (run on the excerpt's own audio) in the
  standardisation, the similarity and the fit.
- vad-gate: frames whose speech probability is under 0.5 carry no weight (all frames when fewer than 5 pass).
- vad-feature: the speech probability and its slope appended to the audio features.
- avg: with blendshapes, the mean of both feature sets' scores (lip shapes alone; lip shapes + blendshapes).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import accuracy, calibrate_landmarks
from benchmarks.calibrate_landmarks import projection_subset
from benchmarks.clipdata import DEFAULT_CACHE, ClipData, load_clips
from syncnet import landmarks
from syncnet.constants import SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.lips import LIP_SHAPES

log = logging.getLogger("i13_variants")

VAD_CHUNK = 512  # silero-vad's window at 16 kHz
VAD_GATE = 0.5
MIN_GATED_FRAMES = 5

_speech_weights = landmarks.speech_weights
_audio_features = landmarks.audio_features
_series = landmarks.series
_clip_features = calibrate_landmarks.clip_features
_window_dists = landmarks.LandmarkEngine.window_dists
_num_lip_features = landmarks.NUM_LIP_FEATURES
_with_contour = accuracy.with_contour


# --- voice activity --------------------------------------------------------------------------------------------


_vad_model = None
_vad_cache: dict[bytes, np.ndarray] = {}


def speech_probability(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) silero-vad's speech probability at each video frame's centre, from this audio alone."""
    global _vad_model
    import torch
    from silero_vad import load_silero_vad

    signal = landmarks.frames_audio(audio, num_frames).astype(np.float32)
    key = hashlib.sha1(signal.tobytes()).digest()
    if key not in _vad_cache:
        if _vad_model is None:
            torch.set_num_threads(1)
            _vad_model = load_silero_vad()
        with torch.no_grad():
            chunks = _vad_model.audio_forward(torch.from_numpy(signal), SAMPLE_RATE)[0].numpy()
        centres = VAD_CHUNK * np.arange(len(chunks)) + VAD_CHUNK / 2
        frames = SAMPLES_PER_FRAME * np.arange(num_frames) + SAMPLES_PER_FRAME / 2
        _vad_cache[key] = np.interp(frames, centres, chunks)
    return _vad_cache[key]


def soft_weights(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Digital-silence weights times the speech probability."""
    return _speech_weights(audio, num_frames) * speech_probability(audio, num_frames)


def gated_weights(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Digital-silence weights, zero where the speech probability is under VAD_GATE (unless too few frames pass)."""
    weights = _speech_weights(audio, num_frames)
    gated = weights * (speech_probability(audio, num_frames) >= VAD_GATE)
    return gated if (gated > 0).sum() >= MIN_GATED_FRAMES else weights


def weighted_series(lips, audio, blendshapes=None, projection=None):
    """`landmarks.series` with the audio series scaled by the (soft) frame weights."""
    visual, sound, direction_weights = _series(lips, audio, blendshapes, projection)
    weights = landmarks.speech_weights(audio, len(lips))
    return visual, sound * weights[:, None], direction_weights


def weighted_clip_features(clip: ClipData, use_blendshapes: bool):
    """The fit's features with the audio features scaled by the (soft) frame weights."""
    visual, sound, weights = _clip_features(clip, use_blendshapes)
    return visual, sound * weights[:, None], weights


def vad_audio_features(audio: np.ndarray, num_frames: int, weights: np.ndarray) -> np.ndarray:
    """The engine's audio features plus the speech probability and its slope."""
    probability = speech_probability(audio, num_frames)[:, None]
    extra = landmarks.with_velocity(probability, weights) * (weights > 0)[:, None]
    return np.concatenate([_audio_features(audio, num_frames, weights), extra], axis=1)


# --- without the lip contour (lm13's engine) -------------------------------------------------------------------


def without_contour(clip: ClipData, contour: object) -> ClipData:
    """The clip with its 5 lip shapes only (the lip-contour components dropped)."""
    return dataclasses.replace(clip, lips=clip.lips[:, : len(LIP_SHAPES)])


# --- scores of both feature sets -------------------------------------------------------------------------------


def averaged_window_dists(self, lips, audio, blendshapes=None):
    """With blendshapes, the mean of the lips-alone and the lips-and-blendshapes dissimilarities."""
    dists = _window_dists(self, lips, audio, blendshapes)
    return dists if blendshapes is None else (dists + _window_dists(self, lips, audio, None)) / 2


# --- runner ----------------------------------------------------------------------------------------------------


PATCHES: dict[str, Callable[[], None]] = {
    "base": lambda: None,
    "vad-soft": lambda: (setattr(landmarks, "speech_weights", soft_weights),
                         setattr(landmarks, "series", weighted_series),
                         setattr(calibrate_landmarks, "clip_features", weighted_clip_features)),
    "vad-gate": lambda: setattr(landmarks, "speech_weights", gated_weights),
    "vad-feature": lambda: setattr(landmarks, "audio_features", vad_audio_features),
    "lm13": lambda: (setattr(landmarks, "NUM_LIP_FEATURES", len(LIP_SHAPES)),
                     setattr(accuracy, "with_contour", without_contour)),
    "avg": lambda: setattr(landmarks.LandmarkEngine, "window_dists", averaged_window_dists),
}


def reset() -> None:
    """Undo every patch."""
    landmarks.speech_weights, landmarks.series, landmarks.audio_features = _speech_weights, _series, _audio_features
    landmarks.NUM_LIP_FEATURES, accuracy.with_contour = _num_lip_features, _with_contour
    calibrate_landmarks.clip_features = _clip_features
    landmarks.LandmarkEngine.window_dists = _window_dists


def run_variant(name: str, clips: list[ClipData]) -> str:
    """One table row: the variant's fold accuracy, K = 25 / 50, lips alone then with blendshapes."""
    reset()
    parts = name.split("+")
    for part in parts:
        PATCHES[part]()
    started = time.perf_counter()
    table = accuracy.cross_validate(clips)
    labels = ("landmarks", accuracy.BLENDSHAPES)
    cells = [accuracy.pct(table[label][k]) for label in labels for k in accuracy.CV_CONTEXTS]
    log.info("%s: %.0f s", name, time.perf_counter() - started)
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="names from PATCHES, combined with '+'")
    parser.add_argument("--clips", type=Path, default=Path("../shared/clips"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    clips = load_clips(args.clips, DEFAULT_CACHE)
    print(f"| variant (folds of {len(projection_subset(clips))} fit clips) | K = 25 lips | K = 50 lips "
          "| K = 25 + blendshapes | K = 50 + blendshapes |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in args.variants:
        print(run_variant(name, clips), flush=True)


if __name__ == "__main__":
    main()
