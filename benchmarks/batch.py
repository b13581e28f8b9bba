"""Videos per minute and peak memory: a loop of `syncnet detect` calls against `syncnet score` (1 and 2 worker
processes, and Ray actors on a local Ray instance), on the same clips, back to back.

    python benchmarks/batch.py --clips ../shared/clips --limit 20 --rounds 2

Each variant is a fresh subprocess tree timed from start to exit (start-up included: the loop pays it per video,
`score` once per worker). Peak memory is the largest sum of resident sets over the variant's process tree (every
process it started: workers, Ray's raylet and GCS), sampled every 0.2 s. Rounds run the variants in turn, so that
the machine's other load falls on all of them alike; each variant's offsets are checked against the detect loop's.
Writes the table to benchmarks/RESULTS_batch.md (``--append`` adds to it).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "RESULTS_batch.md"
VARIANTS = {
    "detect loop": None,
    "score --workers 1": ["--workers", "1"],
    "score --workers 2": ["--workers", "2"],
    "score --backend ray (2 actors)": ["--backend", "ray", "--workers", "2"],
}
SAMPLE_S = 0.2


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree) / 2**20


class Watcher:
    """Samples, in the background, the memory of the process tree handed to ``watch`` (``peak``, MB) and the rows
    of a results file, noting when each row appeared (``finished``, seconds from the start)."""

    def __init__(self, results: Path | None = None):
        self.peak = 0.0
        self.finished: list[float] = []
        self._results = results
        self._pid: int | None = None
        self._started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def watch(self, pid: int | None) -> None:
        self._pid = pid

    def video_done(self) -> None:
        self.finished.append(time.perf_counter() - self._started)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            if self._pid is not None:
                self.peak = max(self.peak, tree_rss_mb(self._pid))
            if self._results is not None and self._results.exists():
                rows = len(self._results.read_bytes().splitlines())
                self.finished += [time.perf_counter() - self._started] * (rows - len(self.finished))

    def close(self, videos: int) -> Run:
        """Stop sampling; videos finished after the last sample are counted at the end."""
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._started
        return Run(wall, self.peak, (self.finished + [wall] * videos)[:videos])


@dataclass
class Run:
    """One variant's run: wall time (s), peak memory (MB), when each video finished (s from the start)."""

    wall: float
    peak: float
    finished: list[float]

    def rate(self) -> float:
        """Videos per minute over the whole run, start-up included."""
        return 60 * len(self.finished) / self.wall

    def steady_rate(self) -> float:
        """Videos per minute once the first video is done (start-up left out)."""
        return 60 * (len(self.finished) - 1) / (self.finished[-1] - self.finished[0])


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SYNCNET_WEIGHTS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


