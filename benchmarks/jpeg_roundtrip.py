"""How far the original pipelines' JPEG round trip moves LSE-C, LSE-D and the offset, per scoring protocol.

Both original pipelines score frames that ffmpeg wrote as JPEG files (image2 defaults) and OpenCV read back; this
project decodes straight to arrays. For every clip of the folder, the chosen engine (default ``syncnet``) scores:

- full-frame protocol (Wav2Lip's LRS script): the frames as decoded (``none``); after the in-memory round trip
  ``syncnet.protocols.JpegRoundTrip`` (``jpeg``); and, for 25 fps files, the original's own input (``files``):
  ``ffmpeg -i CLIP -threads 1 -f image2 %06d.jpg`` read back with ``cv2.imread``, and the frames decoded with
  libswscale's exact YUV -> RGB conversion, as they are (``exact``) and after the round trip (``exact+jpeg``);
- track protocol (syncnet_python): the face crops as cut (``none``) and after the round trip (``jpeg``: the last of
  the original's lossy steps, the crop video's frames written with image2 defaults; its earlier ``-qscale:v 2``
  frames and XVID crop video are not emulated).

The same audio (this project's decoder) goes with every variant, so only the frames differ. Face tracks are cached
(MediaPipe runs once per clip). Weights: ``SYNCNET_WEIGHTS`` if set, else the test fixture's synthetic weights
(same layout; a random network of the same architecture, so the numbers measure sensitivity, not real LSE values).

    python -m benchmarks.jpeg_roundtrip [--clips ../shared/clips] [--match GLOB]... [--cache DIR] [--engine syncnet]
                                        [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import glob
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from itertools import islice
from pathlib import Path

import av
import cv2
import imageio_ffmpeg
import numpy as np
from av.video.reformatter import Interpolation

from benchmarks.clipdata import DEFAULT_CACHE, list_clips, read_manifest
from syncnet.audio import mfcc
from syncnet.constants import FPS, SAMPLES_PER_FRAME
from syncnet.engines import Engine, EngineInput, load_engine
from syncnet.errors import SyncNetError
from syncnet.faces import FaceTrack, crop_faces, track_face
from syncnet.media import load_media
from syncnet.protocols import JpegRoundTrip, full_frame_crops

log = logging.getLogger("jpeg_roundtrip")

CACHE_VERSION = 1
MIN_ALIGNED_PSNR = 25.0  # dB between our frame 0 and the JPEG file 1: below this the two do not start together
TRACK_FIELDS = ("start", "stop", "landmarks", "boxes", "detected", "frame_size", "num_faces", "speaking_score")


@dataclass
class Score:
    clip: str
    protocol: str  # "full-frame" or "track"
    variant: str  # "none", "jpeg" or "files"
    offset: int
    confidence: float  # LSE-C
    min_dist: float  # LSE-D
    psnr_vs_none: float  # dB between these crops and the "none" crops
    psnr_vs_files: float | None  # dB between these crops and the "files" crops (full-frame, 25 fps files only)


def cached_track(path: Path, frames: np.ndarray, audio: np.ndarray, cache_dir: Path) -> FaceTrack:
    """``track_face`` through an .npz cache keyed by the file's path, size and modification time."""
    stat = path.stat()
    cached = cache_dir / f"{path.name}.{CACHE_VERSION}.{stat.st_size}.{stat.st_mtime_ns}.track.npz"
    if cached.exists():
        with np.load(cached) as z:
            values = {k: z[k] for k in TRACK_FIELDS}
        return FaceTrack(
            start=int(values["start"]), stop=int(values["stop"]), landmarks=values["landmarks"],
            boxes=values["boxes"], detected=values["detected"], frame_size=tuple(int(v) for v in values["frame_size"]),
            num_faces=int(values["num_faces"]), speaking_score=float(values["speaking_score"]),
        )
    track = track_face(frames, audio)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: np.asarray(getattr(track, k)) for k in TRACK_FIELDS})
    tmp.replace(cached)
    return track


