"""The SyncNet engines on CUDA against the CPU reference: the same numbers, and how fast.

    python benchmarks/gpu.py export --clips ../shared/clips --names A.mp4 B.mp4 --to segments/
    python benchmarks/gpu.py run --segments segments/ [--repeats 3] [--out RESULTS_gpu.md]

``export`` (on any machine with the face stage) writes each clip's speaking-face segment as a compressed ``.npz``
(``crops``: uint8 (n, 224, 224, 3) RGB, ``audio``: float32 16 kHz), so that ``run`` needs neither PyAV nor MediaPipe.
``run`` scores every segment with the windowed ``syncnet`` in float32 on the CPU (the reference) and on CUDA, and with
``fcn`` on CUDA in fp32 and bf16; it compares each with the reference (offset, LSE-D, LSE-C as fractions of the
reference's LSE-D, the measure of ``syncnet.fcn.Tolerance``) and times each engine call per video frame, after a
warm-up, round after round. Weights: ``SYNCNET_WEIGHTS`` if set, otherwise the tests' synthetic weights.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.syncnet_inputs import NO_LIPS, load_state  # noqa: E402
from syncnet.audio import mfcc  # noqa: E402
from syncnet.engines import Engine, EngineInput  # noqa: E402
from syncnet.fcn import BF16_TOLERANCE, FCNEngine, FCNSyncNet  # noqa: E402
from syncnet.model import SyncNetEngine, build_model  # noqa: E402
from syncnet.scoring import SyncResult  # noqa: E402

REFERENCE = "syncnet cpu fp32"


@dataclass
class Timed:
    """One engine on one segment: its result and its wall time per round."""

    result: SyncResult
    seconds: list[float]


def export(clips: Path, names: list[str], to: Path) -> None:
    """Write each named clip's speaking-face segment (crops and audio) as ``to/<name>.npz``."""
    from benchmarks.clipdata import segment_audio
    from syncnet.faces import crop_faces, track_face
    from syncnet.media import load_media

    to.mkdir(parents=True, exist_ok=True)
    for name in names:
        media = load_media(clips / name)
        track = track_face(media.frames, media.audio)
        crops = crop_faces(media.frames, track)
        np.savez_compressed(to / f"{name}.npz", crops=crops, audio=segment_audio(media.audio, track.start, track.stop))


