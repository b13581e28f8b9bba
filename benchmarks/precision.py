"""Reduced-precision `fcn` against exact float32 `syncnet` on every clip: offsets, LSE-C and LSE-D.

    python -m benchmarks.precision [--clips ../shared/clips] [--cache DIR] [--precision bf16 ...] [--out FILE]

Each clip goes once through the current face stage (`syncnet.media.load_media`, `syncnet.faces.track_face`,
`syncnet.faces.crop_faces`); its face crops and the audio of the face segment are cached in an .npz (keyed by the
file's path, size and modification time), so a rerun does not pay MediaPipe again. Then the windowed `syncnet`
engine (float32, the reference) and `fcn` at each precision score the same crops with the same weights
(``SYNCNET_WEIGHTS`` if set, otherwise the tests' synthetic weights). Prints a markdown table per clip and a
summary: offsets equal on how many clips, the largest |LSE-C| and |LSE-D| differences, absolute and relative.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.clipdata import VIDEO_SUFFIXES, segment_audio  # noqa: E402
from benchmarks.syncnet_inputs import NO_LIPS, load_state  # noqa: E402
from syncnet.audio import mfcc  # noqa: E402
from syncnet.engines import Engine, EngineInput  # noqa: E402
from syncnet.errors import SyncNetError  # noqa: E402
from syncnet.faces import crop_faces, track_face  # noqa: E402
from syncnet.fcn import PRECISIONS, FCNEngine, FCNSyncNet  # noqa: E402
from syncnet.media import load_media  # noqa: E402
from syncnet.model import SyncNetEngine, build_model  # noqa: E402
from syncnet.scoring import SyncResult, summarize  # noqa: E402
from tests.paths import SYNCNET_REF  # noqa: E402

log = logging.getLogger("precision")

CACHE_VERSION = 1  # bump when what is cached changes
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "fcn-syncnet-precision"
DEFAULT_CLIPS = ROOT.parent / "shared" / "clips"


def _key(path: Path) -> str:
    stat = path.stat()
    text = f"{CACHE_VERSION}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def face_segment(path: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 224, 224, 3) RGB face crops of the speaking face's segment and its float32 audio, cached."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{path.name}.{_key(path)}.npz"
    if cached.exists():
        with np.load(cached) as z:
            return z["crops"], z["audio"]
    media = load_media(path)
    track = track_face(media.frames, media.audio)
    crops = crop_faces(media.frames, track)
    audio = segment_audio(media.audio, track.start, track.stop)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, crops=crops, audio=audio)
    tmp.replace(cached)
    log.info("cached %s (%d frames)", path.name, len(crops))
    return crops, audio


@functools.cache
def fingerprint(engine: Engine) -> str:
    """What an engine computes (weights and code), as a digest of its distances on the tests' reference input:
    cached results belong to an engine that gives exactly these numbers."""
    with np.load(SYNCNET_REF / "input.npz") as z:
        frames, audio = z["frames_bgr"], z["audio_int16"].astype(np.float32) / 32768
    inputs = EngineInput(np.ascontiguousarray(frames[..., ::-1]), audio, mfcc(audio), NO_LIPS)
    return hashlib.sha1(engine.run(inputs).window_dists.tobytes()).hexdigest()[:12]


def cached_result(path: Path, inputs: EngineInput, engine: Engine, label: str, cache_dir: Path) -> SyncResult:
    """``engine.run(inputs)``, its per-window distances cached (shards of a run fill the cache in parallel)."""
    cached = cache_dir / f"{path.name}.{_key(path)}.{label}-{fingerprint(engine)}.npy"
    if cached.exists():
        return summarize(engine.name, np.load(cached))
    result = engine.run(inputs)
    np.save(cached, result.window_dists)
    return result


@dataclass
class Row:
    """One clip: the reference result and the result of `fcn` at each precision."""

    clip: str
    frames: int
    reference: SyncResult
    fcn: dict[str, SyncResult]


def rel(diff: float, ref: float) -> float:
    return abs(diff) / abs(ref) if ref else float("inf")


def margin(ref: SyncResult) -> float:
    """How far the reference's best offset is ahead: second-smallest minus smallest mean distance."""
    low = np.sort(ref.dists)
    return float(low[1] - low[0])


def skew(ref: SyncResult, fast: SyncResult) -> float:
    """The most any offset's mean distance moved relative to the reference's best offset: what could change the
    offset (a shift common to all offsets changes LSE-D but neither the offset nor LSE-C)."""
    moved = fast.dists - ref.dists
    return float(np.max(np.abs(moved - moved[int(np.argmin(ref.dists))])))


@dataclass
class Summary:
    """One precision over all clips."""

    clips: int
    offsets_equal: int
    lse_c_abs: float  # max |LSE-C diff|
    lse_c_rel: float  # max |LSE-C diff| / |reference LSE-C|
    lse_c_of_d: float  # max |LSE-C diff| / reference LSE-D
    lse_d_abs: float
    lse_d_rel: float
    skew_of_margin: float  # max skew / margin: below 1, no offset could have changed


