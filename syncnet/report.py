"""What one analysis found, as a dataclass, as DESIGN.md's JSON, and in plain words."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from syncnet.card import no_signal_threshold
from syncnet.constants import FPS
from syncnet.engines import Skipped
from syncnet.scoring import MS_PER_FRAME, SyncResult
from syncnet.verdict import (
    DEFAULT_TOLERANCE,
    NO_SIGNAL,
    Tolerance,
    describe_result,
    fix_frames,
    no_signal_reason,
    verdict_of,
)

# The engines whose verdict leads the report and whose offset drives the corrected video, most trusted first.
FIX_PREFERENCE = ("syncnet", "fcn", "landmarks")
SILENT_WINDOW_WORDS = "no sync signal: the sound is silent"


@dataclass
class TrackReport:
    """One face track (a shot, or the part of it where one face is seen), scored on its own."""

    start: int  # first frame
    stop: int  # one past the last frame
    results: list[SyncResult]
    speaking: bool  # its lips follow the sound better than every face on screen with it
    face: str = ""  # where the face is ("on the left"...), or "full frame"

    @property
    def t_start(self) -> float:
        return self.start / FPS

    @property
    def t_end(self) -> float:
        return self.stop / FPS


@dataclass
class WindowResult:
    """The results over one stretch of time of a file (``detect --window S``)."""

    t_start: float
    t_end: float
    results: list[SyncResult]


@dataclass
class Drift:
    """How an engine's calibrated offset moves over a file: least-squares slope over its windows."""

    engine: str
    ms_per_minute: float
    windows: int


@dataclass
class Report:
    """The outcome of one pipeline call on one clip (or one stream window)."""

    input: str
    duration_s: float
    frames: int
    results: list[SyncResult]
    timing_s: dict[str, float]
    skipped: list[Skipped]
    fps: float = FPS
    segment: tuple[int, int] = (0, 0)  # [start, stop) frames of the face segment the engines saw
    face_summary: str = ""  # which face was followed, over which frames (FaceTrack.describe())
    crops: np.ndarray | None = field(default=None, repr=False)  # uint8 (n, 224, 224, 3) sample of face crops
    mouths: np.ndarray | None = field(default=None, repr=False)  # uint8 (n, h, w, 3) sample of mouth crops
    protocol: str = "track"  # how the engines saw the face: "track" (tracked crops) or "full-frame"
    tracks: list[TrackReport] = field(default_factory=list)  # every face track of at least 1 s, in time order
    windows: list[WindowResult] | None = None  # per-window results when asked for (detect --window S)
    drift: list[Drift] = field(default_factory=list)  # per engine, when there are enough windows
    result_frames: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # frame of each combined row
    tolerance: Tolerance = DEFAULT_TOLERANCE  # what counts as in sync; every verdict is judged with it

    @property
    def verdict(self) -> str | None:
        """The most trusted engine's verdict (syncnet, then fcn, then landmarks); None when no engine ran."""
        best = preferred_result(self.results)
        return None if best is None else verdict_of(best, self.tolerance)

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        """DESIGN.md's CLI JSON object; ``detail`` adds the face segment and per-window confidence."""
        out: dict[str, Any] = {
            "input": self.input,
            "fps": float(self.fps),
            "duration_s": float(self.duration_s),
            "frames": int(self.frames),
            "verdict": self.verdict,
            "results": [result_to_dict(r, detail, self.tolerance) for r in self.results],
            "timing_s": {stage: float(seconds) for stage, seconds in self.timing_s.items()},
            "skipped": [skipped_to_dict(s) for s in self.skipped],
        }
        out.update(_stream_fields(self, detail))
        if detail:
            out["segment"] = {"start_frame": int(self.segment[0]), "stop_frame": int(self.segment[1])}
            out["face"] = self.face_summary
        return out

    def to_json(self, detail: bool = False, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(detail), indent=indent)

    def fix_offset_frames(self) -> float | None:
        """How far (frames, + = delay) the corrected video shifts the audio, following the top-level verdict.

        Out of sync: the preferred engine's calibrated offset, as it is said (to the nearest 10 ms). In sync: 0, the
        copy leaves the audio where it is (a shift below what viewers notice is not worth a guess). No signal, or no
        engine ran: None, there is no offset to trust and no corrected video.
        """
        result = preferred_result(self.results)
        if result is None:
            return None
        return fix_frames(verdict_of(result, self.tolerance), result.calibrated_offset_ms)

    def no_fix_reason(self) -> str:
        """Why there is no corrected video (when fix_offset_frames() is None)."""
        result = preferred_result(self.results)
        if result is None:
            return "no engine could run, so there is no offset to correct"
        return f"no sync signal ({no_signal_reason(len(result.window_dists))}), so there is no offset to correct"


