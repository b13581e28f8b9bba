"""Find the speaking face and cut it out the way SyncNet was trained to see it.

MediaPipe Face Landmarker (Tasks API, VIDEO mode) gives 478 landmarks per face per frame. They are linked into
tracks, short gaps are bridged, tracks are split at long gaps and scene cuts, and among faces on screen at the
same time the one whose lip opening best follows the audio energy is taken. From its landmarks come SyncNet face
crops (joonson/syncnet_python's crop convention), mouth crops and a lip-shape series.

SyncNet's pipeline boxes faces with S3FD; we derive an S3FD-like box from the landmarks (see `face_boxes`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions
from scipy import signal
from scipy.interpolate import interp1d

from syncnet.constants import CROP_SIZE, FPS, MAX_OFFSET, MIN_TRACK_S, SAMPLES_PER_FRAME
from syncnet.errors import FaceModelError, NoFaceError

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).parent / "assets" / "face_landmarker.task"
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"

MAX_FACES = 4  # faces tracked at once
SCAN_EVERY = 25  # frames between the looks that count faces before tracking (tracking fewer faces is faster)
MIN_TRACK_FRAMES = int(MIN_TRACK_S * FPS)  # a usable face segment lasts at least 1 s
MAX_GAP_FRAMES = 12  # missed detections bridged by interpolation (0.48 s); longer gaps split a track
MIN_IOU = 0.3  # box overlap linking a detection to a track
CUT_THRESHOLD = 27.0  # mean HSV change between frames that counts as a scene cut (PySceneDetect's default)
CLOSEUP_PAD = 0.3  # if faces are missed, retry on frames padded by this share of their size (webcam close-ups)
MAX_LAG_FRAMES = MAX_OFFSET  # lags searched when matching lip motion to audio energy

# S3FD-like face box from the landmark bounding box (side = the larger of its width and height):
# fitted on the 12 clips of ../shared/clips that are 224x224 face tracks cut in SyncNet's convention
# (syncnet_example.avi and 11 VoxCeleb2-style PC-AVS clips), where the S3FD box must be centred at (112, 80)
# with half-size 80: median ratio of half-sizes 1.115 (clips 1.05..1.16), centre 0.050 sides above the
# landmark box centre (0.03..0.07).
BOX_SCALE = 1.1
BOX_SHIFT_Y = -0.05

# SyncNet crop convention (joonson/syncnet_python run_pipeline.py crop_video)
CROP_SCALE = 0.4
PAD_VALUE = 110
SMOOTH_KERNEL = 13  # median filter over frames, as scipy.signal.medfilt(kernel_size=13) there
MOUTH_CROP_SCALE = 0.6  # mouth crop side as a share of the face box side

# MediaPipe face mesh indices
INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
OUTER_LIP = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
UPPER_INNER, LOWER_INNER = 13, 14
UPPER_OUTER, LOWER_OUTER = 0, 17
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
EYE_OUTER_RIGHT, EYE_OUTER_LEFT = 33, 263
NOSE_TIP, CHIN = 1, 152
LIP_FEATURES = ("inner_gap", "mouth_width", "outer_height", "inner_area", "jaw_drop")  # columns of lip_shapes


@dataclass
class Segment:
    """One face track between cuts/long gaps: frames [start, stop) of the media."""

    start: int
    stop: int
    speaking_score: float  # best correlation of lip opening with audio energy over lags -15..15
    chosen: bool = False


@dataclass
class FaceTrack:
    start: int  # first frame of the usable segment (index into the media's frames)
    stop: int  # one past its last frame
    landmarks: np.ndarray  # float32 (n, 478, 3): x, y in pixels, z (depth) in the same scale; gaps interpolated
    boxes: np.ndarray  # float32 (n, 4) x0, y0, x1, y1: S3FD-like face box per frame (unsmoothed)
    detected: np.ndarray  # bool (n,): False where the landmarks were interpolated over a gap
    frame_size: tuple[int, int]  # (H, W) of the frames tracked
    num_faces: int  # most faces seen in one frame
    speaking_score: float  # of the chosen segment
    segments: list[Segment] = field(default_factory=list)  # every candidate, the chosen one marked

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    def describe(self) -> str:
        """Which face was followed and over which frames, in one sentence for reports."""
        x = float(np.median(self.boxes[:, [0, 2]].mean(axis=1))) / self.frame_size[1]
        where = "on the left" if x < 0.4 else "on the right" if x > 0.6 else "in the centre"
        seen = "one face" if self.num_faces == 1 else f"{self.num_faces} faces at once"
        choice = ""
        if len(self.segments) > 1:
            choice = f" (of {len(self.segments)} face tracks, the one whose lips follow the sound best)"
        return (
            f"{seen} seen; followed the face {where}{choice}, frames {self.start}-{self.stop - 1}"
            f" ({self.num_frames / FPS:.1f} s), lip/sound correlation {self.speaking_score:.2f}"
        )

    def smoothed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Box centre x, centre y and half-size, median-filtered over time exactly as SyncNet's crop_video."""
        x = (self.boxes[:, 0] + self.boxes[:, 2]) / 2
        y = (self.boxes[:, 1] + self.boxes[:, 3]) / 2
        s = np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1]) / 2
        return tuple(signal.medfilt(v.astype(np.float64), kernel_size=SMOOTH_KERNEL) for v in (x, y, s))


