"""Speed of the windowed `syncnet` engine against `fcn`, stage by stage, on the same clip and weights.

    python benchmarks/engines.py [--clip tests/data/clips/syncnet_example.avi] [--threads 2] [--repeats 3]

Prints a markdown table: ms per video frame for the lip stream, the audio stream and the distances, the ratio,
and the floor (the lip stream's FLOPs per frame over this machine's measured float32 matmul FLOP/s). Weights:
``SYNCNET_WEIGHTS`` if set, otherwise the test fixture's synthetic weights (same layout, same arithmetic).
Variants of `fcn` are timed and checked for accuracy alongside (plain layout, bf16, whole-sequence audio).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syncnet.audio import mfcc  # noqa: E402
from syncnet.fcn import FCNSyncNet, distance_matrix  # noqa: E402
from syncnet.media import load_media  # noqa: E402
from syncnet.model import (  # noqa: E402
    CROP_SIZE,
    SAMPLES_PER_FRAME,
    build_model,
    n_windows,
    offset_distances,
    windowed_audio_embeddings,
    windowed_lip_embeddings,
)

DEFAULT_CLIP = ROOT / "tests" / "data" / "clips" / "syncnet_example.avi"
MATMUL_N = 2048


def load_state() -> tuple[dict, str]:
    if os.environ.get("SYNCNET_WEIGHTS"):
        from syncnet.model import weights_layout
        from syncnet.weights import load_spec, load_weights

        return load_weights(load_spec(), weights_layout()).state_dict, "SYNCNET_WEIGHTS"
    from tests.synthetic_weights import synthetic_state_dict

    return synthetic_state_dict(), "synthetic (test fixture recipe; the real syncnet_v2.model is not available here)"


def centre_crops(frames: np.ndarray) -> np.ndarray:
    """224x224 BGR centre crops (a stand-in for the face stage, which does not change the engines' cost)."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    out = [cv2.resize(f[top : top + side, left : left + side], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
           for f in frames]
    return np.ascontiguousarray(np.stack(out)[..., ::-1])


def interleaved(tasks: dict, repeats: int) -> dict[str, tuple[object, list[float]]]:
    """Run every task once per round, round after round (a shared machine's load then hits all of them alike).

    Returns each task's last result and its per-round wall times, after one warm-up round.
    """
    results = {name: fn() for name, fn in tasks.items()}
    times: dict[str, list[float]] = {name: [] for name in tasks}
    for _ in range(repeats):
        for name, fn in tasks.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (results[name], times[name]) for name in tasks}


def matmul() -> None:
    torch.mm(_A, _A)


_A = torch.randn(MATMUL_N, MATMUL_N)


