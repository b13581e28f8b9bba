"""Follow every face and cut it out the way SyncNet was trained to see it, frame by frame as the video goes by.

MediaPipe Face Landmarker (`syncnet.landmarker`) gives 478 landmarks (and 52 blendshapes) per face per frame, in
one pass. `FaceTracker` links them into tracks, bridges short gaps, ends a track at a long gap or a scene cut, and
cuts from each track, as soon as its smoothed box is known, SyncNet face crops (joonson/syncnet_python's crop
convention), a lip-shape series and a few mouth crops; it hands them on in `Piece`s and lets the frames go. When
a track ends, faces on screen at the same time are compared: the one whose lip opening best follows the audio
energy is the speaking one. `track_face` does the same on a clip held in memory and returns the speaking face.

SyncNet's pipeline boxes faces with S3FD; we derive an S3FD-like box from the landmarks (see `face_boxes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from syncnet.constants import CROP_SIZE, FPS, LIP_WINDOW_FRAMES, MAX_OFFSET, MIN_TRACK_S, SAMPLES_PER_FRAME
from syncnet.errors import NoFaceError
from syncnet.landmarker import Landmarker
from syncnet.lips import OUTER_LIP, lip_shapes_of
from syncnet.media import Media, MediaChunk, media_chunks
from syncnet.smooth import medfilt

log = logging.getLogger(__name__)

MIN_TRACK_FRAMES = int(MIN_TRACK_S * FPS)  # a usable face segment lasts at least 1 s
MAX_GAP_FRAMES = 12  # missed detections bridged by interpolation (0.48 s); longer gaps split a track
MIN_IOU = 0.3  # box overlap linking a detection to a track
# Mean HSV change between frames that counts as a scene cut: PySceneDetect's ContentDetector default from 0.6 on
# (LatentSync pins 0.6.1); syncnet_python pins scenedetect 0.5.1, whose default is 30.
CUT_THRESHOLD = 27.0
PIECE_FRAMES = int(5 * FPS)  # tracks go to the engines in pieces of this many frames, as soon as they are cut
PIECE_CONTEXT = MAX_OFFSET + LIP_WINDOW_FRAMES + 1  # frames of context either side of a piece
STRIP_SAMPLES = 8  # face and mouth crops kept per track for display (up to twice as many while it runs)
MOUTH_SIZE = 96  # side of a mouth crop, pixels
MAX_LAG_FRAMES = MAX_OFFSET  # lags searched when matching lip motion to audio energy
# A piece's speaking face is judged on the JUDGED_FRAMES up to the piece's end (fewer at the start of a track);
# on fewer than MIN_JUDGED_FRAMES it is not judged and every face is scored: the best of 31 lags' correlations is
# noisy on short spans (over 2 s of the side-by-side test clip the silent face scored 0.51, the speaker 0.49).
JUDGED_FRAMES = int(10 * FPS)
MIN_JUDGED_FRAMES = int(4 * FPS)

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
SMOOTH_HALF = SMOOTH_KERNEL // 2  # frames after a frame needed to smooth its box
MOUTH_CROP_SCALE = 0.6  # mouth crop side as a share of the face box side



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
        return tuple(medfilt(v, SMOOTH_KERNEL) for v in (x, y, s))


def face_boxes(landmarks: np.ndarray) -> np.ndarray:
    """S3FD-like boxes (..., 4) from landmarks (..., 478, 2+): the landmark box, squared-up and shifted (see top)."""
    lo, hi = landmarks[..., :2].min(axis=-2), landmarks[..., :2].max(axis=-2)
    side = (hi - lo).max(axis=-1, keepdims=True)
    centre = (lo + hi) / 2 + np.concatenate([np.zeros_like(side), BOX_SHIFT_Y * side], axis=-1)
    half = BOX_SCALE * side / 2
    return np.concatenate([centre - half, centre + half], axis=-1).astype(np.float32)


class CutDetector:
    """Scene cuts frame by frame: content change as in PySceneDetect's ContentDetector."""

    def __init__(self):
        self._previous: np.ndarray | None = None

    def is_cut(self, frame: np.ndarray) -> bool:
        """True when `frame` starts a new shot (never for the first frame)."""
        step = max(1, min(frame.shape[:2]) // 72)  # subsample big frames first: INTER_AREA is slow on them
        small = cv2.resize(frame[::step, ::step], (64, 36), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.int16)
        previous, self._previous = self._previous, hsv
        return previous is not None and float(np.abs(hsv - previous).mean()) > CUT_THRESHOLD


def scene_cuts(frames: np.ndarray) -> np.ndarray:
    """Indices i where a new shot starts at frame i."""
    detector = CutDetector()
    return np.array([i for i, frame in enumerate(frames) if detector.is_cut(frame)], int)


# --- tracking, as frames go by ---------------------------------------------------------------------------------


@dataclass
class Piece:
    """A stretch of one face track for the engines: frames [start, stop); only rows of frames in `keep` count.

    Tracks go to the engines piece by piece as they are cut (the engines work while later frames are tracked, and
    memory stays bounded); each piece carries PIECE_CONTEXT frames of context on either side of the frames it is
    kept for, so that the offsets searched stay inside it.
    """

    track: int  # the track's number (order of appearance)
    start: int
    stop: int
    keep: tuple[int, int]  # [first, last) frames whose rows are kept
    audio: np.ndarray  # float32 ((stop - start) * 640,)
    lips: np.ndarray  # float32 (stop - start, 5)
    crops: np.ndarray | None  # uint8 (stop - start, 224, 224, 3), None when no engine needs them
    blendshapes: np.ndarray | None  # float32 (stop - start, 52), None unless asked for
    last: bool = False  # the last piece of its track
    speaking: bool | None = None  # no other face on screen with it follows the sound better; None: not judged


@dataclass
class TrackRecord:
    """What is kept of a face track once it has ended: its span and small per-frame series, not its pictures."""

    number: int
    start: int
    stop: int
    boxes: np.ndarray  # float32 (n, 4) S3FD-like box per frame (unsmoothed)
    detected: np.ndarray  # bool (n,)
    opening: np.ndarray  # float32 (n,) inner lip gap over the eye distance
    frame_size: tuple[int, int]
    crops: np.ndarray  # uint8 (k, 224, 224, 3): a few face crops spread over the track, for display
    mouths: np.ndarray  # uint8 (k, 96, 96, 3): the matching mouth crops
    landmarks: np.ndarray | None = None  # float32 (n, 478, 3), only when the tracker keeps them
    speaking_score: float = -1.0  # best correlation of lip opening with audio energy over lags -15..15
    speaking: bool = False  # its lips follow the sound better than every face on screen with it

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    def where(self) -> str:
        x = float(np.median(self.boxes[:, [0, 2]].mean(axis=1))) / self.frame_size[1]
        return "on the left" if x < 0.4 else "on the right" if x > 0.6 else "in the centre"


class _Series:
    """A growing float32 array of rows (amortised doubling): the whole-track series, a few bytes per frame."""

    def __init__(self, width: int, dtype=np.float32):
        self._data = np.empty((256, width), dtype)
        self.count = 0

    def append(self, row) -> None:
        if self.count == len(self._data):
            self._data = np.concatenate([self._data, np.empty_like(self._data)])
        self._data[self.count] = row
        self.count += 1

    def values(self) -> np.ndarray:
        return self._data[: self.count].copy()


class _CropBlock:
    """Face crops of consecutive frames written into one block; pieces take views of it, no copies.

    When a piece has been handed on, the frames still needed (the next piece's context) move to a new block and
    the old one lives on only in the pieces that view it.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.block = np.empty((capacity, CROP_SIZE, CROP_SIZE, 3), np.uint8)  # pages touched only when written
        self.start = 0  # relative frame of block[0]
        self.count = 0

    def append(self, crop: np.ndarray) -> None:
        if self.count == len(self.block):
            self.block = np.concatenate([self.block, np.empty_like(self.block)])
        self.block[self.count] = crop
        self.count += 1

    def view(self, lo: int, hi: int) -> np.ndarray:
        return self.block[lo - self.start : hi - self.start]

    def drop(self, before: int) -> None:
        keep = self.block[before - self.start : self.count]
        self.block = np.empty((max(self.capacity, len(keep)), CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self.block[: len(keep)] = keep
        self.start, self.count = before, len(keep)


def first_piece_frames() -> int:
    """A track's first piece is cut as soon as it can be judged (MIN_JUDGED_FRAMES), so that the engines start on
    it while the face stage goes on (benchmarks/pipeline.py compare: 3-4% off the interview's wall time)."""
    return min(PIECE_FRAMES, MIN_JUDGED_FRAMES)


class _Track:
    """One face being followed: landmarks filled over short gaps, boxes smoothed, crops cut as frames go by.

    Per-frame data is kept whole only where it is a few bytes (boxes, lip opening, detected); the rest (lip
    shapes, box sizes, audio, crops) only from the start of the next piece's context on.
    """

    def __init__(self, number: int, frame_size: tuple[int, int], crops: bool, keep_landmarks: bool):
        self.number = number
        self.frame_size = frame_size
        self.start = -1  # first frame
        self.last = -1  # last frame with a detection
        self.last_points: np.ndarray | None = None
        self.last_shape: np.ndarray | None = None
        self.box: np.ndarray | None = None  # box of the last detection, for linking
        self.boxes = _Series(4)
        self.opening = _Series(1)
        self.detected = _Series(1, bool)
        self.landmarks: list[np.ndarray] | None = [] if keep_landmarks else None
        self.base = 0  # relative frame of the first entry of the recent lists below
        self.sizes: list[np.ndarray] = []  # (x, y, half-size) of the box, float32, before smoothing
        self.mouth_centres: list[np.ndarray] = []
        self.lips: list[np.ndarray] = []
        self.shapes: list[np.ndarray] = []
        self.crops = _CropBlock(PIECE_FRAMES + 2 * PIECE_CONTEXT + MAX_GAP_FRAMES + SMOOTH_KERNEL) if crops else None
        self.audio: list[np.ndarray] = []  # samples of the frames from relative frame self.base to self.cut
        self.cut = 0  # frames [start, start + cut) have been cut (crops, audio)
        self.piece_start = 0  # first kept frame (relative) of the next piece
        self.sample_every = 1
        self.samples: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # relative frame -> (face crop, mouth crop)

    def add(self, index: int, points: np.ndarray, shape: np.ndarray | None) -> None:
        """A detection at frame `index`; frames since the last one get landmarks interpolated between the two."""
        if self.last < 0:
            self.start = index
        else:
            for k in range(self.last + 1, index):
                share = np.float32((k - self.last) / (index - self.last))  # linear interpolation between the two
                between = (1 - share) * self.last_points + share * points
                mix = None if shape is None else (1 - share) * self.last_shape + share * shape
                self._append(between, mix, False)
        self._append(points, shape, True)
        self.last, self.last_points, self.last_shape = index, points, shape
        self.box = face_boxes(points)

    def _append(self, points: np.ndarray, shape: np.ndarray | None, detected: bool) -> None:
        box = face_boxes(points)
        lips = lip_shapes_of(points[None])[0]
        self.boxes.append(box)
        self.opening.append(lips[0])
        self.detected.append(detected)
        self.sizes.append(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2,
                                    np.maximum(box[2] - box[0], box[3] - box[1]) / 2], np.float32))
        self.mouth_centres.append(points[OUTER_LIP, :2].mean(axis=0))
        self.lips.append(lips)
        if shape is not None:
            self.shapes.append(shape)
        if self.landmarks is not None:
            self.landmarks.append(points)

    @property
    def length(self) -> int:
        return self.last - self.start + 1

    def _smoothed(self, series: list[np.ndarray], k: int, final: bool) -> np.ndarray:
        """scipy.signal.medfilt(series, SMOOTH_KERNEL)[k] (zero-padded at both ends of the track), float64."""
        lo, hi = k - SMOOTH_HALF, k + SMOOTH_HALF + 1
        window = np.stack(series[max(lo, 0) - self.base : hi - self.base]).astype(np.float64)
        window = np.pad(window, ((max(0, -lo), max(0, hi - self.length) if final else 0), (0, 0)))
        return np.median(window, axis=0)

    def cut_frames(self, recent: dict[int, tuple[np.ndarray, np.ndarray]], final: bool) -> None:
        """Cut every frame whose smoothed box is known: up to SMOOTH_HALF frames before the last detection."""
        upto = self.length if final else self.length - SMOOTH_HALF
        while self.cut < upto:
            k = self.cut
            frame, audio = recent[self.start + k]
            sample = k % self.sample_every == 0
            if self.crops is not None or sample:
                x, y, bs = self._smoothed(self.sizes, k, final)
                face = _crop_face(frame, x, y, bs)
                if self.crops is not None:
                    self.crops.append(face)
                if sample:
                    cx, cy = self._smoothed(self.mouth_centres, k, final)
                    self._sample(k, face, _crop_mouth(frame, cx, cy, bs * MOUTH_CROP_SCALE, MOUTH_SIZE))
            self.audio.append(audio)
            self.cut += 1

    def _sample(self, k: int, face: np.ndarray, mouth: np.ndarray) -> None:
        """Keep crops of every `sample_every`-th frame; halve them (and double the step) when there are too many."""
        self.samples[k] = (face, mouth)
        if len(self.samples) > 2 * STRIP_SAMPLES:
            self.sample_every *= 2
            self.samples = {j: v for j, v in self.samples.items() if j % self.sample_every == 0}

    def pieces(self, final: bool) -> list[Piece]:
        """The pieces whose frames (context included) have all been cut."""
        out = []
        while True:
            keep_stop = self.piece_start + (first_piece_frames() if self.piece_start == 0 else PIECE_FRAMES)
            if final:
                if self.piece_start >= self.length or self.length < MIN_TRACK_FRAMES:
                    return out
                keep_stop = min(keep_stop, self.length)
            elif keep_stop + PIECE_CONTEXT > self.cut:
                return out
            out.append(self._piece(self.piece_start, keep_stop, min(keep_stop + PIECE_CONTEXT, self.cut)))
            out[-1].last = final and keep_stop >= self.length
            self.piece_start = keep_stop
            self._drop(max(0, keep_stop - PIECE_CONTEXT))

    def _piece(self, keep_start: int, keep_stop: int, stop: int) -> Piece:
        start = max(0, keep_start - PIECE_CONTEXT)
        lo, hi = start - self.base, stop - self.base
        return Piece(
            track=self.number,
            start=self.start + start,
            stop=self.start + stop,
            keep=(self.start + keep_start, self.start + keep_stop),
            audio=np.concatenate(self.audio[lo:hi]),
            lips=np.stack(self.lips[lo:hi]).astype(np.float32),
            crops=None if self.crops is None else self.crops.view(start, stop),
            blendshapes=np.stack(self.shapes[lo:hi]) if len(self.shapes) >= hi else None,
        )

    def _drop(self, before: int) -> None:
        """Forget per-frame data before relative frame `before` (the next piece's context starts there)."""
        if self.crops is not None:
            self.crops.drop(before)
        count = min(before, self.cut - SMOOTH_HALF) - self.base
        if count > 0:
            for series in (self.sizes, self.mouth_centres, self.lips, self.shapes, self.audio):
                del series[:count]
            self.base += count

    def record(self) -> TrackRecord:
        order = sorted(self.samples)
        faces_, mouths = ([self.samples[k][i] for k in order] for i in (0, 1))
        return TrackRecord(
            number=self.number,
            start=self.start,
            stop=self.last + 1,
            boxes=self.boxes.values()[: self.length],
            detected=self.detected.values()[: self.length, 0],
            opening=self.opening.values()[: self.length, 0],
            frame_size=self.frame_size,
            crops=np.stack(faces_) if faces_ else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8),
            mouths=np.stack(mouths) if mouths else np.zeros((0, MOUTH_SIZE, MOUTH_SIZE, 3), np.uint8),
            landmarks=None if self.landmarks is None else np.stack(self.landmarks[: self.length]),
        )


