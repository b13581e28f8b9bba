"""The library's front door: the calls ``import syncnet`` exposes, as thin wrappers over the pipeline."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from syncnet import batch, pipeline
from syncnet.batch import BatchSummary
from syncnet.constants import DEFAULT_WINDOW_S
from syncnet.engines import Engine, Skipped
from syncnet.pipeline import Progress, WindowReport
from syncnet.report import Report
from syncnet.verdict import Tolerance, parse_tolerance

EngineChoice = str | Sequence[str] | None  # "all", an engine name, several names; None means all


def analyze(
    source: str | os.PathLike,
    engines: EngineChoice = None,
    *,
    progress: Progress | None = None,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    crop: str = "track",
    tolerance: str | Tolerance | None = None,
    window_s: float | None = None,
) -> Report:
    """Measure the audio-video offset of a video file with the chosen engines (all by default).

    ``progress(fraction, stage)`` is called as the work goes on. Raises :class:`syncnet.SyncNetError` for input
    that cannot be used (missing or unreadable file, no face, no sound, too long...). ``crop`` is the scoring
    protocol: ``"track"`` (syncnet_python's tracked face crops) or ``"full-frame"`` (Wav2Lip's LRS protocol).
    ``tolerance`` is what counts as in sync for the verdicts: a preset (``"itu"``, the default, ``"itu-accept"``,
    ``"ebu-r37"``, ``"atsc"``), ``"EARLY_MS,LATE_MS"`` or a :class:`syncnet.verdict.Tolerance`. Every face track
    of at least 1 s is scored (``report.tracks``); ``window_s`` adds results per window of that many seconds and
    the drift (``report.windows``, ``report.drift``). Files up to 4 hours by default.
    """
    chosen = parse_tolerance(tolerance)  # refused before anything is decoded
    report = pipeline.analyze_file(
        source, engines, progress=progress, max_duration_s=max_duration_s, max_bytes=max_bytes, crop=crop,
        window_s=window_s,
    )
    report.tolerance = chosen
    return report


def analyze_stream(
    url: str,
    engines: EngineChoice = None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    max_seconds: float | None = None,
    allow_private: bool = False,
    tolerance: str | Tolerance | None = None,
) -> Iterator[WindowReport]:
    """Follow an HLS stream window by window; each item has ``t_start``, ``t_end`` and a ``report`` or ``error``.

    ``tolerance`` is what counts as in sync, as for :func:`analyze`.
    """
    chosen = parse_tolerance(tolerance)  # refused before the stream is opened
    windows = pipeline.analyze_stream(
        url, engines, window_s=window_s, max_seconds=max_seconds, allow_private=allow_private
    )
    return with_tolerance(windows, chosen)


def with_tolerance(windows: Iterator[WindowReport], tolerance: Tolerance) -> Iterator[WindowReport]:
    """The windows, each report judged with ``tolerance``; closing this closes the stream."""
    try:
        for window in windows:
            if window.report is not None:
                window.report.tolerance = tolerance
            yield window
    finally:
        windows.close()


def load_engines(engines: EngineChoice = None) -> tuple[list[Engine], list[Skipped]]:
    """Load the chosen engines once for this process; those that cannot run come back as ``Skipped`` with why."""
    return pipeline.get_engines(engines)


def score(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    engines: EngineChoice = None,
    **options,
) -> BatchSummary:
    """Score many videos (files, folders, ``@list.txt``) into a results file (.csv, .jsonl or .parquet).

    One row per (video, engine), appended as videos finish; videos already in ``out`` are skipped. Options as
    :func:`syncnet.batch.score` (``crop``, ``workers``, ``backend="ray"``, ``overwrite``, curation...). Returns the
    summary: videos scored and failed, per engine the mean and median LSE-C and LSE-D.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    return batch.score(inputs, out, engines, **options)
