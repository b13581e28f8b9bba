"""Scoring videos for ``syncnet score``: one video to its rows, and the local backends that run many.

Every backend calls :func:`score_video`, which never raises for a video: bad input becomes an error row with its
one-line reason, and anything else an "internal error" row whose traceback is handed back to be logged.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from syncnet.errors import SyncNetError
from syncnet.gpu import gpu_task
from syncnet.verdict import DEFAULT_TOLERANCE, Tolerance

INTERNAL_ERROR = "internal error (a bug, logged with its details): {kind}"
WORKER_DIED = "the worker process died while scoring this video (crash or out of memory)"
MAX_ATTEMPTS = 2  # a video in flight when a worker died is tried once more before it gets an error row
TASKS_PER_WORKER = 2  # videos handed to each worker ahead, so that none waits for the next


@dataclass(frozen=True)
class Settings:
    """What every worker needs to score a video: engines, the crop protocol, the tolerance and the input limits."""

    engines: tuple[str, ...] | None = None  # None: all engines
    crop: str = "track"
    tolerance: Tolerance = DEFAULT_TOLERANCE  # what counts as in sync for the verdict column
    max_duration_s: float | None = None
    max_bytes: int | None = None


@dataclass
class Scored:
    """The outcome of one video: its rows, the engines that could not run, and a bug's traceback if one hit."""

    path: str
    rows: list[dict[str, Any]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    traceback: str | None = None


def error_row(path: str, message: str, settings: Settings) -> dict[str, Any]:
    return {"path": path, "status": "error", "error": message, "protocol": settings.crop}


def report_rows(path: str, report: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """One row per engine result of ``Report.to_dict()``, by DESIGN.md's column names."""
    return [
        {
            "path": path,
            "status": "ok",
            "error": "",
            "duration_s": report["duration_s"],
            "frames": report["frames"],
            "engine": result["engine"],
            "offset_frames": result["offset_frames"],
            "offset_ms": result["offset_ms"],
            "calibrated_offset_frames": result["calibrated_offset_frames"],
            "confidence": result["confidence"],
            "min_dist": result["min_dist"],
            "verdict": result.get("verdict", ""),
            "time_s": result["time_s"],
            "protocol": settings.crop,
        }
        for result in report["results"]
    ]


def score_video(path: str, settings: Settings) -> Scored:
    """Analyse one video with the engines loaded in this process; never raises for the video's sake."""
    from syncnet.api import analyze

    try:
        report = analyze(
            path, settings.engines, crop=settings.crop, tolerance=settings.tolerance,
            max_duration_s=settings.max_duration_s,
            max_bytes=settings.max_bytes,
        ).to_dict()
    except (SyncNetError, OSError) as error:  # bad input: missing, unreadable, no face, silent...
        return Scored(path, [error_row(path, " ".join(str(error).split()) or type(error).__name__, settings)])
    except Exception as bug:
        kind = f"{type(bug).__name__}: {' '.join(str(bug).split())}".rstrip(": ")
        return Scored(path, [error_row(path, INTERNAL_ERROR.format(kind=kind), settings)], [], traceback.format_exc())
    rows = report_rows(path, report, settings)
    if not rows:  # every engine chosen was skipped
        reasons = "; ".join(f"{s['engine']}: {s['reason']}" for s in report["skipped"])
        rows = [error_row(path, f"no engine could run ({reasons})", settings)]
    return Scored(path, rows, report["skipped"])


def prepare_worker(settings: Settings, threads: int | None) -> None:
    """Set up a worker: Ctrl-C left to the parent, the engines loaded once, its share of the cores.

    The thread counts are set in the libraries the engines loaded (torch only for syncnet and fcn): importing torch
    for nothing would cost every worker seconds and hundreds of MB.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from syncnet.api import load_engines

    load_engines(settings.engines)
    if threads:
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
        if "cv2" in sys.modules:
            sys.modules["cv2"].setNumThreads(threads)


def threads_per_worker(workers: int) -> int:
    """Cores split evenly among the workers, at least one thread each."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_in_process(paths: Sequence[str], settings: Settings) -> Iterator[Scored]:
    """One video after the other in this process (``--workers 1``); each video is one
    :func:`syncnet.gpu.gpu_task` call (on a ZeroGPU Space, the GPU is held per video, not for the whole batch)."""
    score = gpu_task(score_video)
    for path in paths:
        yield score(path, settings)


def run_in_pool(paths: Sequence[str], settings: Settings, workers: int, threads: int | None) -> Iterator[Scored]:
    """``workers`` processes, each loading the engines once; results come in the order videos finish.

    A worker that dies (a crash in native code, out of memory) breaks the pool: a new pool is started and the videos
    that were in flight are tried once more; a video in flight at a second death gets an error row.
    """
    todo = list(reversed(paths))
    attempts: dict[str, int] = {}
    while todo:
        before = set(multiprocessing.active_children())
        pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=prepare_worker,
            initargs=(settings, threads or threads_per_worker(workers)),
        )
        running: dict[Future, str] = {}
        try:
            broken = False
            while (todo or running) and not broken:
                while todo and len(running) < workers * TASKS_PER_WORKER:
                    path = todo.pop()
                    running[pool.submit(score_video, path, settings)] = path
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = True
                    else:
                        running.pop(future)
                        yield future.result()
            for path in running.values():  # a broken pool: everything still in flight
                attempts[path] = attempts.get(path, 0) + 1
                if attempts[path] < MAX_ATTEMPTS:
                    todo.append(path)
                else:
                    yield Scored(path, [error_row(path, WORKER_DIED, settings)])
        except BaseException:  # Ctrl-C, or the caller stopped early: end the workers now, not after their video
            _end(pool, before)
            raise
        pool.shutdown(wait=not broken, cancel_futures=True)
        if broken:
            _end(pool, before)


def _end(pool: ProcessPoolExecutor, before: set) -> None:
    """Drop the queued videos and end this pool's worker processes (those started since ``before``)."""
    pool.shutdown(wait=False, cancel_futures=True)
    ours = set(multiprocessing.active_children()) - before
    for child in ours:
        child.terminate()
    for child in ours:
        child.join(timeout=5)