class FaceTracker:
    """Every face of a video, followed frame by frame in one landmarker pass; whole frames are not kept.

    With ``stride`` > 1 the landmarker looks at every stride-th frame of each shot (from its first frame) and the
    tracks interpolate the landmarks between, as over a missed detection: for the SyncNet engines, whose boxes are
    median-filtered over 13 frames anyway (see FACE_STRIDE in `syncnet.pipeline` for what it changes).

    Feed it chunks in order (`add`), then `finish`. Both return the `Piece`s that became ready. Tracks end at a
    scene cut, after more than MAX_GAP_FRAMES frames without their face, or at the end; those of at least 1 s
    are in `tracks` afterwards, their speaking faces marked.
    """

    def __init__(
        self, *, crops: bool = True, blendshapes: bool = False, keep_landmarks: bool = False, stride: int = 1,
        landmarkers: int = 1,
    ):
        self.want_crops = crops
        self.stride = stride  # the landmarker looks at every stride-th frame of a shot; between, tracks interpolate
        self._next_look = 0
        self.keep_landmarks = keep_landmarks
        self.landmarker = Landmarker(blendshapes, landmarkers)
        self.cuts = CutDetector()
        self.active: list[_Track] = []
        self.tracks: list[TrackRecord] = []  # finished tracks of at least MIN_TRACK_FRAMES
        self.energy: list[np.ndarray] = []  # speech-band log energy per frame, chunk by chunk
        self.num_faces = 0  # most faces seen in one frame
        self.faces_seen = False
        self.longest = 0  # frames of the longest track, short ones included
        self._recent: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # frame -> (picture, samples) not yet cut
        self.frames_seen = 0  # frames given so far

    def add(self, chunk: MediaChunk) -> list[Piece]:
        self.energy.append(_audio_energy(chunk.audio, len(chunk.frames)))
        cuts = [self.cuts.is_cut(frame) for frame in chunk.frames]
        looks = self._looks(chunk.start, cuts)
        found = self.landmarker.detect_looks([(index, chunk.frames[index - chunk.start], cuts[index - chunk.start])
                                              for index in looks])
        faces = dict(zip(looks, found, strict=True))
        ready: list[Piece] = []
        for k, frame in enumerate(chunk.frames):
            index = chunk.start + k
            audio = chunk.audio[k * SAMPLES_PER_FRAME : (k + 1) * SAMPLES_PER_FRAME]
            ready += self._step(index, frame, audio, cuts[k], faces.get(index))
        return ready

    def _looks(self, start: int, cuts: list[bool]) -> list[int]:
        """The frames of a chunk starting at `start` the landmarker looks at: every stride-th of each shot."""
        looks = []
        for index, cut in enumerate(cuts, start):
            if cut:
                self._next_look = index
            if index >= self._next_look:
                looks.append(index)
                self._next_look = index + self.stride
        return looks

    def _step(
        self, index: int, frame: np.ndarray, audio: np.ndarray, cut: bool,
        found: list[tuple[np.ndarray, np.ndarray | None]] | None,
    ) -> list[Piece]:
        """One frame: end the tracks a cut or a long gap ends, link the faces `found` (None: not looked at), and
        cut what the tracks can cut."""
        ready: list[Piece] = []
        self._recent[index] = (frame, audio)
        self.frames_seen = index + 1
        if cut:
            ready += self._end([t for t in self.active])
        ready += self._end([t for t in self.active if index - t.last > MAX_GAP_FRAMES + 1])
        if found is not None:
            self.num_faces = max(self.num_faces, len(found))
            self.faces_seen |= bool(found)
            self._link(index, found, frame.shape[:2])
        for track in self.active:
            track.cut_frames(self._recent, final=False)
            ready += self._judged(track, track.pieces(final=False))
        self._forget()
        return ready

    def _link(self, index: int, found: list[tuple[np.ndarray, np.ndarray | None]], size: tuple[int, int]) -> None:
        """Greedy IoU linking of this frame's faces to the active tracks; unmatched faces start new tracks."""
        boxes = [face_boxes(points) for points, _ in found]
        pairs = sorted(
            ((_iou(t.box, b), ti, fi) for ti, t in enumerate(self.active) for fi, b in enumerate(boxes)), reverse=True
        )
        used_t, used_f = set(), set()
        for iou, ti, fi in pairs:
            if iou >= MIN_IOU and ti not in used_t and fi not in used_f:
                self.active[ti].add(index, *found[fi])
                used_t.add(ti)
                used_f.add(fi)
        for fi in range(len(found)):
            if fi not in used_f:
                track = _Track(len(self.tracks) + len(self.active), size, self.want_crops, self.keep_landmarks)
                track.add(index, *found[fi])
                self.active.append(track)

    def _end(self, ending: list[_Track]) -> list[Piece]:
        ready: list[Piece] = []
        for track in ending:
            self.active.remove(track)
            self.longest = max(self.longest, track.length)
            track.cut_frames(self._recent, final=True)
            ready += self._judged(track, track.pieces(final=True))
            if track.length >= MIN_TRACK_FRAMES:
                self.tracks.append(track.record())
        return ready

    def _judged(self, track: _Track, pieces: list[Piece]) -> list[Piece]:
        """The pieces, each marked speaking or not: does this face's lip opening follow the sound at least as well
        as every other face's on the frames they share (see JUDGED_FRAMES and `_winners`)?"""
        if not pieces:
            return pieces  # the common case, every frame: nothing to judge
        others = [(t.start, t.opening.values()[:, 0]) for t in self.active if t is not track and t.opening.count]
        others += [(t.start, t.opening) for t in self.tracks]
        if not others:
            return pieces  # alone: not judged, its track speaks
        energy = np.concatenate(self.energy)
        mine = (track.start, track.opening.values()[:, 0])
        for piece in pieces:
            hi = piece.keep[1]
            lo = max(track.start, min(piece.keep[0], hi - JUDGED_FRAMES))
            if hi - lo < MIN_JUDGED_FRAMES:
                continue
            spans, openings = [], []
            for start, opening in [mine, *others]:
                a, b = max(lo, start), min(hi, start + len(opening))
                if b - a >= MIN_TRACK_FRAMES or not spans:
                    spans.append((a, b))
                    openings.append(opening[a - start : b - start])
            winners = _winners(spans, openings, energy)
            piece.speaking = not winners or 0 in winners
        return pieces

    def _forget(self) -> None:
        """Drop the pictures and samples no active track still has to cut."""
        oldest = min((t.start + t.cut for t in self.active), default=self.frames_seen)
        for index in [i for i in self._recent if i < oldest]:
            del self._recent[index]

    def finish(self) -> list[Piece]:
        """End every track; choose the speaking faces. Raises NoFaceError when no face stays 1 s.

        With a stride, the last frame is looked at too, so that the tracks reach the end of the video, not the last
        look before it."""
        last = self.frames_seen - 1
        if self.active and last > self._next_look - self.stride and last in self._recent:
            frame = self._recent[last][0]
            self._link(last, self.landmarker.detect(last, frame), frame.shape[:2])
        ready = self._end(list(self.active))
        self._recent.clear()
        if not self.faces_seen:
            raise NoFaceError("no face found in the video")
        if not self.tracks:
            raise NoFaceError(
                f"no face stays visible for {MIN_TRACK_FRAMES / FPS:.0f} s in a row"
                f" (longest {self.longest / FPS:.2f} s)"
            )
        self.tracks.sort(key=lambda t: (t.start, t.number))
        energy = np.concatenate(self.energy)
        for track in self.tracks:
            track.speaking_score = _speaking_score(track.opening, energy[track.start : track.stop])
        for i in speaking_tracks(self.tracks, energy):
            self.tracks[i].speaking = True
        return ready

    def close(self) -> None:
        self.landmarker.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track_face(frames: np.ndarray, audio: np.ndarray, stride: int = 1, landmarkers: int = 1) -> FaceTrack:
    """The speaking face over the longest usable stretch of a clip held in memory (`landmarkers` taking turns on
    every `stride`-th frame, see `FaceTracker`). Raises NoFaceError."""
    media = Media(frames, audio, len(frames) / FPS, "<memory>", 0.0, None)  # type: ignore[arg-type]
    with FaceTracker(crops=False, keep_landmarks=True, stride=stride, landmarkers=landmarkers) as tracker:
        for chunk in media_chunks(media):
            tracker.add(chunk)
        tracker.finish()
    records = tracker.tracks
    segments = [Segment(t.start, t.stop, t.speaking_score) for t in records]
    best = max((i for i, t in enumerate(records) if t.speaking), key=lambda i: (records[i].num_frames,
                                                                                records[i].speaking_score))
    segments[best].chosen = True
    chosen = records[best]
    log.debug("face track %d..%d of %d frames, %d faces, %d tracks", chosen.start, chosen.stop, len(frames),
              tracker.num_faces, len(records))
    return FaceTrack(
        start=chosen.start,
        stop=chosen.stop,
        landmarks=chosen.landmarks,
        boxes=chosen.boxes,
        detected=chosen.detected,
        frame_size=chosen.frame_size,
        num_faces=tracker.num_faces,
        speaking_score=chosen.speaking_score,
        segments=segments,
    )


