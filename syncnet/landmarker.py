"""MediaPipe Face Landmarker (Tasks API): the checked model file, and the faces in each look at a frame.

`Landmarker` runs VIDEO-mode landmarkers look by look (several side by side, taking turns), counts the faces now and
then with an independent IMAGE-mode look, and retries close-ups (webcams) on bordered frames. It returns each face's
478 landmarks in pixels (and its 52 blendshapes when asked). `syncnet.faces` links them into tracks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

from syncnet.constants import FPS
from syncnet.errors import FaceModelError

log = logging.getLogger(__name__)

MODEL_PATH = Path(__file__).parent / "assets" / "face_landmarker.task"
MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"

MAX_FACES = 4  # faces followed at once
CLOSEUP_PAD = 0.3  # if faces are missed, retry on frames padded by this share of their size (webcam close-ups)
COUNT_EVERY = 25  # frames between the looks that count faces (the first look from each multiple of it counts)
# VIDEO landmarkers taking turns where only face boxes are needed (one call uses one core): two looks at once give
# 1.8x the looks per second on 2 cores (two-face interview, every other frame: 16.1 -> 8.9 ms per look). Each
# follows the faces over every other look, so the lip shapes they give jump more from frame to frame (second
# differences 1.2-1.9x as large on three clips): lip-shape series come from one landmarker.
LANDMARKERS = min(2, os.cpu_count() or 1)
PROBE_FRAMES = int(FPS)  # frames at the start of the video and of each shot on which a close-up is looked for


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


class Landmarker:
    """MediaPipe Face Landmarker in VIDEO mode, fed one look at a time, with a face count and a close-up fallback.

    Following fewer faces is faster, so the VIDEO landmarker follows as many faces as have been seen at once:
    the first look from every COUNT_EVERY-th frame on is also an independent look (IMAGE mode) that counts them, and
    a higher count replaces it.

    Faces filling the whole frame (webcams) are missed unless the frame gets a black border first. In the first
    second of the video and of every shot, a frame where no face is found is looked at again with a border
    (PROBE_FRAMES extra looks at most); once that finds a face, every frame of the shot is bordered. Nothing is run
    twice over the video.

    One landmarker call uses one core, so `instances` VIDEO landmarkers take turns, look by look, and consecutive
    looks run side by side, a face count beside them (`detect_looks`); each landmarker follows the faces over the
    looks it is given. The few looks made before a count or a probe changed the landmarkers are made again.
    """

    def __init__(self, blendshapes: bool = False, instances: int = 1):
        self.blendshapes = blendshapes
        self.pad = 0.0
        self.probe_left = PROBE_FRAMES
        self.num_faces = 1  # faces the VIDEO landmarkers follow; raised when a look finds more
        self._pool = ThreadPoolExecutor(instances, "syncnet-landmarker")  # the other landmarkers and face counts
        self._videos: list[vision.FaceLandmarker] = []
        self._create_videos(instances)
        self._turn = 0  # the VIDEO landmarker that takes the next look
        self._next_count = 0  # the frame from which the next look counts the faces
        self._image: vision.FaceLandmarker | None = None  # IMAGE mode: face counts and the close-up probe

    def _create(self, mode: vision.RunningMode, num_faces: int) -> vision.FaceLandmarker:
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=model_path()),
            running_mode=mode,
            num_faces=num_faces,
            output_face_blendshapes=self.blendshapes,
        )
        return vision.FaceLandmarker.create_from_options(options)

    def _create_videos(self, count: int) -> None:
        """`count` fresh VIDEO landmarkers (all but the first created in the pool's threads, side by side)."""
        others = [self._pool.submit(self._create, vision.RunningMode.VIDEO, self.num_faces) for _ in range(count - 1)]
        try:
            self._videos.append(self._create(vision.RunningMode.VIDEO, self.num_faces))
        finally:
            self._videos += [future.result() for future in others]

    def _look(self, frame: np.ndarray, pad: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Independent detection of every face in one frame (IMAGE mode)."""
        if self._image is None:
            self._image = self._create(vision.RunningMode.IMAGE, MAX_FACES)
        return _faces(self._image.detect(_image(frame, pad)), frame, pad)

    def new_shot(self) -> None:
        """A scene cut: the next shot is probed for a close-up again, starting without a border."""
        self.probe_left = PROBE_FRAMES
        if self.pad:
            self.pad = 0.0
            self._replace_videos()

    def detect(self, index: int, frame: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(landmarks float32 (478, 3) in pixels, blendshapes float32 (52,) or None) for each face in the frame."""
        return self.detect_looks([(index, frame, False)])[0]

    def detect_looks(
        self, looks: Sequence[tuple[int, np.ndarray, bool]]
    ) -> list[list[tuple[np.ndarray, np.ndarray | None]]]:
        """`detect` for each look (frame index, frame, whether a new shot starts there), in the order given.

        Consecutive looks run side by side on the VIDEO landmarkers, as many at once as there are, unless a look
        starts a shot or is due a face count (those start a batch). When a look's close-up probe changes the
        landmarkers, the looks after it in its batch are run again on the new ones.
        """
        found: list[list[tuple[np.ndarray, np.ndarray | None]]] = []
        started = -1  # the look whose shot start and face count are done
        while len(found) < len(looks):
            batch = self._batch(looks[len(found) :])
            index, frame, new_shot = batch[0]
            counting = None
            if started != len(found):
                started = len(found)
                if new_shot:
                    self.new_shot()
                if self._counts(index):  # beside the batch; the batch is looked at again if it finds more faces
                    self._next_count = self._count_after(index)
                    counting = self._pool.submit(self._look, frame, self.pad)
            try:
                results = self._detect_video(batch)
            finally:
                count = 0 if counting is None else len(counting.result())
            if count > self.num_faces:
                log.debug("%d faces at frame %d: following them all from now on", count, index)
                self.num_faces = count
                self._replace_videos()
                continue
            for (index, frame, _), faces in zip(batch, results, strict=True):
                pad = self.pad
                found.append(self._probe(index, frame, faces))
                if self.pad != pad:
                    break  # the landmarkers were replaced: the rest of the batch is looked at again
        return found

    def _batch(self, looks: Sequence[tuple[int, np.ndarray, bool]]) -> list[tuple[int, np.ndarray, bool]]:
        """The first look, and those after it that neither start a shot nor are due a face count."""
        first = looks[0][0]
        next_count = self._count_after(first) if self._counts(first) else self._next_count
        batch = [looks[0]]
        for look in looks[1 : len(self._videos)]:
            if look[2] or self._counts(look[0], next_count):
                break
            batch.append(look)
        return batch

    def _counts(self, index: int, next_count: int | None = None) -> bool:
        """Whether the look at frame `index` is due a face count: the first look from each COUNT_EVERY-th frame
        (from `next_count` instead of the next one due now, for a look later in a batch)."""
        due = self._next_count if next_count is None else next_count
        return index >= due and self.num_faces < MAX_FACES

    @staticmethod
    def _count_after(index: int) -> int:
        return (index // COUNT_EVERY + 1) * COUNT_EVERY

    def _detect_video(
        self, batch: Sequence[tuple[int, np.ndarray, bool]]
    ) -> list[list[tuple[np.ndarray, np.ndarray | None]]]:
        """The batch's looks on consecutive VIDEO landmarkers: the first in this thread, the others in the pool."""
        turns = [self._videos[(self._turn + k) % len(self._videos)] for k in range(len(batch))]
        self._turn = (self._turn + len(batch)) % len(self._videos)
        images = [_image(frame, self.pad) for _, frame, _ in batch]
        stamps = [_timestamp_ms(index) for index, _, _ in batch]
        others = [
            self._pool.submit(video.detect_for_video, image, stamp)
            for video, image, stamp in zip(turns[1:], images[1:], stamps[1:], strict=True)
        ]
        try:
            results = [turns[0].detect_for_video(images[0], stamps[0])]
        finally:
            results += [future.result() for future in others]  # waited for even when the first one fails
        return [_faces(result, frame, self.pad) for result, (_, frame, _) in zip(results, batch, strict=True)]

    def _probe(
        self, index: int, frame: np.ndarray, found: list[tuple[np.ndarray, np.ndarray | None]]
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """`found`, or where no face was found early in a shot, the faces a bordered look finds (see top)."""
        if found or self.pad or self.probe_left <= 0:
            return found
        self.probe_left -= 1
        found = self._look(frame, CLOSEUP_PAD)
        if found:
            log.debug("close-up at frame %d: frames get a border from now on", index)
            self.pad = CLOSEUP_PAD
            self._replace_videos()
        return found

    def _replace_videos(self) -> None:
        count = len(self._videos)
        self._close_videos()
        self._create_videos(count)  # timestamps go on rising

    def _close_videos(self) -> None:
        while self._videos:
            self._videos.pop().close()

    def close(self) -> None:
        self._close_videos()
        if self._image is not None:
            self._image.close()
        self._pool.shutdown()


def _timestamp_ms(index: int) -> int:
    return int(round(index * 1000 / FPS))


def _faces(result, frame: np.ndarray, pad: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The landmarker's result in pixels of the unpadded frame."""
    height, width = frame.shape[:2]
    border = _border(frame, pad)
    scale = np.array([width + 2 * border, height + 2 * border, width + 2 * border], np.float32)
    shapes = result.face_blendshapes or [None] * len(result.face_landmarks)
    out = []
    for face, shape in zip(result.face_landmarks, shapes, strict=True):
        points = np.array([(p.x, p.y, p.z) for p in face], np.float32) * scale
        points[:, :2] -= border
        weights = None if shape is None else np.array([c.score for c in shape], np.float32)
        out.append((points, weights))
    return out


def _border(frame: np.ndarray, pad: float) -> int:
    return int(round(pad * max(frame.shape[:2])))


def _image(frame: np.ndarray, pad: float) -> mp.Image:
    border = _border(frame, pad)
    if border:
        frame = cv2.copyMakeBorder(frame, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