def lip_flops_per_frame(net: FCNSyncNet, frames: np.ndarray) -> float:
    with FlopCounterMode(display=False) as counter:
        net.embed_lips(frames[:5], 1)
    return counter.get_total_flops()


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def fmt(times: list[float], n: int) -> str:
    ms = [t / n * 1000 for t in times]
    return f"{statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=125, help="first N frames of the clip (default 5 s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    state, source = load_state()
    media = load_media(args.clip)
    frames = centre_crops(media.frames[: args.frames])
    audio = media.audio[: len(frames) * SAMPLES_PER_FRAME]
    cc = mfcc(audio)
    n = n_windows(len(frames), len(audio))
    load_before = os.getloadavg()
    net = build_model(state)
    fcn, fcn_plain = FCNSyncNet(net), FCNSyncNet(net, channels_last=False)

    def bf16_lips():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fcn.embed_lips(frames, n).float()

    lip_s, aud_s = windowed_lip_embeddings(net, frames, n), windowed_audio_embeddings(net, cc, n)
    lip_f, aud_f = fcn.embed_lips(frames, n), fcn.embed_audio(cc, n)
    runs = interleaved(
        {
            ("syncnet", "lip"): lambda: windowed_lip_embeddings(net, frames, n),
            ("fcn", "lip"): lambda: fcn.embed_lips(frames, n),
            ("syncnet", "audio"): lambda: windowed_audio_embeddings(net, cc, n),
            ("fcn", "audio"): lambda: fcn.embed_audio(cc, n),
            ("syncnet", "distances"): lambda: offset_distances(lip_s, aud_s),
            ("fcn", "distances"): lambda: distance_matrix(lip_f, aud_f),
            "fcn lip, no channels-last": lambda: fcn_plain.embed_lips(frames, n),
            "fcn lip, bf16 autocast": bf16_lips,
            "fcn audio, whole sequence": lambda: fcn.embed_audio(cc, n, "sequence"),
            "matmul": matmul,
        },
        args.repeats,
    )
    stages = {e: {s: runs[(e, s)] for s in ("lip", "audio", "distances")} for e in ("syncnet", "fcn")}
    variants = {k: v for k, v in runs.items() if isinstance(k, str) and k != "matmul"}
    flops = lip_flops_per_frame(fcn, frames)
    peak = 2 * MATMUL_N**3 / min(runs["matmul"][1])
    floor_ms = flops / peak * 1000

    def offset(dists: np.ndarray) -> int:
        return int(np.argmin(dists.mean(axis=0))) - 15

    d_s, d_f = stages["syncnet"]["distances"][0], stages["fcn"]["distances"][0]
    d_bf16 = distance_matrix(variants["fcn lip, bf16 autocast"][0], aud_f)
    d_seq = distance_matrix(lip_f, variants["fcn audio, whole sequence"][0])
    total = {e: [sum(t) for t in zip(*(stages[e][s][1] for s in ("lip", "audio", "distances")))] for e in stages}

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
        f"(torch {torch.__version__}, {args.threads} threads; shared with other jobs)  ",
        f"Command: `python benchmarks/engines.py --clip {args.clip.name} --frames {args.frames} "
        f"--threads {args.threads} --repeats {args.repeats}`  ",
        f"Load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
        f"Input: {args.clip.name}, {len(frames)} frames ({n} windows), weights: {source}  ",
        "",
        "ms per video frame, median (min-max) over the rounds; speed-up = ratio of the medians; per-round "
        "speed-up = median (min-max) of the ratios within each round (both engines ran back to back):",
        "",
        "| stage | syncnet (windowed) | fcn | speed-up | per-round speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    rows = [(stage, stages["syncnet"][stage][1], stages["fcn"][stage][1]) for stage in ("lip", "audio", "distances")]
    for stage, ts, tf in rows + [("**total**", total["syncnet"], total["fcn"])]:
        paired = sorted(a / b for a, b in zip(ts, tf))
        ratio = statistics.median(ts) / statistics.median(tf)
        lines.append(f"| {stage} | {fmt(ts, n)} | {fmt(tf, n)} | {ratio:.2f}x | "
                     f"{statistics.median(paired):.2f}x ({paired[0]:.2f}-{paired[-1]:.2f}) |")
    fcn_lip_ms = statistics.median(stages["fcn"]["lip"][1]) / n * 1000
    lines += [
        "",
        f"Floor: lip stream {flops / 1e9:.3f} GFLOP per frame / measured float32 matmul {peak / 1e9:.0f} GFLOP/s "
        f"({MATMUL_N}x{MATMUL_N}, best round) = **{floor_ms:.2f} ms per frame**; fcn lip stream = "
        f"**{fcn_lip_ms / floor_ms:.2f}x the floor** (median round; best round "
        f"{min(stages['fcn']['lip'][1]) / n * 1000 / floor_ms:.2f}x).",
        "",
        f"Agreement: offset syncnet {offset(d_s):+d}, fcn {offset(d_f):+d}; lip embeddings max rel. diff "
        f"{rel(lip_f, lip_s):.1e}, audio {rel(aud_f, aud_s):.1e}, distances {rel(d_f, d_s):.1e}.",
        "",
        "| fcn variant | ms per frame | accuracy against the fp32 windowed embeddings |",
        "| --- | --- | --- |",
        f"| lip, no channels-last | {fmt(variants['fcn lip, no channels-last'][1], n)} | "
        f"max rel. {rel(variants['fcn lip, no channels-last'][0], lip_s):.1e} |",
        f"| lip, bf16 autocast | {fmt(variants['fcn lip, bf16 autocast'][1], n)} | "
        f"max rel. {rel(variants['fcn lip, bf16 autocast'][0], lip_s):.1e}, distances {rel(d_bf16, d_s):.1e}, "
        f"offset {offset(d_bf16):+d} |",
        f"| audio, whole sequence | {fmt(variants['fcn audio, whole sequence'][1], n)} | "
        f"max rel. {rel(variants['fcn audio, whole sequence'][0], aud_s):.1e}, distances {rel(d_seq, d_s):.1e}, "
        f"offset {offset(d_seq):+d} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