# --- choosing the speaking face ---


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


def speaking_tracks(tracks: list[TrackRecord], energy: np.ndarray) -> list[int]:
    """Indices of the tracks whose lips follow the sound better than every face on screen with them."""
    spans = [(t.start, t.stop) for t in tracks]
    winners = _winners(spans, [t.opening for t in tracks], energy)
    return winners or [max(range(len(tracks)), key=lambda i: tracks[i].speaking_score)]


def _winners(spans: list[tuple[int, int]], openings: list[np.ndarray], energy: np.ndarray) -> list[int]:
    """Spans whose opening follows the energy at least as well as each other span's, on the frames they share.

    Two faces are compared on the frames they share (at least 1 s of them; shorter overlaps are not judged).
    """

    def beats(i: int, j: int) -> bool:
        (a0, a1), (b0, b1) = spans[i], spans[j]
        lo, hi = max(a0, b0), min(a1, b1)
        if hi - lo < MIN_TRACK_FRAMES:
            return True
        mine = _speaking_score(openings[i][lo - a0 : hi - a0], energy[lo:hi])
        theirs = _speaking_score(openings[j][lo - b0 : hi - b0], energy[lo:hi])
        return mine >= theirs

    return [i for i in range(len(spans)) if all(beats(i, j) for j in range(len(spans)) if j != i)]


