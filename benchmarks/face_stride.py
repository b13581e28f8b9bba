"""What fewer looks for faces, by landmarkers taking turns, change: face-stage time, SyncNet crops, speaking face.

    python benchmarks/face_stride.py [--clips DIR] [--stride 2] [--landmarkers 2] [--out FILE]

Every clip of ``../shared/clips`` goes through `syncnet.faces.FaceTracker` twice, cutting SyncNet crops: with one
landmarker on every frame (the reference) and with ``landmarkers`` landmarkers taking turns on every ``stride``-th
frame (the tracks interpolate the landmarks between, as the pipeline does when the landmarks engine is not asked
for). Per clip: face-stage milliseconds per frame of
each run, and, on the frames both runs put in a track of the same face, how far the smoothed SyncNet crop box moved
(centre shift and size change as a share of the box side, the median filter over 13 frames as in `faces`), the mean
absolute difference of the 224x224 crops (grey levels), and whether the pieces judged speaking agree.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.signal import medfilt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clipdata import DERIVED_CLIPS, VIDEO_SUFFIXES  # noqa: E402
from syncnet.faces import SMOOTH_KERNEL, FaceTracker, Piece, TrackRecord  # noqa: E402
from syncnet.landmarker import LANDMARKERS  # noqa: E402
from syncnet.media import MediaChunk, open_media  # noqa: E402

CLIPS = Path(os.environ.get("SYNCNET_CLIPS", ROOT.parent / "shared" / "clips"))


def run(chunks: list[MediaChunk], stride: int, landmarkers: int) -> tuple[float, list[TrackRecord], list[Piece]]:
    """(face-stage seconds, tracks, pieces) of one tracker pass."""
    with FaceTracker(crops=True, blendshapes=True, stride=stride, landmarkers=landmarkers) as tracker:
        started = time.perf_counter()
        pieces = [p for chunk in chunks for p in tracker.add(chunk)] + tracker.finish()
        seconds = time.perf_counter() - started
    return seconds, tracker.tracks, pieces


def smoothed_boxes(track: TrackRecord) -> dict[int, np.ndarray]:
    """frame -> (centre x, centre y, half side) of the track's median-filtered box, away from the track's ends."""
    boxes = track.boxes.astype(np.float64)
    sizes = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                      np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2], axis=1)
    smooth = np.stack([medfilt(sizes[:, k], SMOOTH_KERNEL) for k in range(3)], axis=1)
    half = SMOOTH_KERNEL // 2
    return {track.start + k: smooth[k] for k in range(half, len(smooth) - half)}


def kept_crops(pieces: list[Piece]) -> dict[tuple[int, int], np.ndarray]:
    """(track, frame) -> the crop the engines got for that kept frame."""
    out = {}
    for piece in pieces:
        for frame in range(*piece.keep):
            out[piece.track, frame] = piece.crops[frame - piece.start]
    return out


def speaking_by_frame(pieces: list[Piece]) -> dict[tuple[int, int], bool]:
    return {(p.track, f): p.speaking for p in pieces if p.speaking is not None for f in range(*p.keep)}


def match(a: list[TrackRecord], b: list[TrackRecord]) -> list[tuple[TrackRecord, TrackRecord]]:
    """Pairs of tracks of the same face: most shared frames with the nearest median box centre."""
    pairs = []
    for ta in a:
        best = None
        for tb in b:
            shared = min(ta.stop, tb.stop) - max(ta.start, tb.start)
            if shared <= 0:
                continue
            gap = np.linalg.norm(np.median(ta.boxes, 0)[:2] - np.median(tb.boxes, 0)[:2])
            if gap < 0.5 * np.median(ta.boxes[:, 2] - ta.boxes[:, 0]) and (best is None or shared > best[0]):
                best = (shared, tb)
        if best is not None:
            pairs.append((ta, best[1]))
    return pairs


def compare(clip: Path, stride: int, landmarkers: int) -> str:
    stream = open_media(clip)
    try:
        chunks = list(stream)
    finally:
        stream.close()
    frames = sum(len(c.frames) for c in chunks)
    time1, tracks1, pieces1 = run(chunks, 1, 1)
    time2, tracks2, pieces2 = run(chunks, stride, landmarkers)
    crops1, crops2 = kept_crops(pieces1), kept_crops(pieces2)
    speak1, speak2 = speaking_by_frame(pieces1), speaking_by_frame(pieces2)
    shifts, scales, diffs, agree, judged = [], [], [], 0, 0
    for t1, t2 in match(tracks1, tracks2):
        box1, box2 = smoothed_boxes(t1), smoothed_boxes(t2)
        for frame in sorted(set(box1) & set(box2)):
            side = 2 * box1[frame][2]
            shifts.append(np.linalg.norm(box1[frame][:2] - box2[frame][:2]) / side)
            scales.append(abs(box1[frame][2] - box2[frame][2]) / box1[frame][2])
            if (t1.number, frame) in crops1 and (t2.number, frame) in crops2:
                diffs.append(np.abs(crops1[t1.number, frame].astype(np.int16) - crops2[t2.number, frame]).mean())
            if (t1.number, frame) in speak1 and (t2.number, frame) in speak2:
                judged += 1
                agree += speak1[t1.number, frame] == speak2[t2.number, frame]
    if not shifts:
        return f"| {clip.name} | {frames} | {1000 * time1 / frames:.1f} | {1000 * time2 / frames:.1f} | no track |||||"
    shift, scale = 100 * np.array(shifts), 100 * np.array(scales)
    speaking = f"{agree}/{judged}" if judged else "-"
    return (f"| {clip.name} | {frames} | {1000 * time1 / frames:.1f} | {1000 * time2 / frames:.1f} |"
            f" {np.median(shift):.2f} / {shift.max():.2f} | {np.median(scale):.2f} / {scale.max():.2f} |"
            f" {np.mean(diffs):.2f} | {len(tracks1)} / {len(tracks2)} | {speaking} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--landmarkers", type=int, default=LANDMARKERS, help="VIDEO landmarkers taking turns")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS_face_stride.md")
    args = parser.parse_args()
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in VIDEO_SUFFIXES and p.name not in DERIVED_CLIPS)
    lines = [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        f"- command: `python benchmarks/face_stride.py --stride {args.stride} --landmarkers {args.landmarkers}`",
        f"- reference: every frame, one landmarker; compared: stride {args.stride},"
        f" {args.landmarkers} landmarkers taking turns",
        f"- load average at the start: {os.getloadavg()[0]:.1f}",
        "",
        "| clip | frames | faces ms/f, reference | faces ms/f, compared | box centre shift %"
        " of side (median / max) | box size change % (median / max) | crop mean abs diff (grey levels) |"
        " tracks (reference / compared) | speaking pieces agree (frames) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for clip in clips:
        lines.append(compare(clip, args.stride, args.landmarkers))
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