def engines_to_compare(state: dict) -> dict[str, Engine]:
    """The reference and every engine on CUDA, each on its own copy of the weights."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    return {
        REFERENCE: SyncNetEngine(build_model(state), device=cpu),
        "syncnet cuda fp32": SyncNetEngine(build_model(state), device=cuda),
        "fcn cuda fp32": FCNEngine(FCNSyncNet(build_model(state), precision="fp32", device=cuda)),
        "fcn cuda bf16": FCNEngine(FCNSyncNet(build_model(state), precision="bf16", device=cuda)),
        "fcn cpu bf16": FCNEngine(FCNSyncNet(build_model(state), precision="bf16", device=cpu)),
    }


def timed_rounds(tasks: dict[str, Callable[[], SyncResult]], repeats: int) -> dict[str, Timed]:
    """Each task once per round, round after round, after one warm-up round (CUDA kernels load on first use)."""
    out = {name: Timed(task(), []) for name, task in tasks.items()}
    for _ in range(repeats):
        for name, task in tasks.items():
            started = time.perf_counter()
            out[name].result = task()
            out[name].seconds.append(time.perf_counter() - started)
    return out


def of_lse_d(value: float, ref: SyncResult) -> float:
    return abs(value) / ref.min_dist


def table(segments: dict[str, dict[str, Timed]], frames: dict[str, int]) -> list[str]:
    """Agreement with the reference and ms per frame, per engine, worst and median over the segments."""
    names = list(next(iter(segments.values())))
    lines = [
        "| engine | offsets equal | max abs(LSE-D diff) / LSE-D | max abs(LSE-C diff) / LSE-D | "
        "ms per frame (median over segments) | speed-up over syncnet cpu fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref_ms = statistics.median(1000 * min(s[REFERENCE].seconds) / frames[k] for k, s in segments.items())
    for name in names:
        pairs = [(s[REFERENCE].result, s[name].result) for s in segments.values()]
        equal = sum(r.offset_frames == f.offset_frames for r, f in pairs)
        d_diff = max(of_lse_d(f.min_dist - r.min_dist, r) for r, f in pairs)
        c_diff = max(of_lse_d(f.confidence - r.confidence, r) for r, f in pairs)
        ms = statistics.median(1000 * min(s[name].seconds) / frames[k] for k, s in segments.items())
        lines.append(f"| {name} | {equal}/{len(pairs)} | {d_diff:.1e} | {c_diff:.1e} | {ms:.2f} | "
                     f"{ref_ms / ms:.1f}x |")
    return lines


def per_segment(segments: dict[str, dict[str, Timed]], frames: dict[str, int]) -> list[str]:
    names = list(next(iter(segments.values())))
    lines = ["| segment | frames | " + " | ".join(f"{n} offset, ms/frame" for n in names) + " |",
             "| --- | ---: |" + " ---: |" * len(names)]
    for key, timed in segments.items():
        cells = " | ".join(f"{t.result.offset_frames:+d}, {1000 * min(t.seconds) / frames[key]:.2f}"
                           for t in timed.values())
        lines.append(f"| {key} | {frames[key]} | {cells} |")
    return lines


def run(segment_dir: Path, repeats: int) -> str:
    if not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device: this benchmark compares CUDA with the CPU")
    torch.backends.cuda.matmul.allow_tf32 = False  # as syncnet.gpu.device() sets it: float32 stays float32
    torch.backends.cudnn.allow_tf32 = False
    paths = sorted(segment_dir.glob("*.npz"))
    if not paths:
        raise SystemExit(f"no face segments (.npz) in {segment_dir}: write them with `benchmarks/gpu.py export`")
    state, source = load_state()
    engines = engines_to_compare(state)
    started = time.perf_counter()
    segments, frames = {}, {}
    for path in paths:
        with np.load(path) as z:
            crops, audio = z["crops"], z["audio"]
        inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=NO_LIPS)
        key = path.name.removesuffix(".npz")
        segments[key] = timed_rounds({n: functools.partial(e.run, inputs) for n, e in engines.items()}, repeats)
        frames[key] = len(crops)
    header = [
        f"Machine: {torch.cuda.get_device_name()}, {os.cpu_count()} logical CPUs ({platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads  ",
        f"Command: `python benchmarks/gpu.py run --segments {segment_dir.name} --repeats {repeats}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {time.perf_counter() - started:.0f} s  ",
        f"Segments: {len(segments)}, {sum(frames.values())} frames; weights: {source}  ",
        f"bf16 tolerance (syncnet.fcn.BF16_TOLERANCE): LSE-D {BF16_TOLERANCE.lse_d:.0e}, "
        f"LSE-C {BF16_TOLERANCE.lse_c:.0e} of LSE-D; best of {repeats} rounds after a warm-up",
    ]
    return "\n".join(header + ["", *table(segments, frames), "", *per_segment(segments, frames)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    ex = verbs.add_parser("export", help="write face segments of clips as .npz")
    ex.add_argument("--clips", type=Path, required=True)
    ex.add_argument("--names", nargs="+", required=True)
    ex.add_argument("--to", type=Path, required=True)
    rn = verbs.add_parser("run", help="compare and time the engines on CUDA and the CPU")
    rn.add_argument("--segments", type=Path, required=True)
    rn.add_argument("--repeats", type=int, default=3)
    rn.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    if args.verb == "export":
        export(args.clips, args.names, args.to)
        return
    text = run(args.segments, args.repeats)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