def _choose(segments: list[Segment], openings: list[np.ndarray], energy: np.ndarray) -> int:
    """The longest segment among those whose lips follow the audio better than every face on screen with them."""
    winners = _winners([(s.start, s.stop) for s in segments], openings, energy)
    if not winners:  # no face beats all the others (cycles): fall back to the best overall score
        winners = [max(range(len(segments)), key=lambda i: segments[i].speaking_score)]
    return max(winners, key=lambda i: (segments[i].stop - segments[i].start, segments[i].speaking_score))


# --- outputs ---------------------------------------------------------------------------------------------------


def crop_faces(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """uint8 (n, 224, 224, 3) face crops of frames[track.start:track.stop], as SyncNet's run_pipeline cuts them."""
    xs, ys, ss = track.smoothed()
    crops = np.empty((track.num_frames, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for k, (x, y, bs) in enumerate(zip(xs, ys, ss, strict=True)):
        crops[k] = _crop_face(frames[track.start + k], x, y, bs)
    return crops


def _crop_face(frame: np.ndarray, x: float, y: float, bs: float) -> np.ndarray:
    """One 224x224 crop in joonson/syncnet_python's run_pipeline.py crop_video convention.

    Box centre (x, y) and half-size bs (median-filtered over 13 frames); frame padded by int(bs*(1+2*0.4)) with
    value 110; rows my-bs .. my+bs*1.8 and columns mx-bs*1.4 .. mx+bs*1.4 (padded coordinates), resized.
    """
    cs = CROP_SCALE
    bsi = int(bs * (1 + 2 * cs))
    my, mx = y + bsi, x + bsi
    rows = (int(my - bs), int(my + bs * (1 + 2 * cs)))
    cols = (int(mx - bs * (1 + cs)), int(mx + bs * (1 + cs)))
    return cv2.resize(_window(frame, rows, cols, bsi), (CROP_SIZE, CROP_SIZE))


def mouth_crops(frames: np.ndarray, track: FaceTrack, size: int = MOUTH_SIZE) -> np.ndarray:
    """uint8 (n, size, size, 3) squares centred on the lips, side 0.6 of the (smoothed) face box side."""
    centre = track.landmarks[:, OUTER_LIP, :2].mean(axis=1)
    cx = medfilt(centre[:, 0], SMOOTH_KERNEL)
    cy = medfilt(centre[:, 1], SMOOTH_KERNEL)
    half = track.smoothed()[2] * MOUTH_CROP_SCALE  # half-size bs is half the box side
    crops = np.empty((track.num_frames, size, size, 3), np.uint8)
    for k in range(track.num_frames):
        crops[k] = _crop_mouth(frames[track.start + k], cx[k], cy[k], half[k], size)
    return crops


def _crop_mouth(frame: np.ndarray, cx: float, cy: float, half: float, size: int) -> np.ndarray:
    h = max(half, 1.0)
    border = int(np.ceil(h)) + 1
    rows = (int(cy - h) + border, int(cy + h) + border)
    cols = (int(cx - h) + border, int(cx + h) + border)
    return cv2.resize(_window(frame, rows, cols, border), (size, size), interpolation=cv2.INTER_AREA)


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
