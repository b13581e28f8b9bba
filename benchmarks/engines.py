"""Speed of the windowed `syncnet` engine against `fcn`, stage by stage, on the same clip and weights.

    python benchmarks/engines.py [--clip tests/data/clips/syncnet_example.avi] [--threads 2] [--repeats 3]

Prints a markdown table: ms per video frame for the lip stream, the audio stream, the distances and the whole
engine call, for the windowed `syncnet` (float32, the reference) and `fcn` at each precision (fp32, bf16) side by
side, with the speed-ups; the floor (the lip stream's FLOPs per frame over this machine's measured float32 matmul
FLOP/s); and each engine's agreement with the reference on the clip. Weights: ``SYNCNET_WEIGHTS`` if set, otherwise
the test fixture's synthetic weights (same layout, same arithmetic). Variants of `fcn` that are not used are timed
and checked alongside (plain layout, whole-sequence audio, and the lip stream's first layer as the sliding Conv3d that
`fcn` used before it ran a 2-D convolution over stacked frames).
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
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.syncnet_inputs import NO_LIPS, load_state  # noqa: E402
from syncnet.audio import mfcc  # noqa: E402
from syncnet.constants import SAMPLES_PER_FRAME  # noqa: E402
from syncnet.engines import EngineInput  # noqa: E402
from syncnet.fcn import PRECISIONS, FCNEngine, FCNSyncNet, distance_matrix  # noqa: E402
from syncnet.media import load_media  # noqa: E402
from syncnet.model import (  # noqa: E402
    CROP_SIZE,
    MAX_OFFSET,
    VIDEO_WINDOW,
    SyncNetEngine,
    build_model,
    n_windows,
    offset_distances,
    windowed_audio_embeddings,
    windowed_lip_embeddings,
)

DEFAULT_CLIP = ROOT / "tests" / "data" / "clips" / "syncnet_example.avi"
MATMUL_N = 2048
CONV3D_CHUNK = 16  # windows per pass of the Conv3d variant (its setting when it was fcn's)


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


def conv3d_lips(net: FCNSyncNet) -> functools.partial:
    """``embed_lips`` with the first layer as one sliding Conv3d over the clip (how fcn ran before): same weights."""
    conv2d = net.lip_conv1
    out, stacked, kh, kw = conv2d.weight.shape
    conv = torch.nn.Conv3d(3, out, (VIDEO_WINDOW, kh, kw), (1, *conv2d.stride))
    conv.weight.data.copy_(conv2d.weight.reshape(out, VIDEO_WINDOW, 3, kh, kw).transpose(1, 2))
    conv.bias.data.copy_(conv2d.bias)
    conv = conv.to(net.dtype).to(memory_format=torch.channels_last_3d)
    return functools.partial(_conv3d_lips, net, conv)


@torch.inference_mode()
def _conv3d_lips(net: FCNSyncNet, conv: torch.nn.Conv3d, frames: np.ndarray, n: int) -> torch.Tensor:
    out = []
    for start in range(0, n, CONV3D_CHUNK):
        stop = min(n, start + CONV3D_CHUNK)
        clip = torch.from_numpy(np.ascontiguousarray(frames[start : stop + VIDEO_WINDOW - 1]))
        y = conv(clip.permute(3, 0, 1, 2)[None].to(net.dtype))[0].transpose(0, 1)  # windows, 96, h, w
        out.append(net.lip_frames(y.contiguous(memory_format=torch.channels_last)).flatten(1).float())
    return torch.cat(out)


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


def paired(ts: list[float], tf: list[float]) -> str:
    """Median (min-max) of the speed-ups ``ts / tf`` within each round."""
    ratios = sorted(a / b for a, b in zip(ts, tf, strict=True))
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def per_round(ts: list[float], tf: list[float]) -> str:
    """Speed-up as the ratio of the medians, and the median (min-max) of the ratios within each round."""
    return f"{statistics.median(ts) / statistics.median(tf):.2f}x | {paired(ts, tf)}"


def offset(dists: np.ndarray) -> int:
    return int(np.argmin(dists.mean(axis=0))) - MAX_OFFSET


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
    inputs = EngineInput(np.ascontiguousarray(frames[..., ::-1]), audio, cc, NO_LIPS)
    load_before = os.getloadavg()
    net = build_model(state)
    fcn = {p: FCNSyncNet(net, precision=p) for p in PRECISIONS}
    fcn_plain = FCNSyncNet(net, channels_last=False, precision="fp32")
    columns = ["syncnet"] + [f"fcn {p}" for p in PRECISIONS]
    engines = {"syncnet": SyncNetEngine(net), **{f"fcn {p}": FCNEngine(fcn[p]) for p in PRECISIONS}}

    lip_s, aud_s = windowed_lip_embeddings(net, frames, n), windowed_audio_embeddings(net, cc, n)
    emb = {p: (fcn[p].embed_lips(frames, n), fcn[p].embed_audio(cc, n)) for p in PRECISIONS}
    tasks: dict = {
        ("syncnet", "lip"): lambda: windowed_lip_embeddings(net, frames, n),
        ("syncnet", "audio"): lambda: windowed_audio_embeddings(net, cc, n),
        ("syncnet", "distances"): lambda: offset_distances(lip_s, aud_s),
    }
    for p in PRECISIONS:
        tasks[(f"fcn {p}", "lip")] = functools.partial(fcn[p].embed_lips, frames, n)
        tasks[(f"fcn {p}", "audio")] = functools.partial(fcn[p].embed_audio, cc, n)
        tasks[(f"fcn {p}", "distances")] = functools.partial(distance_matrix, *emb[p])
    for name, engine in engines.items():
        tasks[(name, "engine.run")] = functools.partial(engine.run, inputs)
    tasks["fcn fp32 lip, no channels-last"] = lambda: fcn_plain.embed_lips(frames, n)
    tasks["fcn bf16 lip, Conv3d"] = functools.partial(conv3d_lips(fcn["bf16"]), frames, n)
    tasks["fcn fp32 audio, whole sequence"] = lambda: fcn["fp32"].embed_audio(cc, n, "sequence")
    tasks["matmul"] = matmul
    runs = interleaved(tasks, args.repeats)

    stages = ("lip", "audio", "distances")
    for name in columns:
        runs[(name, "total")] = (None, [sum(t) for t in zip(*(runs[(name, s)][1] for s in stages), strict=True)])
    flops = lip_flops_per_frame(fcn["fp32"], frames)
    peak = 2 * MATMUL_N**3 / min(runs["matmul"][1])
    floor_ms = flops / peak * 1000

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"AVX512-BF16 {'yes' if torch.cpu._is_avx512_bf16_supported() else 'no'}, "
        f"AMX {'yes' if torch.cpu._is_amx_tile_supported() else 'no'} "
        f"(torch {torch.__version__}, {args.threads} threads; shared with other jobs)  ",
        f"Command: `python benchmarks/engines.py --clip {args.clip.name} --frames {args.frames} "
        f"--threads {args.threads} --repeats {args.repeats}`  ",
        f"Load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Input: {args.clip.name}, {len(frames)} frames ({n} windows), weights: {source}  ",
        "",
        "ms per video frame, median (min-max) over the rounds; speed-up = windowed `syncnet` (float32) over `fcn`, "
        "as the ratio of the medians, then the median (min-max) of the ratios within each round (all ran back to "
        "back in every round); `engine.run` is the whole engine call on the clip (input checks, both streams, "
        "distances, offset and confidence):",
        "",
        "| stage | " + " | ".join(columns) + " | "
        + " | ".join(f"speed-up {c} | per round {c}" for c in columns[1:]) + " |",
        "| --- |" + " ---: |" * (len(columns) + 2 * (len(columns) - 1)),
    ]
    for stage in (*stages, "total", "engine.run"):
        label = f"**{stage}**" if stage in ("total", "engine.run") else stage
        ts = runs[("syncnet", stage)][1]
        cells = [fmt(runs[(c, stage)][1], n) for c in columns]
        ratios = [per_round(ts, runs[(c, stage)][1]) for c in columns[1:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

    d_s = runs[("syncnet", "distances")][0]
    agreement = []
    for p in PRECISIONS:
        lip_f, aud_f = emb[p]
        d_f = runs[(f"fcn {p}", "distances")][0]
        r_s, r_f = runs[("syncnet", "engine.run")][0], runs[(f"fcn {p}", "engine.run")][0]
        agreement.append(
            f"- fcn {p}: offset {offset(d_f):+d} (syncnet {offset(d_s):+d}); lip embeddings max rel. diff "
            f"{rel(lip_f, lip_s):.1e}, audio {rel(aud_f, aud_s):.1e}, distances {rel(d_f, d_s):.1e}; "
            f"LSE-C {r_f.confidence:.4f} (syncnet {r_s.confidence:.4f}), LSE-D {r_f.min_dist:.3f} "
            f"(syncnet {r_s.min_dist:.3f})"
        )
    fcn_lip_ms = statistics.median(runs[("fcn fp32", "lip")][1]) / n * 1000
    plain, seq = runs["fcn fp32 lip, no channels-last"], runs["fcn fp32 audio, whole sequence"]
    conv3d, stacked = runs["fcn bf16 lip, Conv3d"], runs[("fcn bf16", "lip")]
    d_seq = distance_matrix(emb["fp32"][0], seq[0])
    lines += [
        "",
        f"Floor: lip stream {flops / 1e9:.3f} GFLOP per frame / measured float32 matmul {peak / 1e9:.0f} GFLOP/s "
        f"({MATMUL_N}x{MATMUL_N}, best round) = **{floor_ms:.2f} ms per frame**; fcn fp32 lip stream = "
        f"**{fcn_lip_ms / floor_ms:.2f}x the float32 floor** (median round).",
        "",
        "Agreement with the windowed float32 `syncnet` on this clip:",
        "",
        *agreement,
        "",
        "| fcn variant (not used) | ms per frame | accuracy against the fp32 windowed embeddings |",
        "| --- | --- | --- |",
        f"| fp32 lip, no channels-last | {fmt(plain[1], n)} | max rel. {rel(plain[0], lip_s):.1e} |",
        f"| bf16 lip, first layer as a Conv3d ({CONV3D_CHUNK} windows a pass; stacked 2-D conv over it, per round: "
        f"{paired(conv3d[1], stacked[1])}) | {fmt(conv3d[1], n)} | max rel. "
        f"{rel(conv3d[0], lip_s):.1e} (stacked: {rel(stacked[0], lip_s):.1e}) |",
        f"| fp32 audio, whole sequence | {fmt(seq[1], n)} | max rel. {rel(seq[0], aud_s):.1e}, "
        f"distances {rel(d_seq, d_s):.1e}, offset {offset(d_seq):+d} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
