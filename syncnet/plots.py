"""Pictures of a report: distance against offset, confidence over time, and the crops the engines saw."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # no pyplot: figures are plain objects (thread-safe, no display needed)

from syncnet.constants import FPS
from syncnet.scoring import OFFSETS, SyncResult
from syncnet.verdict import has_signal

if TYPE_CHECKING:
    from syncnet.report import Report

STRIP_FRAMES = 8  # crops shown in the strip
STRIP_HEIGHT = 112  # pixels per row of the strip
PANEL_SIZE = (3.6, 2.8)  # inches per engine panel
NO_SIGNAL_COLOUR = "grey"  # windows without a sync signal: hollow points, outside the drift's line


def plot_distances(results: Sequence[SyncResult]) -> Figure:
    """Mean distance against offset, one panel per engine (their distance scales differ), minimum marked."""
    count = max(len(results), 1)
    fig = Figure(figsize=(PANEL_SIZE[0] * count, PANEL_SIZE[1]))
    axes = fig.subplots(1, count, squeeze=False)
    for ax, result in zip(axes[0], results):
        ax.plot(OFFSETS, result.dists, marker="o", markersize=3)
        ax.axvline(result.offset_frames, color="tab:red", linestyle="--", linewidth=1)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(f"{result.engine}: offset {result.offset_frames:+d}")
        ax.set_xlabel("offset (frames, + = audio early)")
        ax.set_ylabel("distance")
        ax.grid(alpha=0.3)
    if not results:
        axes[0][0].text(0.5, 0.5, "no engine ran", ha="center", va="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    return fig


def plot_confidence(
    results: Sequence[SyncResult], start_frame: int = 0, row_frames: Mapping[str, np.ndarray] | None = None
) -> Figure:
    """Per-window confidence (median-filtered, at each engine's chosen offset) against time in the clip.

    ``row_frames`` gives each engine's frame per row (rows pooled from several tracks); otherwise the rows are
    consecutive frames from ``start_frame``. The line breaks where the frames jump (between tracks).
    """
    fig = Figure(figsize=(PANEL_SIZE[0] * 2, PANEL_SIZE[1]))
    ax = fig.subplots()
    for result in results:
        frames = (row_frames or {}).get(result.engine)
        if frames is None:
            frames = start_frame + np.arange(len(result.frame_confidence))
        values = np.asarray(result.frame_confidence, float)
        breaks = np.flatnonzero(np.diff(frames) > 1) + 1
        ax.plot(np.insert(frames / FPS, breaks, np.nan), np.insert(values, breaks, np.nan), label=result.engine)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("confidence")
    ax.grid(alpha=0.3)
    if results:
        ax.legend()
    fig.tight_layout()
    return fig


def plot_offsets(report: Report) -> Figure:
    """Calibrated offset (ms) over time: a bar per face track and engine, a point per window, the drift.

    A window whose result has no sync signal is a hollow grey point, not joined to the engine's line: its offset is
    chance, and the drift leaves it out too."""
    fig = Figure(figsize=(PANEL_SIZE[0] * 2, PANEL_SIZE[1]))
    ax = fig.subplots()
    engines = list(dict.fromkeys(r.engine for t in report.tracks for r in t.results))
    colours = {engine: f"C{i}" for i, engine in enumerate(engines)}
    for track in report.tracks:
        for r in track.results:
            ax.plot([track.t_start, track.t_end], [r.calibrated_offset_ms] * 2, color=colours[r.engine],
                    linewidth=3 if track.speaking else 1, alpha=1.0 if track.speaking else 0.4)
    chance = [((w.t_start + w.t_end) / 2, r.calibrated_offset_ms) for w in report.windows or []
              for r in w.results if not has_signal(r)]
    for engine in engines:
        points = [((w.t_start + w.t_end) / 2, r.calibrated_offset_ms) for w in report.windows or []
                  for r in w.results if r.engine == engine and has_signal(r)]
        drift = next((d for d in report.drift if d.engine == engine), None)
        label = engine if drift is None else f"{engine} (drift {drift.ms_per_minute:+.0f} ms/min)"
        if points:
            ax.plot(*zip(*points, strict=True), "o--", color=colours[engine], markersize=4, label=label)
        else:
            ax.plot([], [], color=colours[engine], label=label)
    if chance:
        ax.plot(*zip(*chance, strict=True), "o", color=NO_SIGNAL_COLOUR, markerfacecolor="none", markersize=4,
                label="no sync signal")
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("offset (ms, + = audio early)")
    ax.set_title("offset over time (thick: speaking faces' tracks; points: windows)")
    ax.grid(alpha=0.3)
    if engines:  # beside the axes: inside, it hid the windows' points
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0.0)
    fig.tight_layout()
    return fig


def render(fig: Figure, dpi: int = 100) -> np.ndarray:
    """The figure as a uint8 (H, W, 3) RGB image."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def sample_frames(frames: np.ndarray, count: int = STRIP_FRAMES) -> np.ndarray:
    """``count`` frames spread evenly over a sequence (all of them if there are fewer)."""
    if len(frames) <= count:
        return frames
    return frames[np.linspace(0, len(frames) - 1, count).round().astype(int)]


def crop_strip(crops: np.ndarray | None, mouths: np.ndarray | None = None) -> np.ndarray | None:
    """One RGB image: a row of face crops and, under it, the matching row of mouth crops."""
    rows = [_row(images) for images in (crops, mouths) if images is not None and len(images)]
    if not rows:
        return None
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return np.ascontiguousarray(np.concatenate(padded, axis=0))


def _row(images: np.ndarray) -> np.ndarray:
    """Resize (nearest neighbour) each image to STRIP_HEIGHT rows and put them side by side."""
    tiles = []
    for image in sample_frames(images):
        h, w = image.shape[:2]
        width = max(1, round(w * STRIP_HEIGHT / h))
        rows = np.linspace(0, h - 1, STRIP_HEIGHT).round().astype(int)
        cols = np.linspace(0, w - 1, width).round().astype(int)
        tiles.append(image[rows][:, cols])
    return np.concatenate(tiles, axis=1).astype(np.uint8)
