"""The whole command line, end to end: real-time factor per engine, time per stage, and peak memory against length.

    python benchmarks/pipeline.py speed  [--clip CLIP] [--engines fcn,landmarks,...] [--out FILE]
    python benchmarks/pipeline.py memory [--clip CLIP] [--minutes 1,5,20] [--engine landmarks] [--out FILE]
    python benchmarks/pipeline.py compare --baseline OTHER_CHECKOUT [--clip CLIP] [--engines ...] [--repeats N]

Each run is `python -m syncnet detect --json` in a child process (the CLI as a user runs it: start-up, model
loading, decoding, faces, engines). Real-time factor = wall-clock time / the clip's duration (below 1 is faster than
real time). Stage figures are the report's `timing_s` per frame: the stages run in overlapping threads, so they add
up to more than the wall-clock time. Peak memory is the child's maximum resident set size (`wait4`'s ru_maxrss);
CPU seconds are its user + system time (the cores' work: on 2 cores, a wall time below half of it is impossible).
Long files are made by repeating a clip (ffmpeg `-stream_loop`, streams copied) into a temporary folder.
SyncNet engines run on synthetic weights (same layout as the real ones) unless SYNCNET_WEIGHTS is set.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.synthetic_weights import write_weights  # noqa: E402

CLIPS = Path(os.environ.get("SYNCNET_CLIPS", ROOT.parent / "shared" / "clips"))
SPEED_CLIP = CLIPS / "visualvoice_interview.mp4"
MEMORY_CLIP = CLIPS / "visualvoice_noisy_restaurant.mp4"  # 1280x720, one face


class CliRun(NamedTuple):
    report: dict
    wall_s: float
    rss_mib: float
    cpu_s: float  # user + system


def run_cli(
    video: Path, engine: str, env: dict[str, str], extra: tuple[str, ...] = (), root: Path = ROOT
) -> CliRun:
    """One `syncnet detect --json` run of the checkout at `root`."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "syncnet", "detect", str(video), "--engine", engine, "--json", *extra],
            cwd=root, env=env, stdout=out, stderr=err,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{video.name} {engine}: exit {child.returncode}: {err.read().decode()[-500:]}")
        return CliRun(json.loads(out.read()), wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def repeated(clip: Path, minutes: float, folder: Path) -> Path:
    """A file of about `minutes` minutes: the clip over and over (streams copied, no re-encoding)."""
    from tests.media_tools import ffmpeg  # only here: the speed runs need no ffmpeg (a GPU machine may lack it)

    path = folder / f"{clip.stem}_{minutes:g}min{clip.suffix}"
    if not path.exists():
        ffmpeg("-stream_loop", "-1", "-i", str(clip), "-t", str(60 * minutes), "-c", "copy", str(path), timeout=600)
    return path


def environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if "SYNCNET_WEIGHTS" not in env:
        env["SYNCNET_WEIGHTS"] = str(write_weights(folder / "synthetic.model"))
    return env


def header(command: str) -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.machine()
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        f"- command: `{command}`",
        f"- engines' device: {os.environ.get('SYNCNET_DEVICE') or 'default (CUDA when torch sees one, else the CPU)'}",
        f"- load average at the start: {os.getloadavg()[0]:.1f}",
    ]


def speed(args: argparse.Namespace, folder: Path) -> list[str]:
    env = environment(folder)
    lines = header(f"python benchmarks/pipeline.py speed --clip {args.clip.name} --engines {args.engines}") + [
        "",
        "| engine | frames | duration s | wall s | real-time factor | CPU s | decode ms/f | faces ms/f | mfcc ms/f"
        " | engine ms/f | peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine in args.engines.split(","):
        report, wall, rss, cpu = run_cli(args.clip, engine, env)
        frames, timing = report["frames"], report["timing_s"]
        per_frame = {stage: 1000 * timing.get(stage, 0.0) / frames for stage in ("decode", "faces", "mfcc", engine)}
        lines.append(
            f"| {engine} | {frames} | {report['duration_s']:.1f} | {wall:.1f} | {wall / report['duration_s']:.2f}x |"
            f" {cpu:.1f} | {per_frame['decode']:.1f} | {per_frame['faces']:.1f} | {per_frame['mfcc']:.1f} |"
            f" {per_frame[engine]:.1f} | {rss:.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def compare(args: argparse.Namespace, folder: Path) -> list[str]:
    """This checkout against another (e.g. the last commit before streaming), run alternately on the same clip."""
    env = environment(folder)
    command = (f"python benchmarks/pipeline.py compare --clip {args.clip.name} --engines {args.engines}"
               f" --baseline {args.baseline} --repeats {args.repeats}")
    lines = header(command) + [
        "",
        "| engine | baseline wall s (RTF) | this wall s (RTF) | speed-up (median of per-round ratios) |"
        " baseline CPU s | this CPU s | baseline peak MiB | this peak MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for engine in args.engines.split(","):
        rounds = []
        for _ in range(args.repeats):
            rounds.append((run_cli(args.clip, engine, env, root=args.baseline), run_cli(args.clip, engine, env)))
        duration = rounds[0][1].report["duration_s"]

        old_wall, new_wall = (_median([r[i].wall_s for r in rounds]) for i in (0, 1))
        old_cpu, new_cpu = (_median([r[i].cpu_s for r in rounds]) for i in (0, 1))
        ratio = _median([old.wall_s / new.wall_s for old, new in rounds])
        lines.append(
            f"| {engine} | {old_wall:.1f} ({old_wall / duration:.2f}x) | {new_wall:.1f} ({new_wall / duration:.2f}x) |"
            f" {ratio:.2f}x | {old_cpu:.1f} | {new_cpu:.1f} | {max(old.rss_mib for old, _ in rounds):.0f} |"
            f" {max(new.rss_mib for _, new in rounds):.0f} |"
        )
        print(lines[-1], flush=True)
    return lines


def memory(args: argparse.Namespace, folder: Path) -> list[str]:
    env = environment(folder)
    command = (f"python benchmarks/pipeline.py memory --clip {args.clip.name} --minutes {args.minutes}"
               f" --engine {args.engine}")
    lines = header(command) + [
        "",
        "| minutes | frames | wall s | real-time factor | peak RSS MiB | tracks |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for minutes in (float(m) for m in args.minutes.split(",")):
        video = repeated(args.clip, minutes, folder)
        report, wall, rss, _ = run_cli(video, args.engine, env)
        lines.append(
            f"| {minutes:g} | {report['frames']} | {wall:.0f} | {wall / report['duration_s']:.2f}x | {rss:.0f} |"
            f" {len(report['tracks'])} |"
        )
        print(lines[-1], flush=True)
        video.unlink()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--clip", type=Path, default=SPEED_CLIP)
    p.add_argument("--engines", default="landmarks,fcn,syncnet,all")
    p.add_argument("--out", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("--clip", type=Path, default=SPEED_CLIP)
    p.add_argument("--engines", default="landmarks,fcn")
    p.add_argument("--baseline", type=Path, required=True, help="another checkout of the repository")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("memory")
    p.add_argument("--clip", type=Path, default=MEMORY_CLIP)
    p.add_argument("--minutes", default="1,5,20")
    p.add_argument("--engine", default="landmarks")
    p.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncnet-bench-") as folder:
        lines = {"speed": speed, "compare": compare, "memory": memory}[args.what](args, Path(folder))
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
