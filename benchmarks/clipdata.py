"""Decoded face segments of benchmark clips: lip shapes, landmarks, blendshapes and aligned audio, cached on disk.

Shared by `benchmarks/accuracy.py` and `benchmarks/calibrate_landmarks.py`. Each clip goes through the real
pipeline stages (`syncnet.media.load_media`, `syncnet.faces.track_face`, `syncnet.lips.lip_shapes`); MediaPipe's
52 blendshapes of the tracked face come from a second landmarker pass over the segment (the face nearest the
track in each frame). The cache holds only the arrays the landmark engine needs (crops are not cached: they are
recomputed for engines that need them); the landmarker costs ~8 ms a frame, the cache makes reruns quick.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

from syncnet.constants import FPS
from syncnet.faces import FaceTrack, track_face
from syncnet.landmarker import CLOSEUP_PAD, MAX_FACES, model_path
from syncnet.lips import LipContour, lip_shapes, lip_shapes_of
from syncnet.media import SAMPLES_PER_FRAME, load_media

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when what is cached changes
NUM_BLENDSHAPES = 52
MAX_MATCH_DISTANCE = 0.15  # a blendshape face farther than this share of the face size from the track is not it
DEFAULT_CACHE = Path.home() / ".cache" / "fcn-syncnet" / "benchmarks"
# Copies of syncnet_example.avi shifted by a third party: NOT shifted by their labels (see the manifest's notes),
# and the same content as syncnet_example.avi, so they would count one clip three times.
DERIVED_CLIPS = {"syncnet_example_audiodelay5.avi", "syncnet_example_audiodelay12.avi"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mpg", ".mov", ".webm", ".mkv"}


@dataclass
class ClipData:
    """The face segment of one clip, as the landmark engine sees it."""

    name: str
    lips: np.ndarray  # float32 (n, K) lip shapes of the chosen face segment
    audio: np.ndarray  # float32 (n * 640,) the audio of that segment (zero padded at the end if short)
    start: int  # first frame of the segment in the clip
    clip_frames: int  # frames in the whole clip
    num_faces: int
    kind: str  # "real" or "generated" (manifest), "unknown" if not listed
    file_duration_s: float = 0.0  # the file's duration in the manifest (0: not listed)
    landmarks: np.ndarray | None = None  # float32 (n, 478, 3) of the tracked face, gaps interpolated
    blendshapes: np.ndarray | None = None  # float32 (n, 52) MediaPipe blendshape scores, gaps interpolated

    @property
    def duration_s(self) -> float:
        """The file's duration (manifest), else that of the decoded frames."""
        return self.file_duration_s or self.clip_frames / 25.0


def read_manifest(clips_dir: Path) -> dict[str, dict[str, str]]:
    """Rows of manifest.tsv by file name ({} when the folder has none)."""
    path = clips_dir / "manifest.tsv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


def list_clips(clips_dir: Path) -> list[Path]:
    """Video files of the folder, derived copies left out, sorted by name."""
    return sorted(
        p for p in clips_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.name not in DERIVED_CLIPS
    )