# --- model ---------------------------------------------------------------------------------------------------


def download_model(dst: str | os.PathLike, url: str | None = None, sha256: str = MODEL_SHA256) -> Path:
    """Fetch the Face Landmarker bundle (from MODEL_URL by default) to `dst`, checking its sha256 first."""
    url = url or MODEL_URL
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".part")
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out)
        except OSError as e:
            raise FaceModelError(f"cannot download the face model from {url}: {e}") from e
        if _sha256(tmp) != sha256:
            raise FaceModelError(f"downloaded face model from {url} has the wrong sha256")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


@lru_cache(maxsize=4)
def model_path(path: str | os.PathLike = MODEL_PATH) -> str:
    """The checked path of the face model; downloaded to the user cache when the vendored copy is missing."""
    path = Path(path)
    if not path.exists():
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "syncnet" / path.name
        if not path.exists():
            log.info("downloading the face model from %s", MODEL_URL)
            download_model(path)
    if _sha256(path) != MODEL_SHA256:
        raise FaceModelError(f"face model {path} is corrupt (sha256 mismatch)")
    return str(path)


def _sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# --- detection -------------------------------------------------------------------------------------------------


def count_faces(frames: np.ndarray, *, pad: float = 0.0, every: int = SCAN_EVERY) -> int:
    """Most faces seen in one of every `every`-th frame (independent detections, IMAGE mode)."""
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path()), num_faces=MAX_FACES
    )
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        return max(len(landmarker.detect(_image(f, pad)).face_landmarks) for f in frames[::every])


def detect_landmarks(frames: np.ndarray, *, pad: float = 0.0, num_faces: int = MAX_FACES) -> list[list[np.ndarray]]:
    """Landmarks of every face in every frame: per frame a list of float32 (478, 3) arrays in pixels.

    `pad` > 0 surrounds each frame with a black border of that share of its size first, so that faces filling
    the whole frame (webcams) still fit the detector; coordinates are returned in the unpadded frame.
    """
    height, width = frames.shape[1:3]
    border = _border(frames, pad)
    scale = np.array([width + 2 * border, height + 2 * border, width + 2 * border], np.float32)
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path()),
        running_mode=vision.RunningMode.VIDEO,
        num_faces=num_faces,
    )
    result = []
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        for i, frame in enumerate(frames):
            faces = landmarker.detect_for_video(_image(frame, pad), int(round(i * 1000 / FPS))).face_landmarks
            points = [np.array([(p.x, p.y, p.z) for p in face], np.float32) * scale for face in faces]
            for p in points:
                p[:, :2] -= border
            result.append(points)
    return result