def _stream_fields(report: Report, detail: bool) -> dict[str, Any]:
    """The protocol, the face tracks, and (when asked for) the windows and the drift."""
    out: dict[str, Any] = {
        "protocol": report.protocol,
        "tracks": [track_to_dict(t, detail, report.tolerance) for t in report.tracks],
    }
    if report.windows is not None:
        out["windows"] = [
            {"t_start": float(w.t_start), "t_end": float(w.t_end),
             "results": [result_to_dict(r, tolerance=report.tolerance) for r in w.results]}
            for w in report.windows
        ]
        out["drift"] = [
            {"engine": d.engine, "ms_per_minute": float(d.ms_per_minute), "windows": int(d.windows)}
            for d in report.drift
        ]
    return out


def track_to_dict(
    track: TrackReport, detail: bool = False, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    return {
        "t_start": float(track.t_start),
        "t_end": float(track.t_end),
        "speaking": bool(track.speaking),
        "face": track.face,
        "results": [result_to_dict(r, detail, tolerance) for r in track.results],
    }


def drift_ms_per_minute(times_s: Sequence[float], offsets_ms: Sequence[float]) -> float:
    """Least-squares slope of offsets (ms) against time, in ms per minute."""
    slope = np.polyfit(np.asarray(times_s, float) / 60.0, np.asarray(offsets_ms, float), 1)[0]
    return float(slope)


def track_lines(report: Report) -> list[str]:
    """Plain lines for the face tracks and the windows (each led by its verdict), the drift (after `summary_lines`)."""
    def found(results: list[SyncResult]) -> str:
        text = ", ".join(f"{r.engine} {r.offset_frames:+d} (confidence {r.confidence:.2f})" for r in results)
        return text or "too little of a speaking face to score"

    def verdict(results: list[SyncResult]) -> str:
        return f"{describe_preferred(results, report.tolerance)}; " if results else ""

    lines = []
    for t in report.tracks:
        speaking = "speaking" if t.speaking else "not speaking"
        lines.append(f"  track {t.t_start:7.2f} - {t.t_end:7.2f} s, face {t.face}, {speaking}: "
                     f"{verdict(t.results)}{found(t.results)}")
    for w in report.windows or []:
        lines.append(f"  window {w.t_start:7.2f} - {w.t_end:7.2f} s: {verdict(w.results)}{found(w.results)}")
    lines += [f"  drift {d.engine}: {d.ms_per_minute:+.1f} ms per minute over {d.windows} windows with a sync "
              "signal" for d in report.drift]
    return lines


TRACK_COLUMNS = ["t_start (s)", "t_end (s)", "face", "speaking", "engine", "verdict", "offset (frames)",
                 "offset (ms)", "confidence"]


def track_rows(report: Report) -> list[list[Any]]:
    """One row per (track, engine), in TRACK_COLUMNS order: the per-shot table."""
    return [
        [round(t.t_start, 2), round(t.t_end, 2), t.face, "yes" if t.speaking else "no", r.engine,
         describe_offset(r, report.tolerance), r.offset_frames, round(r.offset_ms, 1), round(r.confidence, 3)]
        for t in report.tracks
        for r in t.results
    ]


def result_to_dict(
    result: SyncResult, detail: bool = False, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """One engine's result as DESIGN.md's JSON, its verdict judged with ``tolerance``."""
    out: dict[str, Any] = {
        "engine": result.engine,
        "offset_frames": int(result.offset_frames),
        "offset_ms": float(result.offset_ms),
        "calibrated_offset_frames": float(result.calibrated_offset_frames),
        "confidence": float(result.confidence),
        "min_dist": float(result.min_dist),
        "dists": [float(d) for d in result.dists],
        "time_s": float(result.time_s),
        "verdict": verdict_of(result, tolerance),
        "tolerance_ms": tolerance.as_list(),
    }
    if detail:
        out["frame_confidence"] = [float(c) for c in result.frame_confidence]
        out["verdict_text"] = describe_result(result, tolerance)
    return out


def skipped_to_dict(skipped: Skipped) -> dict[str, str]:
    return {"engine": skipped.engine, "reason": skipped.reason}


def window_to_dict(
    t_start: float, t_end: float, report: Report | None, error: str | None = None, *, silent: bool = False
) -> dict[str, Any]:
    """One line of ``syncnet stream --json``: a window's verdict and results, or the reason it has none.

    A silent window (``silent``: no sound at all) says ``no_signal``; a window that failed otherwise has no verdict.
    """
    out: dict[str, Any] = {
        "t_start": float(t_start),
        "t_end": float(t_end),
        "verdict": window_verdict(report, silent),
        "results": [] if report is None else [result_to_dict(r, tolerance=report.tolerance) for r in report.results],
        "skipped": [] if report is None else [skipped_to_dict(s) for s in report.skipped],
    }
    if error is not None:
        out["error"] = error
    return out


def describe_failed_window(error: str | None, silent: bool = False) -> str:
    """What a stream window without a report says, in the CLI and the app alike: a silent window has no sync signal;
    any other failure says why."""
    return SILENT_WINDOW_WORDS if silent else (error or "the window could not be analysed")


def window_verdict(report: Report | None, silent: bool = False) -> str | None:
    """A stream window's verdict: its report's, ``no_signal`` for a silent window, else None (it failed)."""
    if report is not None:
        return report.verdict
    return NO_SIGNAL if silent else None


def describe_offset(result: SyncResult, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The verdict in words, with the fix: + means the audio is early and must be delayed."""
    return describe_result(result, tolerance)


def describe_verdict(report: Report) -> str:
    """The top-level verdict in words, with the engine that gave it."""
    return describe_preferred(report.results, report.tolerance)


def describe_preferred(results: Sequence[SyncResult], tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The most trusted engine's verdict among ``results`` in words, with that engine (a report's, a window's)."""
    best = preferred_result(results)
    if best is None:
        return "no engine could run"
    return f"{describe_offset(best, tolerance)} ({best.engine})"


def describe_fix(offset_frames: float) -> str:
    """What the corrected video does to the audio, for an offset in frames."""
    ms = round(abs(offset_frames) * MS_PER_FRAME)
    if ms == 0:
        return "audio left as it is (in sync)"
    return f"audio {'delayed' if offset_frames > 0 else 'advanced'} by {ms} ms"


def preferred_result(results: Sequence[SyncResult]) -> SyncResult | None:
    """The result of the most trusted engine that ran (syncnet, then fcn, then landmarks)."""
    rank = {name: i for i, name in enumerate(FIX_PREFERENCE)}
    ranked = sorted(results, key=lambda r: rank.get(r.engine, len(rank)))
    return ranked[0] if ranked else None


def summary_lines(report: Report) -> list[str]:
    """Human-readable lines: one per engine that ran, one per engine that was skipped."""
    lines = [f"  verdict: {describe_verdict(report)}; tolerance {report.tolerance.describe()}"]
    for r in report.results:
        lines.append(
            f"{r.engine:>9}: {describe_offset(r, report.tolerance)} (offset {r.offset_frames:+d} frames, "
            f"calibrated {r.calibrated_offset_frames:+.2f}), confidence {r.confidence:.3f} "
            f"(no signal below {no_signal_threshold(r.engine, len(r.window_dists)):.3g}), "
            f"min dist {r.min_dist:.3f}, {r.time_s:.2f} s"
        )
    for s in report.skipped:
        lines.append(f"{s.engine:>9}: skipped: {s.reason}")
    return lines


RESULT_COLUMNS = [
    "engine",
    "verdict",
    "offset (frames)",
    "offset (ms)",
    "calibrated (frames)",
    "confidence",
    "min dist",
    "time (s)",
]


def result_rows(report: Report) -> list[list[Any]]:
    """One table row per engine, in RESULT_COLUMNS order, for side-by-side display."""
    return [
        [
            r.engine,
            describe_offset(r, report.tolerance),
            r.offset_frames,
            round(r.offset_ms, 1),
            round(r.calibrated_offset_frames, 2),
            round(r.confidence, 3),
            round(r.min_dist, 3),
            round(r.time_s, 3),
        ]
        for r in report.results
    ]


def timing_rows(report: Report) -> list[list[Any]]:
    """(stage, seconds) rows, stages in the order they ran."""
    return [[stage, round(seconds, 3)] for stage, seconds in report.timing_s.items()]