def run_detect_loop(clips: list[Path], engine: str):
    """One `syncnet detect --json` subprocess per clip, one after another (what users of the original code do)."""
    watcher = Watcher()
    offsets: dict[str, tuple[int, float] | None] = {}
    try:
        for clip in clips:
            process = subprocess.Popen([sys.executable, "-m", "syncnet", "detect", str(clip), "--engine", engine,
                                        "--json"], cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
            watcher.watch(process.pid)
            stdout, _ = process.communicate()
            watcher.video_done()
            result = json.loads(stdout)["results"][0] if process.returncode == 0 else None
            offsets[clip.name] = None if result is None else (result["offset_frames"], result["confidence"])
    finally:
        run = watcher.close(len(clips))
    return run, offsets


def run_score(clips: list[Path], engine: str, options: list[str], folder: Path):
    """One `syncnet score` subprocess over all the clips (listed in a file), into a fresh results file.

    (Every clip gives one row with one engine, so the rows count the videos finished.)
    """
    from syncnet.batch_files import ResultsFile

    listed = folder / "clips.txt"
    listed.write_text("".join(f"{clip}\n" for clip in clips))
    out = folder / f"results_{time.monotonic_ns()}.jsonl"
    watcher = Watcher(out)
    try:
        process = subprocess.Popen([sys.executable, "-m", "syncnet", "score", f"@{listed}", "--out", str(out),
                                    "--engine", engine, *options], cwd=ROOT, env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        watcher.watch(process.pid)
        _, stderr = process.communicate()
    finally:
        run = watcher.close(len(clips))
    if process.returncode != 0:
        raise RuntimeError(f"syncnet score {' '.join(options)} failed: {stderr[-2000:]}")
    results = ResultsFile(out)
    results.close()
    offsets = {Path(r["path"]).name: None if r["status"] != "ok" else (r["offset_frames"], r["confidence"])
               for r in results.rows}
    return run, offsets


def pick_clips(folder: Path, limit: int | None) -> list[Path]:
    """The clips in ``folder`` by name; with ``limit``, that many spread evenly over the list."""
    from syncnet.batch import expand_inputs

    clips = [Path(p) for p in expand_inputs([folder])]
    if limit is None or limit >= len(clips):
        return clips
    return [clips[round(i * (len(clips) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else clips[:1]


def agreement(reference: dict, offsets: dict) -> str:
    """How many clips got the detect loop's offset (or its failure), and the largest change in confidence."""
    def offset(outcome):
        return None if outcome is None else outcome[0]

    same = sum(offset(offsets.get(name)) == offset(outcome) for name, outcome in reference.items())
    deltas = [abs(offsets[n][1] - reference[n][1]) for n in reference if reference[n] and offsets.get(n)]
    return f"{same}/{len(reference)} same" + (f", max confidence change {max(deltas):.1e}" if deltas else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "clips")
    parser.add_argument("--limit", type=int, default=None, help="use this many clips, spread over the folder")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--engine", default="landmarks")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--append", action="store_true", help="add to RESULTS_batch.md instead of replacing it")
    args = parser.parse_args()

    clips = pick_clips(args.clips, args.limit)
    seconds = sum(_duration(c) for c in clips)
    load_before = os.getloadavg()
    runs: dict[str, list[Run]] = {v: [] for v in args.variants}
    agree: dict[str, str] = {}
    reference = None
    with tempfile.TemporaryDirectory(prefix="syncnet-bench-") as tmp:
        for round_number in range(args.rounds):
            for variant in args.variants:
                if VARIANTS[variant] is None:
                    run, offsets = run_detect_loop(clips, args.engine)
                    reference = reference or offsets
                else:
                    run, offsets = run_score(clips, args.engine, VARIANTS[variant], Path(tmp))
                if reference is not None:
                    agree[variant] = agreement(reference, offsets)
                runs[variant].append(run)
                print(f"round {round_number + 1} {variant}: {run.wall:.1f} s, {run.rate():.1f} videos/min "
                      f"({run.steady_rate():.1f} after the first video at {run.finished[0]:.1f} s), "
                      f"peak {run.peak:.0f} MB, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    write_results(args, clips, seconds, runs, agree, load_before, load_after)


def _duration(clip: Path) -> float:
    from syncnet.media import probe_media

    return probe_media(clip).duration_s or 0.0


def write_results(args, clips, seconds, runs: dict[str, list[Run]], agree, load_before, load_after) -> None:
    base = "detect loop" if "detect loop" in runs else None

    def median(variant: str, measure) -> float:
        return statistics.median(measure(run) for run in runs[variant])

    lines = [
        f"## {len(clips)} clips, engine {args.engine}",
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before {', '.join(f'{x:.1f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.1f}' for x in load_after)}",
        f"- Command: `python benchmarks/batch.py --clips {args.clips} --limit {args.limit} --rounds {args.rounds} "
        f"--engine {args.engine}`",
        f"- Clips: {len(clips)} from `{args.clips.name}/` ({seconds:.0f} s of video), {args.rounds} round(s), "
        "variants run in turn within each round",
        "",
        "| variant | videos/min, whole run: median (each round) | vs detect loop | first video done (s) | "
        "videos/min after the first | peak memory (MB) | offsets vs detect loop |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for variant, variant_runs in runs.items():
        rates = [run.rate() for run in variant_runs]
        ratio = statistics.median(rates) / median(base, Run.rate) if base else float("nan")
        lines.append(
            f"| {variant} | {statistics.median(rates):.1f} ({', '.join(f'{r:.1f}' for r in rates)}) | {ratio:.2f}x | "
            f"{median(variant, lambda run: run.finished[0]):.1f} | {median(variant, Run.steady_rate):.1f} | "
            f"{max(run.peak for run in variant_runs):.0f} | {agree.get(variant, '')} |"
        )
    per_round = _per_round_ratios({v: [run.rate() for run in r] for v, r in runs.items()})
    if per_round:
        lines += ["", f"Whole-run ratios within each round (back to back): {per_round}"]
    text = "\n".join(lines) + "\n"
    header = "# Batch scoring: a loop of `detect` calls against `syncnet score`\n\n"
    if args.append and RESULTS.exists():
        RESULTS.write_text(RESULTS.read_text() + "\n" + text)
    else:
        RESULTS.write_text(header + text)
    print(text)


def _per_round_ratios(rate: dict[str, list[float]]) -> str:
    pairs = [("score --workers 2", "detect loop"), ("score --backend ray (2 actors)", "score --workers 2")]
    parts = []
    for a, b in pairs:
        if a in rate and b in rate:
            ratios = [x / y for x, y in zip(rate[a], rate[b], strict=True)]
            parts.append(f"{a} / {b}: {', '.join(f'{r:.2f}x' for r in ratios)}")
    return "; ".join(parts)


if __name__ == "__main__":
    main()
