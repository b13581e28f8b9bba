"""What one analysis found, as a dataclass, as DESIGN.md's JSON, and in plain words."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from syncnet.engines import Skipped
from syncnet.constants import FPS
from syncnet.scoring import MS_PER_FRAME, SyncResult

# The engine whose offset drives the corrected video, best first.
FIX_PREFERENCE = ("syncnet", "fcn", "landmarks")


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

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        """DESIGN.md's CLI JSON object; ``detail`` adds the face segment and per-window confidence."""
        out: dict[str, Any] = {
            "input": self.input,
            "fps": float(self.fps),
            "duration_s": float(self.duration_s),
            "frames": int(self.frames),
            "results": [result_to_dict(r, detail) for r in self.results],
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

    def fix_offset_frames(self) -> int | None:
        """The offset (frames) the corrected video should undo: the preferred engine's calibrated offset."""
        result = preferred_result(self.results)
        return None if result is None else int(round(result.calibrated_offset_frames))


def _stream_fields(report: Report, detail: bool) -> dict[str, Any]:
    """The protocol, the face tracks, and (when asked for) the windows and the drift."""
    out: dict[str, Any] = {"protocol": report.protocol, "tracks": [track_to_dict(t, detail) for t in report.tracks]}
    if report.windows is not None:
        out["windows"] = [
            {"t_start": float(w.t_start), "t_end": float(w.t_end), "results": [result_to_dict(r) for r in w.results]}
            for w in report.windows
        ]
        out["drift"] = [
            {"engine": d.engine, "ms_per_minute": float(d.ms_per_minute), "windows": int(d.windows)}
            for d in report.drift
        ]
    return out


def track_to_dict(track: TrackReport, detail: bool = False) -> dict[str, Any]:
    return {
        "t_start": float(track.t_start),
        "t_end": float(track.t_end),
        "speaking": bool(track.speaking),
        "face": track.face,
        "results": [result_to_dict(r, detail) for r in track.results],
    }


def drift_ms_per_minute(times_s: Sequence[float], offsets_ms: Sequence[float]) -> float:
    """Least-squares slope of offsets (ms) against time, in ms per minute."""
    slope = np.polyfit(np.asarray(times_s, float) / 60.0, np.asarray(offsets_ms, float), 1)[0]
    return float(slope)


def track_lines(report: Report) -> list[str]:
    """Plain lines for the face tracks, the windows and the drift (after `summary_lines`)."""
    def found(results: list[SyncResult]) -> str:
        text = ", ".join(f"{r.engine} {r.offset_frames:+d} (confidence {r.confidence:.2f})" for r in results)
        return text or "too little of a speaking face to score"

    lines = []
    for t in report.tracks:
        speaking = "speaking" if t.speaking else "not speaking"
        lines.append(f"  track {t.t_start:7.2f} - {t.t_end:7.2f} s, face {t.face}, {speaking}: {found(t.results)}")
    for w in report.windows or []:
        lines.append(f"  window {w.t_start:7.2f} - {w.t_end:7.2f} s: {found(w.results)}")
    lines += [f"  drift {d.engine}: {d.ms_per_minute:+.1f} ms per minute over {d.windows} windows"
              for d in report.drift]
    return lines


TRACK_COLUMNS = ["t_start (s)", "t_end (s)", "face", "speaking", "engine", "offset (frames)", "offset (ms)",
                 "confidence"]


def track_rows(report: Report) -> list[list[Any]]:
    """One row per (track, engine), in TRACK_COLUMNS order: the per-shot table."""
    return [
        [round(t.t_start, 2), round(t.t_end, 2), t.face, "yes" if t.speaking else "no", r.engine, r.offset_frames,
         round(r.offset_ms, 1), round(r.confidence, 3)]
        for t in report.tracks
        for r in t.results
    ]


def result_to_dict(result: SyncResult, detail: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "engine": result.engine,
        "offset_frames": int(result.offset_frames),
        "offset_ms": float(result.offset_ms),
        "calibrated_offset_frames": float(result.calibrated_offset_frames),
        "confidence": float(result.confidence),
        "min_dist": float(result.min_dist),
        "dists": [float(d) for d in result.dists],
        "time_s": float(result.time_s),
    }
    if detail:
        out["frame_confidence"] = [float(c) for c in result.frame_confidence]
        out["verdict"] = describe_offset(result.offset_frames)
    return out


def skipped_to_dict(skipped: Skipped) -> dict[str, str]:
    return {"engine": skipped.engine, "reason": skipped.reason}


def window_to_dict(t_start: float, t_end: float, report: Report | None, error: str | None = None) -> dict[str, Any]:
    """One line of ``syncnet stream --json``: a window's results, or the reason it has none."""
    out: dict[str, Any] = {
        "t_start": float(t_start),
        "t_end": float(t_end),
        "results": [] if report is None else [result_to_dict(r) for r in report.results],
        "skipped": [] if report is None else [skipped_to_dict(s) for s in report.skipped],
    }
    if error is not None:
        out["error"] = error
    return out


def describe_offset(offset_frames: float) -> str:
    """The offset in words, with the fix: +k frames means the audio is early and must be delayed."""
    ms = round(abs(offset_frames) * MS_PER_FRAME)
    if ms == 0:
        return "in sync"
    if offset_frames > 0:
        return f"audio is {ms} ms early: delay it by {ms} ms"
    return f"audio is {ms} ms late: advance it by {ms} ms"


def describe_fix(offset_frames: int) -> str:
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
    lines = []
    for r in report.results:
        lines.append(
            f"{r.engine:>9}: {describe_offset(r.offset_frames)} (offset {r.offset_frames:+d} frames, "
            f"calibrated {r.calibrated_offset_frames:+.2f}), confidence {r.confidence:.3f}, "
            f"min dist {r.min_dist:.3f}, {r.time_s:.2f} s"
        )
    for s in report.skipped:
        lines.append(f"{s.engine:>9}: skipped: {s.reason}")
    return lines


RESULT_COLUMNS = [
    "engine",
    "offset (frames)",
    "offset (ms)",
    "verdict",
    "calibrated offset (frames)",
    "confidence",
    "min dist",
    "time (s)",
]


def result_rows(report: Report) -> list[list[Any]]:
    """One table row per engine, in RESULT_COLUMNS order, for side-by-side display."""
    return [
        [
            r.engine,
            r.offset_frames,
            round(r.offset_ms, 1),
            describe_offset(r.offset_frames),
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