def segment_audio(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Audio samples of frames [start, stop), zero padded to exactly (stop - start) * 640."""
    out = np.zeros((stop - start) * SAMPLES_PER_FRAME, np.float32)
    piece = audio[start * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME]
    out[: len(piece)] = piece
    return out


def track_blendshapes(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """float32 (n, 52) blendshape scores of the tracked face over frames[track.start:track.stop].

    One landmarker pass (VIDEO mode, blendshapes on) over the segment, unpadded and, if that misses faces, padded
    as `track_face` does for close-ups; per frame the face whose landmarks lie nearest the track's is taken, frames
    without one are interpolated from their neighbours.
    """
    best = None
    for pad in (0.0, CLOSEUP_PAD):
        scores = _blendshape_pass(frames[track.start : track.stop], track, pad)
        found = np.isfinite(scores[:, 0])
        if best is None or found.sum() > np.isfinite(best[:, 0]).sum():
            best = scores
        if found.mean() >= 0.9:
            break
    found = np.isfinite(best[:, 0])
    if not found.any():
        return np.zeros((track.num_frames, NUM_BLENDSHAPES), np.float32)
    index = np.arange(len(best))
    columns = [np.interp(index, index[found], best[found, j]) for j in range(NUM_BLENDSHAPES)]
    return np.stack(columns, axis=1).astype(np.float32)


def _blendshape_pass(frames: np.ndarray, track: FaceTrack, pad: float) -> np.ndarray:
    height, width = frames.shape[1:3]
    border = int(round(pad * max(height, width)))
    scale = np.array([width + 2 * border, height + 2 * border], np.float32)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path()), running_mode=vision.RunningMode.VIDEO,
        num_faces=max(1, min(MAX_FACES, track.num_faces)), output_face_blendshapes=True,
    )
    out = np.full((len(frames), NUM_BLENDSHAPES), np.nan, np.float32)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for i, frame in enumerate(frames):
            if border:
                frame = np.pad(frame, ((border, border), (border, border), (0, 0)))
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = landmarker.detect_for_video(image, int(round(i * 1000 / FPS)))
            target = track.landmarks[i, :, :2]
            size = float(np.ptp(target[:, 0])) + 1e-6
            best, best_distance = None, MAX_MATCH_DISTANCE
            for face, shapes in zip(result.face_landmarks, result.face_blendshapes, strict=True):
                points = np.array([(p.x, p.y) for p in face], np.float32) * scale - border
                distance = float(np.abs(points - target).mean()) / size
                if distance < best_distance:
                    best, best_distance = shapes, distance
            if best is not None:
                out[i] = [c.score for c in sorted(best, key=lambda c: c.index)]
    return out


def decode_clip(path: Path, kind: str = "unknown", blendshapes: bool = True) -> ClipData:
    """Decode a file and track its speaking face (no cache); `blendshapes=False` skips their landmarker pass."""
    media = load_media(str(path))
    track = track_face(media.frames, media.audio)
    return ClipData(
        name=path.name,
        lips=lip_shapes(track).astype(np.float32),
        audio=segment_audio(media.audio, track.start, track.stop),
        start=track.start,
        clip_frames=len(media.frames),
        num_faces=track.num_faces,
        kind=kind,
        landmarks=track.landmarks.astype(np.float32),
        blendshapes=track_blendshapes(media.frames, track) if blendshapes else None,
    )


def _key(path: Path) -> str:
    stat = path.stat()
    text = f"{CACHE_VERSION}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_clip(path: Path, cache_dir: Path | None, kind: str = "unknown", file_duration_s: float = 0.0) -> ClipData:
    """`decode_clip`, through an .npz cache keyed by the file's path, size and modification time."""
    if cache_dir is None:
        return dataclasses.replace(decode_clip(path, kind), file_duration_s=file_duration_s)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / f"{path.name}.{_key(path)}.npz"
    if cached.exists():
        with np.load(cached) as z:  # lips from the landmarks, with today's lip-contour model
            return ClipData(path.name, lip_shapes_of(z["landmarks"]), z["audio"], int(z["start"]),
                            int(z["clip_frames"]), int(z["num_faces"]), kind, file_duration_s, z["landmarks"],
                            z["blendshapes"])
    clip = decode_clip(path, kind)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez(tmp, audio=clip.audio, start=clip.start, clip_frames=clip.clip_frames,
             num_faces=clip.num_faces, landmarks=clip.landmarks, blendshapes=clip.blendshapes)
    tmp.replace(cached)
    log.info("cached %s (%d frames)", path.name, len(clip.lips))
    return dataclasses.replace(clip, file_duration_s=file_duration_s)


def with_contour(clip: ClipData, contour: LipContour) -> ClipData:
    """The clip with its lip shapes recomputed from its landmarks with another lip-contour model."""
    return dataclasses.replace(clip, lips=lip_shapes_of(clip.landmarks, contour))


def load_clips(clips_dir: Path, cache_dir: Path | None) -> list[ClipData]:
    """Every clip of the folder (derived copies left out); clips whose face cannot be tracked are logged, left out."""
    manifest = read_manifest(clips_dir)
    out = []
    for path in list_clips(clips_dir):
        row = manifest.get(path.name, {})
        try:
            out.append(load_clip(path, cache_dir, row.get("kind", "unknown"), float(row.get("duration_s") or 0.0)))
        except ValueError as error:  # MediaError / NoFaceError
            log.warning("%s left out: %s", path.name, error)
    return out
