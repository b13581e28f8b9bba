"""The library's front door: the calls ``import syncnet`` exposes, as thin wrappers over the pipeline."""
from __future__ import annotations

import os
from typing import Iterator, Sequence

from syncnet import pipeline
from syncnet.constants import DEFAULT_WINDOW_S
from syncnet.engines import Engine, Skipped
from syncnet.pipeline import Progress, WindowReport
from syncnet.report import Report

EngineChoice = str | Sequence[str] | None  # "all", an engine name, several names; None means all


def analyze(
    source: str | os.PathLike,
    engines: EngineChoice = None,
    *,
    progress: Progress | None = None,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    crop: str = "track",
    window_s: float | None = None,
) -> Report:
    """Measure the audio-video offset of a video file with the chosen engines (all by default).

    ``progress(fraction, stage)`` is called as the work goes on. Raises :class:`syncnet.SyncNetError` for input
    that cannot be used (missing or unreadable file, no face, no sound, too long...). ``crop`` is the scoring
    protocol: ``"track"`` (syncnet_python's tracked face crops) or ``"full-frame"`` (Wav2Lip's LRS protocol).
    Every face track of at least 1 s is scored (``report.tracks``); ``window_s`` adds results per window of that
    many seconds and the drift (``report.windows``, ``report.drift``). Files up to 4 hours by default.
    """
    return pipeline.analyze_file(
        source, engines, progress=progress, max_duration_s=max_duration_s, max_bytes=max_bytes, crop=crop,
        window_s=window_s,
    )


def analyze_stream(
    url: str,
    engines: EngineChoice = None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    max_seconds: float | None = None,
    allow_private: bool = False,
) -> Iterator[WindowReport]:
    """Follow an HLS stream window by window; each item has ``t_start``, ``t_end`` and a ``report`` or ``error``."""
    return pipeline.analyze_stream(
        url, engines, window_s=window_s, max_seconds=max_seconds, allow_private=allow_private
    )


def load_engines(engines: EngineChoice = None) -> tuple[list[Engine], list[Skipped]]:
    """Load the chosen engines once for this process; those that cannot run come back as ``Skipped`` with why."""
    return pipeline.get_engines(engines)