def _border(frames: np.ndarray, pad: float) -> int:
    return int(round(pad * max(frames.shape[-3:-1])))


def _image(frame: np.ndarray, pad: float) -> mp.Image:
    border = _border(frame, pad)
    if border:
        frame = cv2.copyMakeBorder(frame, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))


def face_boxes(landmarks: np.ndarray) -> np.ndarray:
    """S3FD-like boxes (..., 4) from landmarks (..., 478, 2+): the landmark box, squared-up and shifted (see top)."""
    lo, hi = landmarks[..., :2].min(axis=-2), landmarks[..., :2].max(axis=-2)
    side = (hi - lo).max(axis=-1, keepdims=True)
    centre = (lo + hi) / 2 + np.concatenate([np.zeros_like(side), BOX_SHIFT_Y * side], axis=-1)
    half = BOX_SCALE * side / 2
    return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)


def scene_cuts(frames: np.ndarray) -> np.ndarray:
    """Indices i where a new shot starts at frame i (content change as in PySceneDetect's ContentDetector)."""
    step = max(1, min(frames.shape[1:3]) // 72)  # subsample big frames first: INTER_AREA is slow on them
    small = [cv2.resize(f[::step, ::step], (64, 36), interpolation=cv2.INTER_AREA) for f in frames]
    hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in small])
    change = np.abs(np.diff(hsv.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    return np.flatnonzero(change > CUT_THRESHOLD) + 1


# --- tracking --------------------------------------------------------------------------------------------------


def track_face(frames: np.ndarray, audio: np.ndarray) -> FaceTrack:
    """The speaking face over the longest usable stretch of the video. Raises NoFaceError if there is none."""
    detections = detect_landmarks(frames, num_faces=max(1, count_faces(frames)))
    found = sum(bool(d) for d in detections)
    if found < 0.9 * len(frames):
        padded = detect_landmarks(frames, pad=CLOSEUP_PAD, num_faces=max(1, count_faces(frames, pad=CLOSEUP_PAD)))
        if sum(bool(d) for d in padded) > found:
            log.debug("close-up: %d -> %d frames with a face after padding", found, sum(bool(d) for d in padded))
            detections = padded
    if not any(detections):
        raise NoFaceError("no face found in the video")
    num_faces = max(len(d) for d in detections)
    tracks = _link(detections, scene_cuts(frames))
    longest = max(len(t) for t in tracks)
    candidates = [t for t in tracks if len(t) >= MIN_TRACK_FRAMES]
    if not candidates:
        raise NoFaceError(
            f"no face stays visible for {MIN_TRACK_FRAMES / FPS:.0f} s in a row (longest {longest / FPS:.2f} s)"
        )
    energy = _audio_energy(audio, len(frames))
    segments, openings = [], []
    for track in candidates:
        start, stop, landmarks, _ = _fill(track)
        openings.append(lip_shapes_of(landmarks)[:, 0])
        segments.append(Segment(start, stop, _speaking_score(openings[-1], energy[start:stop])))
    best = _choose(segments, openings, energy)
    segments[best].chosen = True
    start, stop, landmarks, detected = _fill(candidates[best])
    log.debug("face track %d..%d of %d frames, %d faces, %d tracks", start, stop, len(frames), num_faces, len(segments))
    return FaceTrack(
        start=start,
        stop=stop,
        landmarks=landmarks,
        boxes=face_boxes(landmarks),
        detected=detected,
        frame_size=frames.shape[1:3],
        num_faces=num_faces,
        speaking_score=segments[best].speaking_score,
        segments=segments,
    )


def _link(detections: list[list[np.ndarray]], cuts: np.ndarray) -> list[dict[int, np.ndarray]]:
    """Greedy IoU linking of per-frame faces into tracks {frame: landmarks}; a track ends at a cut or long gap."""
    finished: list[dict[int, np.ndarray]] = []
    active: list[dict[int, np.ndarray]] = []
    cut_set = set(int(c) for c in cuts)
    for i, faces in enumerate(detections):
        if i in cut_set:
            finished += active
            active = []
        finished += [t for t in active if i - max(t) > MAX_GAP_FRAMES + 1]
        active = [t for t in active if i - max(t) <= MAX_GAP_FRAMES + 1]
        boxes = [face_boxes(f) for f in faces]
        pairs = sorted(
            ((_iou(face_boxes(t[max(t)]), b), ti, fi) for ti, t in enumerate(active) for fi, b in enumerate(boxes)),
            reverse=True,
        )
        used_t, used_f = set(), set()
        for iou, ti, fi in pairs:
            if iou >= MIN_IOU and ti not in used_t and fi not in used_f:
                active[ti][i] = faces[fi]
                used_t.add(ti)
                used_f.add(fi)
        active += [{i: faces[fi]} for fi in range(len(faces)) if fi not in used_f]
    return finished + active


def _fill(track: dict[int, np.ndarray]) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Landmarks for every frame of the track, linearly interpolated over its (short) gaps."""
    known = np.array(sorted(track))
    start, stop = int(known[0]), int(known[-1]) + 1
    points = np.stack([track[k] for k in known])
    frames = np.arange(start, stop)
    filled = interp1d(known, points, axis=0, assume_sorted=True)(frames) if len(known) > 1 else points
    return start, stop, filled.astype(np.float32), np.isin(frames, known)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def _audio_energy(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """Log energy of 300-3000 Hz per video frame (speech band)."""
    chunks = np.zeros((num_frames, SAMPLES_PER_FRAME), np.float32)
    usable = min(num_frames, len(audio) // SAMPLES_PER_FRAME)
    chunks[:usable] = audio[: usable * SAMPLES_PER_FRAME].reshape(usable, SAMPLES_PER_FRAME)
    spectrum = np.abs(np.fft.rfft(chunks * np.hanning(SAMPLES_PER_FRAME), axis=1)) ** 2
    freqs = np.fft.rfftfreq(SAMPLES_PER_FRAME, 1 / (SAMPLES_PER_FRAME * FPS))
    band = (freqs >= 300) & (freqs <= 3000)
    return np.log(spectrum[:, band].sum(axis=1) + 1e-6)


def _speaking_score(opening: np.ndarray, energy: np.ndarray) -> float:
    """Best Pearson correlation of lip opening with audio energy over lags of up to +-15 frames."""
    best = -1.0
    for lag in range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1):
        a = opening[max(0, -lag) : len(opening) - max(0, lag)]
        b = energy[max(0, lag) : len(energy) - max(0, -lag)]
        if len(a) >= MIN_TRACK_FRAMES // 2 and a.std() > 0 and b.std() > 0:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best


def _choose(segments: list[Segment], openings: list[np.ndarray], energy: np.ndarray) -> int:
    """The longest segment among those whose lips follow the audio better than every face on screen with them.

    Two faces are compared on the frames they share (at least 1 s of them; shorter overlaps are not judged).
    """

    def beats(i: int, j: int) -> bool:
        a, b = segments[i], segments[j]
        lo, hi = max(a.start, b.start), min(a.stop, b.stop)
        if hi - lo < MIN_TRACK_FRAMES:
            return True
        mine = _speaking_score(openings[i][lo - a.start : hi - a.start], energy[lo:hi])
        theirs = _speaking_score(openings[j][lo - b.start : hi - b.start], energy[lo:hi])
        return mine >= theirs

    winners = [i for i in range(len(segments)) if all(beats(i, j) for j in range(len(segments)) if j != i)]
    if not winners:  # no face beats all the others (cycles): fall back to the best overall score
        winners = [max(range(len(segments)), key=lambda i: segments[i].speaking_score)]
    return max(winners, key=lambda i: (segments[i].stop - segments[i].start, segments[i].speaking_score))


# --- outputs ---------------------------------------------------------------------------------------------------


def crop_faces(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """uint8 (n, 224, 224, 3) face crops of frames[track.start:track.stop], as SyncNet's run_pipeline cuts them.

    Box centre and half-size bs median-filtered over 13 frames; frame padded by int(bs*(1+2*0.4)) with value 110;
    rows my-bs .. my+bs*1.8 and columns mx-bs*1.4 .. mx+bs*1.4 (padded coordinates), resized to 224x224.
    """
    xs, ys, ss = track.smoothed()
    crops = np.empty((track.num_frames, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    cs = CROP_SCALE
    for k, (x, y, bs) in enumerate(zip(xs, ys, ss)):
        bsi = int(bs * (1 + 2 * cs))
        my, mx = y + bsi, x + bsi
        rows = (int(my - bs), int(my + bs * (1 + 2 * cs)))
        cols = (int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs)))
        face = _window(frames[track.start + k], rows, cols, bsi)
        crops[k] = cv2.resize(face, (CROP_SIZE, CROP_SIZE))
    return crops


def mouth_crops(frames: np.ndarray, track: FaceTrack, size: int = 96) -> np.ndarray:
    """uint8 (n, size, size, 3) squares centred on the lips, side 0.6 of the (smoothed) face box side."""
    centre = track.landmarks[:, OUTER_LIP, :2].mean(axis=1)
    cx = signal.medfilt(centre[:, 0].astype(np.float64), SMOOTH_KERNEL)
    cy = signal.medfilt(centre[:, 1].astype(np.float64), SMOOTH_KERNEL)
    half = track.smoothed()[2] * MOUTH_CROP_SCALE  # half-size bs is half the box side
    crops = np.empty((track.num_frames, size, size, 3), np.uint8)
    for k in range(track.num_frames):
        h = max(half[k], 1.0)
        border = int(np.ceil(h)) + 1
        rows = (int(cy[k] - h) + border, int(cy[k] + h) + border)
        cols = (int(cx[k] - h) + border, int(cx[k] + h) + border)
        mouth = _window(frames[track.start + k], rows, cols, border)
        crops[k] = cv2.resize(mouth, (size, size), interpolation=cv2.INTER_AREA)
    return crops


def lip_shapes(track: FaceTrack) -> np.ndarray:
    """float32 (n, 5) lip-shape series, columns LIP_FEATURES, each over the inter-ocular distance (face size)."""
    return lip_shapes_of(track.landmarks)


def lip_shapes_of(landmarks: np.ndarray) -> np.ndarray:
    p = landmarks[..., :2].astype(np.float64)

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(p[:, i] - p[:, j], axis=-1)

    eyes = np.maximum(dist(EYE_OUTER_RIGHT, EYE_OUTER_LEFT), 1e-6)
    inner = p[:, INNER_LIP]
    x, y = inner[..., 0], inner[..., 1]
    area = 0.5 * np.abs((x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1))
    features = [
        dist(UPPER_INNER, LOWER_INNER) / eyes,
        dist(MOUTH_LEFT, MOUTH_RIGHT) / eyes,
        dist(UPPER_OUTER, LOWER_OUTER) / eyes,
        area / eyes**2,
        dist(NOSE_TIP, CHIN) / eyes,
    ]
    return np.stack(features, axis=1).astype(np.float32)


def _window(frame: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], border: int) -> np.ndarray:
    """frame padded by `border` pixels of PAD_VALUE, then [rows[0]:rows[1], cols[0]:cols[1]] (numpy clipping rules)."""
    height, width = frame.shape[:2]
    r0, r1 = (min(max(r, 0), height + 2 * border) for r in rows)
    c0, c1 = (min(max(c, 0), width + 2 * border) for c in cols)
    out = np.full((max(r1 - r0, 1), max(c1 - c0, 1), 3), PAD_VALUE, np.uint8)
    sr0, sr1 = max(r0 - border, 0), min(r1 - border, height)
    sc0, sc1 = max(c0 - border, 0), min(c1 - border, width)
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 + border - r0 : sr1 + border - r0, sc0 + border - c0 : sc1 + border - c0] = frame[sr0:sr1, sc0:sc1]
    return out
