"""Speed of decoding and of the face stage, in ms per 25 fps frame, on a few clips of different sizes.

    python benchmarks/faces.py [--clips DIR] [--repeats N] [--out benchmarks/RESULTS_faces.md]

Stages: decode = load_media; landmarker = MediaPipe Face Landmarker alone (VIDEO mode, every frame, as many faces
as the clip shows);
face stage = track_face (landmarks with face counts on the way, scene cuts, linking, speaker choice) + crop_faces +
mouth_crops + lip_shapes, i.e. everything between decoded frames and the engines. Best of N runs each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from syncnet import faces, landmarker, lips  # noqa: E402
from syncnet.media import load_media  # noqa: E402

CLIPS = [  # (file, what it tests)
    ("syncnet_example.avi", "224x224 crop, AVI/PCM"),
    ("pcavs_posesrc_741400163.mp4", "224x224 crop, 13.9 s"),
    ("videoretalking_face2.mp4", "844x844 H.264"),
    ("visualvoice_noisy_restaurant.mp4", "1280x720, small face"),
    ("wav2lipgfpgan_kim_7s_raw.mp4", "1920x1080 -> 1280x720"),
    ("visualvoice_interview.mp4", "1280x720, two faces"),
]


def best_of(repeats: int, *fns):
    """Best time of each function over `repeats` rounds, run in turn (so that load changes hit them alike)."""
    times, results = [[] for _ in fns], [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times], results


def landmarker_only(frames) -> int:
    """The landmarker on every frame (VIDEO mode, as many faces as it counts); the most faces seen in a frame."""
    detector = landmarker.Landmarker()
    try:
        return max(len(detector.detect(i, frame)) for i, frame in enumerate(frames))
    finally:
        detector.close()


def face_stage(media):
    track = faces.track_face(media.frames, media.audio)
    faces.crop_faces(media.frames, track)
    faces.mouth_crops(media.frames, track)
    lips.lip_shapes(track)
    return track


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at start, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=str(Path(__file__).resolve().parents[2] / "shared" / "clips"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_faces.md")))
    args = parser.parse_args()

    header = [
        "# Face stage speed",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- machine: {machine()}",
        f"- command: `python benchmarks/faces.py --repeats {args.repeats}`",
        "- ms per 25 fps frame, best of the repeats; 'face stage' = track_face + crop_faces + mouth_crops + lip_shapes;"
        " '12 s clip' = face stage time scaled to 300 frames",
        "",
        "| clip | frames (WxH) | faces | decode ms/f | landmarker ms/f | face stage ms/f | face stage / landmarker |"
        " 12 s clip face stage s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = []
    for name, what in CLIPS:
        path = Path(args.clips) / name
        if not path.exists():
            print(f"skipping {name}: not found in {args.clips}", file=sys.stderr)
            continue
        (decode_s,), (media,) = best_of(args.repeats, lambda path=path: load_media(path))
        n = len(media.frames)
        height, width = media.frames.shape[1:3]
        (landmark_s, stage_s), (num_faces, _) = best_of(
            args.repeats, lambda media=media: landmarker_only(media.frames), lambda media=media: face_stage(media)
        )
        rows.append(
            f"| {name} ({what}) | {n} ({width}x{height}) | {num_faces} | {1000 * decode_s / n:.1f} |"
            f" {1000 * landmark_s / n:.1f} | {1000 * stage_s / n:.1f} | {stage_s / landmark_s:.2f} |"
            f" {300 * stage_s / n:.2f} |"
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join(header + rows + ["", f"Load average at the end: {load:.1f}."]) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