def summarize_precision(rows: list[Row], precision: str) -> Summary:
    pairs = [(row.reference, row.fcn[precision]) for row in rows]
    dc = [f.confidence - r.confidence for r, f in pairs]
    dd = [f.min_dist - r.min_dist for r, f in pairs]
    return Summary(
        clips=len(pairs),
        offsets_equal=sum(r.offset_frames == f.offset_frames for r, f in pairs),
        lse_c_abs=max(map(abs, dc)),
        lse_c_rel=max(rel(d, r.confidence) for d, (r, _) in zip(dc, pairs, strict=True)),
        lse_c_of_d=max(rel(d, r.min_dist) for d, (r, _) in zip(dc, pairs, strict=True)),
        lse_d_abs=max(map(abs, dd)),
        lse_d_rel=max(rel(d, r.min_dist) for d, (r, _) in zip(dd, pairs, strict=True)),
        skew_of_margin=max(skew(r, f) / margin(r) for r, f in pairs),
    )


def report(rows: list[Row], precisions: list[str], header: list[str]) -> str:
    lines = header + [
        "",
        "Summary over the clips (differences fcn - syncnet; rel. = |diff| / |syncnet's value|; of LSE-D = |diff| / "
        "syncnet's LSE-D; skew/margin = the most any offset's mean distance moved relative to the best offset's, over "
        "the best offset's lead on the runner-up, worst clip: below 1, the offset could not have changed):",
        "",
        "| fcn precision | clips | offsets equal | max abs LSE-C diff | max rel. LSE-C diff | "
        "max LSE-C diff of LSE-D | max abs LSE-D diff | max rel. LSE-D diff | max skew/margin |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in precisions:
        s = summarize_precision(rows, p)
        lines.append(
            f"| {p} | {s.clips} | {s.offsets_equal}/{s.clips} | {s.lse_c_abs:.2e} | {s.lse_c_rel:.2e} | "
            f"{s.lse_c_of_d:.2e} | {s.lse_d_abs:.2e} | {s.lse_d_rel:.2e} | {s.skew_of_margin:.2f} |"
        )
    cols = " | ".join(f"fcn {p} offset | fcn {p} LSE-C | fcn {p} LSE-D | {p} skew" for p in precisions)
    lines += ["", "Per clip (reference: windowed `syncnet`, float32; margin: the reference's lead of its best offset "
              "over the runner-up):", "",
              f"| clip | windows | syncnet offset | syncnet LSE-C | syncnet LSE-D | margin | {cols} |",
              "| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: | ---: | ---: | ---: |" * len(precisions)]
    for row in rows:
        ref = row.reference
        cells = " | ".join(f"{f.offset_frames:+d} | {f.confidence:.4f} | {f.min_dist:.3f} | {skew(ref, f):.4f}"
                           for f in (row.fcn[p] for p in precisions))
        lines.append(f"| {row.clip} | {len(ref.window_dists)} | {ref.offset_frames:+d} | {ref.confidence:.4f} | "
                     f"{ref.min_dist:.3f} | {margin(ref):.4f} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"crop cache (default {DEFAULT_CACHE})")
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=PRECISIONS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument("--decode-only", action="store_true", help="only fill the crop cache")
    parser.add_argument("--shard", default="0/1", help="K/N: score only clips K, K+N, K+2N... (fills the cache; "
                        "a run with the default 0/1 then reads every shard's results back)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    shard, shards = (int(v) for v in args.shard.split("/"))
    paths = sorted(p for p in args.clips.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    state, source = load_state()
    net = build_model(state)
    reference = SyncNetEngine(net)
    engines = {p: FCNEngine(FCNSyncNet(net, precision=p)) for p in args.precision}
    load_before, started = os.getloadavg(), time.perf_counter()
    rows, failed = [], []
    for path in paths[shard::shards]:
        try:
            crops, audio = face_segment(path, args.cache)
        except SyncNetError as error:  # no face, unreadable: listed, not scored
            failed.append(f"{path.name}: {error}")
            continue
        if not args.decode_only:
            inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=NO_LIPS)
            ref = cached_result(path, inputs, reference, "syncnet-fp32", args.cache)
            results = {p: cached_result(path, inputs, e, f"fcn-{p}", args.cache) for p, e in engines.items()}
            rows.append(Row(path.name, len(crops), ref, results))
            log.info("%s: %d frames", path.name, len(crops))
    if args.decode_only or shards > 1:
        return
    header = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
        f"(torch {torch.__version__}, {args.threads} threads)  ",
        f"Command: `python -m benchmarks.precision --clips {args.clips} --precision {' '.join(args.precision)}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{time.perf_counter() - started:.0f} s  ",
        f"Load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}  ",
        f"Clips: {len(paths)} video files in {args.clips.name}/, {len(rows)} scored"
        + (f"; not scored: {'; '.join(failed)}" if failed else "") + "  ",
        f"Weights: {source}",
    ]
    text = report(rows, args.precision, header)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
