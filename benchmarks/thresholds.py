"""The no-signal thresholds: how sure is an engine on genuine clips, and on sound that does not belong to the lips?

Three kinds of input are built from the benchmark clips (their tracked face segments, cached by `clipdata`):

- genuine: each clip as it is (its lips with its own sound);
- mismatched: one clip's lips with another recording's speech (every ordered pair within a half, cut to the shorter);
- speechless: each clip's lips with a soundtrack without speech: white noise, brown noise, synthetic music (decaying
  harmonic notes, 2-5 a second, chords and a beat) and a steady 440 Hz tone, at speech level (-20 dBFS RMS).

The landmark engine gets the lip shapes alone (no MediaPipe blendshapes), as the pipeline gives them to it.

Clips are split in two halves by name (every other clip, as `calibrate_landmarks.projection_subset` splits them: the
landmark engine's projection was fitted on the first half). The threshold is chosen on the first half (the one
that maximises true-signal rate minus false-alarm rate, Youden's J, at the middle of the gap between the two
classes) and reported on the second, never used for any choice. Pairs never cross the halves. ``--window`` repeats
the measurement on pieces of that many seconds (the stream monitor's windows).

    python -m benchmarks.thresholds [--clips ../shared/clips] [--cache DIR] [--out FILE] [--write-card]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.accuracy import available_engines, crops_for, make_input, needs_crops
from benchmarks.calibrate_landmarks import projection_subset
from benchmarks.clipdata import DEFAULT_CACHE, ClipData, load_clips
from syncnet.card import CARD_PATH, load_card, no_signal_threshold
from syncnet.constants import DEFAULT_WINDOW_S, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.engines import Engine

log = logging.getLogger("thresholds")

SPEECH_RMS = 0.1  # -20 dBFS: the speechless soundtracks are played at a speech-like level
SEED = 1359
# files that share a recording's sound (one made from the other): never paired as "another recording's speech"
SAME_RECORDING = ("RD_Radio31", "wav2lipgfpgan_kim")
TARGET_REJECTED = 0.95  # share of mismatched / speechless inputs that must be judged no_signal
GENUINE, MISMATCHED, SPEECHLESS = "genuine", "mismatched", "speechless"


@dataclass
class Case:
    kind: str  # GENUINE, MISMATCHED or SPEECHLESS
    detail: str  # clip name(s) or soundtrack
    held_out: bool
    confidence: float
    frames: int  # windows the engine averaged over (its threshold may depend on it)

    def score(self, reference: int | None) -> float:
        """The confidence put on the threshold's scale: as if measured over ``reference`` frames (if any)."""
        return self.confidence * (np.sqrt(self.frames / reference) if reference else 1.0)


# --- soundtracks without speech ---------------------------------------------------------------------------------


def _level(x: np.ndarray) -> np.ndarray:
    return (SPEECH_RMS * x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return _level(rng.standard_normal(n))


def brown_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal(n))
    return _level(walk - np.convolve(walk, np.ones(801) / 801, mode="same"))  # drift removed, stays audible