def image2_frames(path: Path) -> np.ndarray:
    """The original's input: ``ffmpeg -i PATH -threads 1 -f image2 %06d.jpg``, each file read by ``cv2.imread``, RGB."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(path), "-threads", "1",
             "-f", "image2", os.path.join(tmp, "%06d.jpg")],
            check=True, timeout=600,
        )
        return np.stack([cv2.imread(f)[..., ::-1] for f in sorted(glob.glob(os.path.join(tmp, "*.jpg")))])


def exact_rgb(path: Path, count: int) -> np.ndarray:
    """The first `count` frames with libswscale's exact YUV -> RGB (accurate rounding, full chroma interpolation).

    ``syncnet.media`` converts with libswscale's fast path, about 1.4 levels darker in luma than the exact
    conversion; the original's JPEG files come from the exact YUV planes. 25 fps files only (frames one to one).
    """
    flags = Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    with av.open(str(path)) as container:
        frames = [f.reformat(format="rgb24", interpolation=flags).to_ndarray()
                  for f in islice(container.decode(video=0), count)]
    return np.stack(frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def score_clip(path: Path, engine: Engine, cache_dir: Path, fps: float | None) -> list[Score]:
    media = load_media(str(path))
    track = cached_track(path, media.frames, media.audio, cache_dir)
    plain = full_frame_crops(media.frames)
    original = None  # the original's own input, when it lines up with ours
    if fps is not None and abs(fps - FPS) < 0.01:
        files = image2_frames(path)
        if files.shape[1:] == media.frames.shape[1:] and psnr(files[0], media.frames[0]) >= MIN_ALIGNED_PSNR:
            original = full_frame_crops(files[: len(media.frames)])
        else:
            log.warning("%s: the image2 frames do not line up with the decoded ones; no 'files' variant", path.name)
    scores = []

    def run(protocol: str, variant: str, crops: np.ndarray, audio: np.ndarray, reference: np.ndarray) -> None:
        count = len(crops)
        audio = audio[: count * SAMPLES_PER_FRAME]
        inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=np.zeros((count, 1), np.float32))
        result = engine.run(inputs)
        versus_files = None if original is None or protocol != "full-frame" else psnr(crops, original[:count])
        scores.append(Score(path.name, protocol, variant, result.offset_frames, result.confidence, result.min_dist,
                            psnr(crops, reference[:count]), versus_files))

    run("full-frame", "none", plain, media.audio, plain)
    run("full-frame", "jpeg", full_frame_crops(media.frames, JpegRoundTrip()), media.audio, plain)
    if original is not None:
        run("full-frame", "files", original, media.audio, plain)
        exact = exact_rgb(path, len(media.frames))
        run("full-frame", "exact", full_frame_crops(exact), media.audio, plain)
        run("full-frame", "exact+jpeg", full_frame_crops(exact, JpegRoundTrip()), media.audio, plain)
    crops = crop_faces(media.frames, track)
    audio = media.audio[track.start * SAMPLES_PER_FRAME : track.stop * SAMPLES_PER_FRAME]
    run("track", "none", crops, audio, crops)
    run("track", "jpeg", JpegRoundTrip()(crops), audio, crops)
    return scores


def compare(scores: list[Score], protocol: str, variant: str, reference: str) -> dict[str, float] | None:
    """Differences of `variant` from `reference` over the clips that have both."""
    by = {(s.clip, s.variant): s for s in scores if s.protocol == protocol}
    pairs = [(by[c, variant], by[c, reference]) for c, v in by if v == variant and (c, reference) in by]
    if not pairs:
        return None
    dc = [a.confidence - b.confidence for a, b in pairs]
    dd = [a.min_dist - b.min_dist for a, b in pairs]
    return {
        "clips": len(pairs),
        "mean_abs_dc": statistics.fmean(abs(x) for x in dc), "max_abs_dc": max(abs(x) for x in dc),
        "mean_dc": statistics.fmean(dc),
        "mean_abs_dd": statistics.fmean(abs(x) for x in dd), "max_abs_dd": max(abs(x) for x in dd),
        "mean_dd": statistics.fmean(dd),
        "offsets_changed": sum(a.offset != b.offset for a, b in pairs),
        "median_psnr": statistics.median(a.psnr_vs_none for a, _ in pairs),
    }


def markdown(scores: list[Score], header: list[str], failures: list[str]) -> str:
    lines = [*header, ""]
    lines += [
        "Differences per clip (variant minus reference): LSE-C and LSE-D mean |d| (max |d|), mean signed d; "
        "offsets that changed; median PSNR of the variant's 224x224 frames against the decoded ones.",
        "",
        "| protocol | variant | against | clips | LSE-C mean abs (max) | LSE-C mean d | LSE-D mean abs (max) "
        "| LSE-D mean d | offsets changed | median PSNR dB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for protocol, variant, reference in (
        ("full-frame", "jpeg", "none"), ("full-frame", "files", "none"), ("full-frame", "jpeg", "files"),
        ("full-frame", "exact", "none"), ("full-frame", "exact", "files"), ("full-frame", "exact+jpeg", "files"),
        ("track", "jpeg", "none"),
    ):
        c = compare(scores, protocol, variant, reference)
        if c is None:
            continue
        lines.append(
            f"| {protocol} | {variant} | {reference} | {c['clips']} | {c['mean_abs_dc']:.4f} ({c['max_abs_dc']:.4f}) "
            f"| {c['mean_dc']:+.4f} | {c['mean_abs_dd']:.4f} ({c['max_abs_dd']:.4f}) | {c['mean_dd']:+.4f} "
            f"| {c['offsets_changed']} of {c['clips']} | {c['median_psnr']:.1f} |"
        )
    lines += ["", "Means over the clips (what papers report), per protocol and variant:", "",
              "| protocol | variant | clips | mean LSE-C | mean LSE-D |", "| --- | --- | ---: | ---: | ---: |"]
    for protocol in ("full-frame", "track"):
        for variant in ("none", "jpeg", "exact", "exact+jpeg", "files"):
            chosen = [s for s in scores if s.protocol == protocol and s.variant == variant]
            if chosen:
                lines.append(f"| {protocol} | {variant} | {len(chosen)} | "
                             f"{statistics.fmean(s.confidence for s in chosen):.4f} | "
                             f"{statistics.fmean(s.min_dist for s in chosen):.4f} |")
    lines += ["", "Per clip (PSNR of the 224x224 frames against the decoded ones and against the original's files):",
              "", "| clip | protocol | variant | offset | LSE-C | LSE-D | PSNR vs none dB | PSNR vs files dB |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {s.clip} | {s.protocol} | {s.variant} | {s.offset:+d} | {s.confidence:.4f} | {s.min_dist:.4f} | "
              f"{s.psnr_vs_none:.1f} | {'' if s.psnr_vs_files is None else f'{s.psnr_vs_files:.1f}'} |" for s in scores]
    if failures:
        lines += ["", "Left out:", "", *(f"- {f}" for f in failures)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, default=Path("../shared/clips"))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "jpeg_roundtrip")
    parser.add_argument("--engine", default="syncnet", choices=["syncnet", "fcn"])
    parser.add_argument("--match", action="append", default=None, metavar="GLOB",
                        help="only clips whose name matches (repeatable; default all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        weights = "SYNCNET_WEIGHTS"
        if not os.environ.get("SYNCNET_WEIGHTS"):
            from tests.synthetic_weights import write_weights

            os.environ["SYNCNET_WEIGHTS"] = str(write_weights(Path(tmp) / "synthetic.model"))
            weights = "synthetic (tests/synthetic_weights.py; the real syncnet_v2.model is not available here)"
        engine = load_engine(args.engine)

    manifest = read_manifest(args.clips)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    scores: list[Score] = []
    failures: list[str] = []
    paths = [p for p in list_clips(args.clips) if args.match is None or any(fnmatch(p.name, g) for g in args.match)]
    for path in paths:
        fps = manifest.get(path.name, {}).get("fps")
        try:
            clip_scores = score_clip(path, engine, args.cache, float(fps) if fps else None)
            for s in clip_scores:
                log.info("%s %s %s: offset %+d, LSE-C %.4f, LSE-D %.4f", s.clip, s.protocol, s.variant, s.offset,
                         s.confidence, s.min_dist)
            scores += clip_scores
        except SyncNetError as error:
            failures.append(f"{path.name}: {error}")
    header = [
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {platform.processor() or platform.system()}",
        f"Command: `python -m benchmarks.jpeg_roundtrip --clips {args.clips} --engine {args.engine}"
        + "".join(f" --match '{g}'" for g in args.match or []) + "`",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f}; "
        f"wall time {time.perf_counter() - started:.0f} s",
        f"Engine: {args.engine}; weights: {weights}",
        f"Clips: {len({s.clip for s in scores})} of the {len(paths)} chosen in {args.clips} scored",
    ]
    text = markdown(scores, header, failures)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
