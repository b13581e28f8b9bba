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
    verdict_of,
)

# The engines whose verdict leads the report and whose offset drives the corrected video, most trusted first.
FIX_PREFERENCE = ("syncnet", "fcn", "landmarks")


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
        if not self.results:
            return "no engine could run, so there is no offset to correct"
        return "no sync signal (this sound does not follow these lips), so there is no offset to correct"


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
    best = preferred_result(report.results)
    if best is None:
        return "no engine could run"
    return f"{describe_offset(best, report.tolerance)} ({best.engine})"


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