def music(n: int, rng: np.random.Generator) -> np.ndarray:
    """Decaying harmonic notes (a random melody over chords, 2-5 notes a second) and a noise beat at 120 bpm."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    start = 0
    while start < n:
        length = int(SAMPLE_RATE / rng.uniform(2.0, 5.0))
        for semitone in rng.choice([0, 4, 7, 12], size=rng.integers(1, 4), replace=False) + rng.integers(-5, 6):
            pitch = 220.0 * 2 ** (semitone / 12)
            piece = t[: min(length, n - start)]
            tone = sum(np.sin(2 * np.pi * pitch * h * piece) / h for h in (1, 2, 3, 4))
            out[start : start + len(piece)] += tone * np.exp(-piece * 4.0)
        start += length
    beat = int(SAMPLE_RATE * 0.5)
    for onset in range(0, n, beat):
        hit = rng.standard_normal(min(1600, n - onset)) * np.exp(-np.arange(min(1600, n - onset)) / 300.0)
        out[onset : onset + len(hit)] += 2.0 * hit
    return _level(out)


def tone(n: int, rng: np.random.Generator) -> np.ndarray:
    return _level(np.sin(2 * np.pi * 440.0 * np.arange(n) / SAMPLE_RATE))


SOUNDTRACKS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "white noise": white_noise, "brown noise": brown_noise, "music": music, "440 Hz tone": tone,
}


# --- the cases -------------------------------------------------------------------------------------------------


def recording(name: str) -> str:
    """A key equal for files that share their sound."""
    return next((key for key in SAME_RECORDING if key in name), name)


def pieces(clip: ClipData, window_s: float | None) -> list[ClipData]:
    """The clip as it is, or its consecutive non-overlapping pieces of window_s seconds (the last partial one
    dropped)."""
    if window_s is None:
        return [clip]
    frames = int(round(window_s * FPS))
    return [
        ClipData(f"{clip.name}@{start / FPS:.0f}s", clip.lips[start : start + frames],
                 clip.audio[start * SAMPLES_PER_FRAME : (start + frames) * SAMPLES_PER_FRAME], clip.start + start,
                 frames, clip.num_faces, clip.kind, blendshapes=_rows(clip.blendshapes, start, start + frames))
        for start in range(0, len(clip.lips) - frames + 1, frames)
    ]


def _rows(x: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if x is None else x[start:stop]


def with_sound(clip: ClipData, audio: np.ndarray, name: str) -> ClipData:
    """``clip``'s lips (and blendshapes) with ``audio``, both cut to the shorter."""
    frames = min(len(clip.lips), len(audio) // SAMPLES_PER_FRAME)
    return ClipData(name, clip.lips[:frames], audio[: frames * SAMPLES_PER_FRAME], clip.start, frames,
                    clip.num_faces, clip.kind, blendshapes=_rows(clip.blendshapes, 0, frames))


def measure(engine: Engine, clips: list[ClipData], held_out: set[str], clips_dir: Path,
            window_s: float | None) -> list[Case]:
    """Confidence of ``engine`` on every genuine, mismatched and speechless input built from ``clips``."""
    rng = np.random.default_rng(SEED)
    crops = {c.name: crops_for(clips_dir / c.name) for c in clips} if needs_crops(engine) else {}

    def case(kind: str, detail: str, lips_of: ClipData, piece: ClipData) -> Case:
        face = crops.get(lips_of.name)
        face = None if face is None else face[piece.start - lips_of.start :][: len(piece.lips)]
        result = engine.run(make_input(piece, piece.audio, face, piece.blendshapes is not None))
        return Case(kind, detail, lips_of.name in held_out, float(result.confidence), len(result.window_dists))

    cases = []
    for clip in clips:
        for piece in pieces(clip, window_s):
            cases.append(case(GENUINE, piece.name, clip, piece))
            for sound, make in SOUNDTRACKS.items():
                cases.append(case(SPEECHLESS, sound, clip, with_sound(piece, make(len(piece.audio), rng), sound)))
        half = clip.name in held_out
        partners = [c for c in clips if (c.name in held_out) == half and recording(c.name) != recording(clip.name)]
        for other in partners:
            for piece in pieces(with_sound(clip, other.audio, f"{clip.name} + {other.name}"), window_s):
                cases.append(case(MISMATCHED, piece.name, clip, piece))
        log.info("%s %s: %d cases so far", engine.name, clip.name, len(cases))
    return cases


# --- statistics ------------------------------------------------------------------------------------------------


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a genuine input is surer than a negative one), ties counted half (Mann-Whitney)."""
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    greater = (positive[:, None] > negative[None, :]).mean()
    equal = (positive[:, None] == negative[None, :]).mean()
    return float(greater + 0.5 * equal)


def choose_threshold(positive: np.ndarray, negative: np.ndarray) -> float:
    """The cut maximising (genuine kept) - (negatives passed), at the middle of the gap it falls in."""
    values = np.unique(np.concatenate([positive, negative]))
    cuts = (values[:-1] + values[1:]) / 2
    scores = [(positive >= cut).mean() - (negative >= cut).mean() for cut in cuts]
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    return float(np.median(cuts[best]))


def rates(cases: list[Case], threshold: float, reference: int | None) -> dict[str, float]:
    """Misses (genuine judged no_signal) and false alarms (a negative given a verdict) at ``threshold``."""
    by_kind = {
        k: np.array([c.score(reference) for c in cases if c.kind == k]) for k in (GENUINE, MISMATCHED, SPEECHLESS)
    }
    negative = np.concatenate([by_kind[MISMATCHED], by_kind[SPEECHLESS]])
    return {
        "genuine": len(by_kind[GENUINE]),
        "negatives": len(negative),
        "missed": float((by_kind[GENUINE] < threshold).mean()) if len(by_kind[GENUINE]) else float("nan"),
        "false_alarm": float((negative >= threshold).mean()) if len(negative) else float("nan"),
        "rejected_mismatched": float((by_kind[MISMATCHED] < threshold).mean()) if len(by_kind[MISMATCHED]) else 0.0,
        "rejected_speechless": float((by_kind[SPEECHLESS] < threshold).mean()) if len(by_kind[SPEECHLESS]) else 0.0,
        "auc": roc_auc(by_kind[GENUINE], negative),
    }


# --- report ----------------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def distribution_rows(cases: list[Case], reference: int | None) -> list[str]:
    rows = []
    groups = [(GENUINE, None), (MISMATCHED, None), *((SPEECHLESS, s) for s in SOUNDTRACKS)]
    for kind, detail in groups:
        values = np.array([c.score(reference) for c in cases if c.kind == kind and detail in (None, c.detail)])
        if len(values):
            q = np.percentile(values, [0, 5, 25, 50, 75, 95, 100])
            rows.append(f"| {kind}{'' if detail is None else ': ' + detail} | {len(values)} | "
                        + " | ".join(f"{v:.3f}" for v in q) + " |")
    return rows


def render(engine: str, cases_by_window: dict[str, list[Case]], threshold: float, stored: float,
           reference: int | None) -> list[str]:
    whole = cases_by_window["whole clips"]
    fit = [c for c in whole if not c.held_out]
    scale = (f"confidence x sqrt(frames / {reference}), i.e. the threshold is the card's value scaled by "
             f"sqrt({reference} / frames)" if reference else "confidence (LSE-C) as it is")
    lines = [
        f"## Engine `{engine}`", "",
        f"Chosen on the fit half (whole clips): **{threshold:.3f}**; stored in the card: {stored:.3f}. "
        f"Compared: {scale}.", "",
        "By kind of input, whole clips, both halves:", "",
        "| input | n | min | 5% | 25% | median | 75% | 95% | max |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *distribution_rows(whole, reference), "",
        f"At the stored threshold {stored:.3f} (a genuine input below it is a miss; a mismatched or speechless one at "
        f"or above it is a false alarm):", "",
        "| inputs | half | genuine | negatives | ROC AUC | genuine missed | mismatched rejected | speechless rejected "
        "| false alarms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, cases in cases_by_window.items():
        for half, keep in (("fit", False), ("held out", True)):
            r = rates([c for c in cases if c.held_out == keep], stored, reference)
            lines.append(f"| {label} | {half} | {r['genuine']} | {r['negatives']} | {r['auc']:.3f} | "
                         f"{pct(r['missed'])} | {pct(r['rejected_mismatched'])} | {pct(r['rejected_speechless'])} | "
                         f"{pct(r['false_alarm'])} |")
    held = rates([c for c in whole if c.held_out], stored, reference)
    met = held["missed"] == 0 and min(held["rejected_mismatched"], held["rejected_speechless"]) >= TARGET_REJECTED
    lines += ["", f"Target on the held-out whole clips (>= {pct(TARGET_REJECTED)} of mismatched and of speechless "
              f"inputs judged no_signal, no genuine clip): **{'met' if met else 'NOT met'}**."]
    misses = sorted((c for c in whole if c.kind == GENUINE and c.score(reference) < stored),
                    key=lambda c: c.score(reference))
    alarms = sorted((c for c in whole if c.kind != GENUINE and c.score(reference) >= stored),
                    key=lambda c: -c.score(reference))
    if misses:
        lines.append("Genuine clips below it (both halves): "
                     + ", ".join(f"{c.detail} ({c.score(reference):.3f})" for c in misses))
    if alarms:
        lines.append(f"Negatives at or above it (both halves: {len(alarms)}, the first 10): "
                     + ", ".join(f"{c.detail} ({c.score(reference):.3f})" for c in alarms[:10]))
    lowest = min(c.score(reference) for c in fit if c.kind == GENUINE)
    highest = max(c.score(reference) for c in fit if c.kind != GENUINE)
    lines += ["", f"Fit half: lowest genuine {lowest:.3f}, highest negative {highest:.3f}.", ""]
    return lines


def write_card_threshold(engine: str, threshold: float, note: str, card: Path = CARD_PATH) -> None:
    """Set no_signal_threshold[engine] (and its note) in the card, keeping the rest of its text as it is."""
    text = card.read_text()
    data = json.loads(text)
    data["no_signal_threshold"][engine] = round(threshold, 3)
    line = '  "no_signal_threshold": ' + json.dumps(data["no_signal_threshold"])
    text = re.sub(r'  "no_signal_threshold": \{[^}]*\}', lambda _: line, text)
    key = f"no_signal_threshold_{engine}_note"
    if key in data:
        text = re.sub(rf'  "{key}": "(?:[^"\\]|\\.)*"', lambda _: f'  "{key}": {json.dumps(note)}', text)
    else:
        text = text.rstrip().removesuffix("}").rstrip() + f',\n  "{key}": {json.dumps(note)}\n}}\n'
    json.loads(text)  # still valid
    card.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=Path("../shared/clips"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="decoded faces (reruns are quick)")
    parser.add_argument("--engines", nargs="+", default=["syncnet", "fcn", "landmarks"])
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, help="also measure on pieces this long (s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS_thresholds.md")
    parser.add_argument("--write-card", action="store_true", help="store the chosen thresholds in the card")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    engines, skipped = available_engines(args.engines)
    clips = [dataclasses.replace(c, blendshapes=None) for c in load_clips(args.clips, args.cache)]  # as the pipeline
    held_out = {c.name for c in sorted(clips, key=lambda c: c.name)[1::2]}  # never used for any choice
    assert not held_out & {c.name for c in projection_subset(clips)}  # nor for the landmark projection
    body: list[str] = []
    for engine in engines:
        cases = {"whole clips": measure(engine, clips, held_out, args.clips, None),
                 f"{args.window:g} s windows": measure(engine, clips, held_out, args.clips, args.window)}
        reference = load_card().get("no_signal_reference_frames", {}).get(engine.name)
        fit = [c for c in cases["whole clips"] if not c.held_out]
        chosen = choose_threshold(np.array([c.score(reference) for c in fit if c.kind == GENUINE]),
                                  np.array([c.score(reference) for c in fit if c.kind != GENUINE]))
        if args.write_card:
            note = (f"{engine.name}: measured by python -m benchmarks.thresholds on {len(clips)} clips of "
                    f"../shared/clips (chosen on {len(clips) - len(held_out)} with Youden's J, reported on "
                    f"{len(held_out)} held out), "
                    f"for {reference} frames (5 s) and scaled by sqrt({reference} / frames); genuine against "
                    "mismatched and speechless soundtracks: see benchmarks/RESULTS_thresholds.md")
            write_card_threshold(engine.name, chosen, note)
        stored = chosen if args.write_card else no_signal_threshold(engine.name)
        body += render(engine.name, cases, chosen, stored, reference)
    load = os.getloadavg()
    head = [
        "# No-signal thresholds", "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; run time "
        f"{time.perf_counter() - started:.0f} s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"- Machine: {platform.platform()}, {os.cpu_count()} CPUs visible (shared), Python {platform.python_version()}",
        f"- Command: `python -m benchmarks.thresholds {' '.join(sys.argv[1:])}`",
        f"- Inputs: {len(clips)} clips (`clipdata.load_clips`: the derived `syncnet_example_audiodelay*` copies left "
        "out); genuine = each clip as it is; mismatched = its lips with every other recording's speech in the same "
        "half (files sharing a recording's sound never paired: " + ", ".join(SAME_RECORDING) + "), cut to the "
        "shorter; speechless = its lips with " + ", ".join(SOUNDTRACKS) + " at -20 dBFS RMS. Lip shapes alone (no "
        "MediaPipe blendshapes), as the pipeline gives them to the landmark engine.",
        f"- Split: {len(clips) - len(held_out)} clips (every other clip by name, the landmark projection's fit half) "
        f"choose the threshold (Youden's J, middle of the gap); the other {len(held_out)} are held out and only "
        "reported. Pairs never cross the halves.",
        "",
    ]
    head += [f"- Engine `{s.engine}` not measured: {s.reason}" for s in skipped]
    text = "\n".join([*head, "", *body])
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
