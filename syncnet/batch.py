"""``syncnet score``: score many videos into one results file, resumably, in parallel, locally or on Ray.

```python
import syncnet

summary = syncnet.score(["clips/"], "results.csv", engines="landmarks", workers=2)
print(summary.to_dict()["engines"]["landmarks"]["lse_c_mean"])
```
Inputs are video files, folders (searched recursively for video files) and ``@list.txt`` files (one path per line,
relative to the list's folder). The same video named twice is scored once; videos already in the results file are
skipped (``overwrite=True`` starts again). Rows are appended as videos finish (:mod:`syncnet.batch_files`); one bad
video becomes an error row and the batch goes on (:mod:`syncnet.batch_workers`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from syncnet.batch_files import ResultsFile, Row
from syncnet.batch_workers import Scored, Settings, run_in_pool, run_in_process
from syncnet.constants import CROP_PROTOCOLS
from syncnet.errors import BadArgument, SyncNetError
from syncnet.report import FIX_PREFERENCE
from syncnet.verdict import Tolerance, parse_tolerance

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".asf",
     ".ogv", ".3gp", ".mxf"}
)
BACKENDS = ("local", "ray")
OUT_OF_SYNC = frozenset({"audio_early", "audio_late"})
FIXED_SUFFIX = "_synced.mp4"

Progress = Callable[[int, int], None]  # (videos finished this run, videos to score this run)


# ---- inputs -------------------------------------------------------------------------------------------------------

def expand_inputs(inputs: Sequence[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()) -> list[str]:
    """The videos named by files, folders (recursive, by extension) and ``@list.txt`` files, each once, in order.

    A file or folder named on the command line must exist (a path inside a list need not: it becomes an error
    row); folders under ``exclude`` (e.g. the corrected copies) are not searched.
    """
    excluded = [Path(e).resolve() for e in exclude]
    seen: dict[str, str] = {}  # real path -> the path as first named
    for item in inputs:
        for path in _expand_one(os.fspath(item), excluded):
            seen.setdefault(os.path.realpath(path), path)
    if not seen:
        raise BadArgument(f"no video files in {', '.join(os.fspath(i) for i in inputs)}")
    return list(seen.values())


def _expand_one(item: str, excluded: list[Path]) -> Iterator[str]:
    if item.startswith("@"):
        yield from _read_list(Path(item[1:]))
    elif os.path.isdir(item):
        for root, folders, files in os.walk(item):
            folders[:] = sorted(f for f in folders if Path(root, f).resolve() not in excluded)
            yield from (os.path.join(root, f) for f in sorted(files) if Path(f).suffix.lower() in VIDEO_EXTENSIONS)
    elif os.path.exists(item):
        yield item
    else:
        raise BadArgument(f"no such file or folder: {item}")


def _read_list(path: Path) -> Iterator[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BadArgument(f"cannot read the list {path}: {error}") from None
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry if os.path.isabs(entry) else os.path.normpath(path.parent / entry)


# ---- the run ------------------------------------------------------------------------------------------------------

@dataclass
class Curation:
    """Which videos pass (the preferred engine's confidence and offset), and their corrected copies."""

    engine_rule: str
    min_confidence: float | None
    max_offset: int | None
    passed_list: str | None
    passed: int = 0
    fix_dir: str | None = None
    fixed: int = 0
    fix_errors: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    """What a run did and what the results file now holds (all its rows, this run's and earlier ones)."""

    out: str
    scored: int  # videos in the file with at least one result
    failed: int  # videos in the file with none (an error row)
    skipped: int  # videos already in the file when this run started
    run: int  # videos finished by this run
    left: int  # videos this run did not get to (interrupted)
    elapsed_s: float
    engines: dict[str, dict[str, Any]]
    skipped_engines: dict[str, str]
    interrupted: bool = False
    curation: Curation | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["videos_per_min"] = round(60 * self.run / self.elapsed_s, 2) if self.elapsed_s > 0 else None
        return out

    def lines(self) -> list[str]:
        """The summary in words, for stderr."""
        rate = f", {self.to_dict()['videos_per_min']} videos/min" if self.run else ""
        lines = [
            f"{self.scored} videos scored, {self.failed} failed in {self.out} ({self.run} this run in "
            f"{self.elapsed_s:.1f} s{rate}; {self.skipped} already done)"
        ]
        if self.interrupted:
            lines.append(f"interrupted: {self.left} videos left; run the same command again to go on")
        if self.engines:
            lines.append(f"{'engine':<10} {'videos':>6} {'LSE-C mean':>10} {'median':>7} "
                         f"{'LSE-D mean':>10} {'median':>7}")
        for name, s in self.engines.items():
            lines.append(
                f"{name:<10} {s['videos']:>6} {s['lse_c_mean']:>10.3f} {s['lse_c_median']:>7.3f} "
                f"{s['lse_d_mean']:>10.3f} {s['lse_d_median']:>7.3f}"
            )
        lines += [f"{name}: skipped: {reason}" for name, reason in self.skipped_engines.items()]
        if self.curation is not None:
            c = self.curation
            lines.append(f"curation ({c.engine_rule}): {c.passed} of {self.scored} videos pass"
                         + (f", listed in {c.passed_list}" if c.passed_list else ""))
            if c.fix_dir is not None:
                lines.append(f"{c.fixed} corrected copies in {c.fix_dir}")
            lines += [f"not corrected: {e}" for e in c.fix_errors]
        return lines


def score(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    engines: str | Sequence[str] | None = None,
    *,
    crop: str = "track",
    tolerance: str | Tolerance | None = None,
    workers: int | None = None,
    threads: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    overwrite: bool = False,
    min_confidence: float | None = None,
    max_offset: int | None = None,
    passed_list: str | os.PathLike | None = None,
    fix_dir: str | os.PathLike | None = None,
    summary_path: str | os.PathLike | None = None,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    progress: Progress | None = None,
    on_scored: Callable[[Scored], None] | None = None,
) -> BatchSummary:
    """Score every video named by ``inputs`` into ``out`` (.csv, .jsonl or .parquet) and summarise the file.

    ``workers`` processes (local; default 1, in this process) or Ray actors (``backend="ray"``; default one per
    CPU) each load the engines once and use ``threads`` threads (default: the cores split among the workers).
    With ``min_confidence`` and/or ``max_offset``, the videos that pass are listed in ``passed_list`` (default:
    beside ``out``), and with ``fix_dir`` those that pass but are out of sync get a corrected copy there.
    Ctrl-C (KeyboardInterrupt) stops the run with the finished rows kept; the summary says so.
    """
    _check_arguments(crop, workers, threads, backend, ray_address, min_confidence, max_offset)
    from syncnet.pipeline import resolve_engines  # (imports the pipeline; kept out of `import syncnet.batch`)

    settings = Settings(tuple(resolve_engines(engines)), crop, parse_tolerance(tolerance), max_duration_s, max_bytes)
    exclude = [fix_dir] if fix_dir is not None else []
    paths = expand_inputs(inputs, exclude=exclude)
    started = time.perf_counter()
    results = ResultsFile(out, overwrite=overwrite)
    done = {os.path.realpath(r["path"]) for r in results.rows}
    todo = [p for p in paths if os.path.realpath(p) not in done]
    skipped_engines: dict[str, str] = {}
    finished, interrupted = 0, False
    scoring = _run(todo, settings, workers, threads, backend, ray_address)
    try:
        if progress is not None:
            progress(0, len(todo))
        for scored in scoring:
            results.append(scored.rows)
            finished += 1
            skipped_engines.update({s["engine"]: s["reason"] for s in scored.skipped})
            if scored.traceback:
                log.error("internal error on %s:\n%s", scored.path, scored.traceback)
            if on_scored is not None:
                on_scored(scored)
            if progress is not None:
                progress(finished, len(todo))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        scoring.close()
        results.close()
    curation = None  # (not after Ctrl-C: the run stops at once; the same command again goes on and curates)
    if not interrupted and (min_confidence is not None or max_offset is not None or fix_dir is not None):
        curation = curate(results.rows, settings.engines, min_confidence, max_offset,
                          passed_list or _beside(out, ".passed.txt"), fix_dir)
    summary = summarize(results.rows, out=os.fspath(out), skipped=len(paths) - len(todo), run=finished,
                        left=len(todo) - finished, elapsed_s=time.perf_counter() - started,
                        skipped_engines=skipped_engines, interrupted=interrupted, curation=curation)
    if summary_path is not None:
        Path(summary_path).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    return summary


def _check_arguments(crop, workers, threads, backend, ray_address, min_confidence, max_offset) -> None:
    if crop not in CROP_PROTOCOLS:
        raise BadArgument(f"unknown crop protocol {crop!r}; choose from {', '.join(CROP_PROTOCOLS)}")
    if backend not in BACKENDS:
        raise BadArgument(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if ray_address and backend != "ray":
        raise BadArgument("--ray-address needs --backend ray")
    for name, value in (("--workers", workers), ("--threads", threads)):
        if value is not None and value < 1:
            raise BadArgument(f"{name} must be at least 1")
    if min_confidence is not None and min_confidence < 0:
        raise BadArgument("--min-confidence must not be negative")
    if max_offset is not None and max_offset < 0:
        raise BadArgument("--max-offset must not be negative")


def _run(todo: list[str], settings: Settings, workers, threads, backend, ray_address) -> Iterator[Scored]:
    """The backend's results as videos finish; closing this generator stops the backend's workers."""
    if not todo:
        return
    if backend == "ray":
        from syncnet.batch_ray import run_on_ray

        yield from run_on_ray(todo, settings, workers, threads, ray_address)
    elif (workers or 1) == 1 and threads is None:
        yield from run_in_process(todo, settings)
    else:
        yield from run_in_pool(todo, settings, workers or 1, threads)


def _beside(out: str | os.PathLike, suffix: str) -> str:
    path = Path(out)
    return os.fspath(path.with_name(path.stem + suffix))


# ---- summary and curation -----------------------------------------------------------------------------------------

def summarize(rows: Sequence[Row], **run: Any) -> BatchSummary:
    """Videos scored and failed, and per engine the mean and median LSE-C and LSE-D over the scored videos."""
    by_video: dict[str, list[Row]] = {}
    for row in rows:
        by_video.setdefault(row["path"], []).append(row)
    scored = sum(any(r["status"] == "ok" for r in video) for video in by_video.values())
    engines: dict[str, dict[str, Any]] = {}
    for name in _engine_order(r["engine"] for r in rows if r["status"] == "ok"):
        ok = [r for r in rows if r["status"] == "ok" and r["engine"] == name]
        confidence, min_dist = [r["confidence"] for r in ok], [r["min_dist"] for r in ok]
        verdicts: dict[str, int] = {}
        for r in ok:
            if r["verdict"]:
                verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        engines[name] = {
            "videos": len(ok),
            "lse_c_mean": statistics.fmean(confidence),
            "lse_c_median": statistics.median(confidence),
            "lse_d_mean": statistics.fmean(min_dist),
            "lse_d_median": statistics.median(min_dist),
            "verdicts": verdicts,
        }
    return BatchSummary(scored=scored, failed=len(by_video) - scored, engines=engines, **run)


def _engine_order(names: Iterable[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(FIX_PREFERENCE)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def judged_rows(rows: Sequence[Row], engines: Sequence[str] | None) -> dict[str, Row]:
    """Per scored video, the row that judges it: the most trusted of the chosen engines that scored it."""
    rank = {name: i for i, name in enumerate(FIX_PREFERENCE)}
    chosen = None if engines is None else set(engines)
    best: dict[str, Row] = {}
    for row in rows:
        if row["status"] != "ok" or (chosen is not None and row["engine"] not in chosen):
            continue
        current = best.get(row["path"])
        if current is None or rank.get(row["engine"], len(rank)) < rank.get(current["engine"], len(rank)):
            best[row["path"]] = row
    return best


def fix_offset(row: Row) -> int:
    """The offset (frames) a corrected copy undoes: the calibrated offset, rounded (as ``detect --fix`` does)."""
    return int(round(row["calibrated_offset_frames"]))


def passes(row: Row, min_confidence: float | None, max_offset: int | None) -> bool:
    """Confidence at least ``min_confidence`` and |offset| at most ``max_offset`` frames (either may be None)."""
    return (min_confidence is None or row["confidence"] >= min_confidence) and (
        max_offset is None or abs(fix_offset(row)) <= max_offset
    )


def out_of_sync(row: Row) -> bool:
    """The verdict says the audio is early or late; without a verdict, a non-zero offset to undo."""
    return row["verdict"] in OUT_OF_SYNC if row["verdict"] else fix_offset(row) != 0


def curate(
    rows: Sequence[Row],
    engines: Sequence[str] | None,
    min_confidence: float | None,
    max_offset: int | None,
    passed_list: str | os.PathLike,
    fix_dir: str | os.PathLike | None,
) -> Curation:
    """Write the list of videos that pass; with ``fix_dir``, corrected copies of those that pass but are out of sync.

    A corrected copy already there is kept (a rerun does not write it again).
    """
    rule = ", ".join(
        [f"the most trusted of {', '.join(_engine_order(engines or FIX_PREFERENCE))}"]
        + ([f"confidence >= {min_confidence:g}"] if min_confidence is not None else [])
        + ([f"|offset| <= {max_offset} frames"] if max_offset is not None else [])
    )
    passing = [row for row in judged_rows(rows, engines).values() if passes(row, min_confidence, max_offset)]
    Path(passed_list).write_text("".join(f"{row['path']}\n" for row in passing), encoding="utf-8")
    curation = Curation(rule, min_confidence, max_offset, os.fspath(passed_list), len(passing))
    if fix_dir is not None:
        curation.fix_dir = os.fspath(fix_dir)
        _write_fixes([row for row in passing if out_of_sync(row)], Path(fix_dir), curation)
    return curation


def _write_fixes(rows: list[Row], folder: Path, curation: Curation) -> None:
    from syncnet.remux import write_corrected

    folder.mkdir(parents=True, exist_ok=True)
    names: set[str] = set()
    for row in rows:
        name = Path(row["path"]).stem + FIXED_SUFFIX
        if name in names:  # two videos of the same name in different folders
            digest = hashlib.sha1(os.path.realpath(row["path"]).encode()).hexdigest()[:8]
            name = f"{Path(row['path']).stem}_{digest}{FIXED_SUFFIX}"
        names.add(name)
        target = folder / name
        if target.exists():
            curation.fixed += 1
            continue
        try:
            write_corrected(row["path"], target, fix_offset(row))
            curation.fixed += 1
        except (SyncNetError, OSError) as error:
            curation.fix_errors.append(f"{row['path']}: {' '.join(str(error).split())}")
