"""Face tracks, crops in SyncNet's convention, lip shapes, speaker choice and the face model file."""


import cv2
import numpy as np
import pytest

from syncnet import faces, landmarker
from syncnet.errors import FaceModelError, NoFaceError
from syncnet.faces import (
    FaceTrack,
    crop_faces,
    mouth_crops,
    track_face,
)
from syncnet.landmarker import LANDMARKERS
from syncnet.lips import LIP_FEATURES, lip_shapes
from syncnet.media import SAMPLES_PER_FRAME, Media, load_media, media_chunks
from syncnet.pipeline import FACE_STRIDE
from syncnet.smooth import medfilt
from tests.paths import CLIPS


@pytest.fixture(scope="module")
def example():
    return load_media(CLIPS / "syncnet_example.avi")


@pytest.fixture(scope="module")
def speaker():
    return load_media(CLIPS / "pcavs_posesrc_00067.mp4")


@pytest.fixture(scope="module")
def other():
    return load_media(CLIPS / "pcavs_audiosrc_00086.mp4")


@pytest.fixture(scope="module")
def example_track(example):
    return track_face(example.frames, example.audio)


# --- model file ------------------------------------------------------------------------------------------------


def test_vendored_model_checks_out():
    assert landmarker._sha256(landmarker.model_path()) == landmarker.MODEL_SHA256


def test_download_model_from_url(tmp_path):
    dst = landmarker.download_model(tmp_path / "m" / "face_landmarker.task", url=landmarker.MODEL_PATH.as_uri())
    assert landmarker._sha256(dst) == landmarker.MODEL_SHA256
    assert [p.name for p in dst.parent.iterdir()] == ["face_landmarker.task"]


def test_download_model_wrong_bytes_leave_nothing(tmp_path):
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="wrong sha256"):
        landmarker.download_model(tmp_path / "out" / "face_landmarker.task", url=bad.as_uri())
    assert list((tmp_path / "out").iterdir()) == []


def test_download_model_unreachable(tmp_path):
    with pytest.raises(FaceModelError, match="cannot download"):
        landmarker.download_model(tmp_path / "face_landmarker.task", url=(tmp_path / "missing.task").as_uri())


def test_missing_model_is_fetched_to_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(landmarker, "MODEL_URL", landmarker.MODEL_PATH.as_uri())
    path = landmarker.model_path(tmp_path / "absent" / "face_landmarker.task")
    assert path == str(tmp_path / "cache" / "syncnet" / "face_landmarker.task")
    assert landmarker._sha256(path) == landmarker.MODEL_SHA256


def test_corrupt_model_is_refused(tmp_path):
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"x" * 100)
    with pytest.raises(FaceModelError, match="sha256"):
        landmarker.model_path(bad)


# --- tracks ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_track_on_syncnet_example(example, example_track):
    t = example_track
    assert (t.start, t.stop, t.num_faces) == (0, 317, 1)
    assert t.landmarks.shape == (317, 478, 3) and t.landmarks.dtype == np.float32
    assert t.boxes.shape == (317, 4)
    assert t.detected.mean() > 0.95
    # the clip is itself a crop in SyncNet's convention: its S3FD box is centred at (112, 80) with half-size 80
    x, y, s = (np.median(v) for v in t.smoothed())
    assert abs(x - 112) < 8 and abs(y - 80) < 8 and abs(s - 80) < 10
    assert t.speaking_score > 0.3  # the anchor's lips follow the speech energy
    assert t.describe().startswith("one face seen; followed the face in the centre, frames 0-316 (12.7 s)")


def test_crop_convention_matches_syncnet_code():
    """crop_faces against a line-by-line transcription of run_pipeline.py crop_video on the same smoothed boxes."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 120, 160, 3), dtype=np.uint8)
    centres = np.linspace([20.0, 30.0], [150.0, 100.0], 30)  # runs into both edges of the frame
    sizes = np.linspace(20.0, 45.0, 30)
    boxes = np.concatenate([centres - sizes[:, None], centres + sizes[:, None]], axis=1).astype(np.float32)
    track = FaceTrack(0, 30, np.zeros((30, 478, 3), np.float32), boxes, np.ones(30, bool), (120, 160), 1, 0.0)
    ours = crop_faces(frames, track)
    xs, ys, ss = track.smoothed()
    cs = 0.4
    for fidx in range(30):
        bs = ss[fidx]
        bsi = int(bs * (1 + 2 * cs))
        frame = np.pad(frames[fidx], ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(110, 110))
        my, mx = ys[fidx] + bsi, xs[fidx] + bsi
        face = frame[int(my - bs) : int(my + bs * (1 + 2 * cs)), int(mx - bs * (1 + cs)) : int(mx + bs * (1 + cs))]
        assert np.array_equal(ours[fidx], cv2.resize(face, (224, 224))), fidx


def test_crops_mouth_crops_and_lip_shapes(example, example_track):
    crops = crop_faces(example.frames, example_track)
    assert crops.shape == (317, 224, 224, 3) and crops.dtype == np.uint8 and crops.flags.c_contiguous
    mouths = mouth_crops(example.frames, example_track, size=64)
    assert mouths.shape == (317, 64, 64, 3) and mouths.dtype == np.uint8
    lips = lip_shapes(example_track)
    assert lips.shape == (317, len(LIP_FEATURES)) and lips.dtype == np.float32
    assert np.isfinite(lips).all()
    gap, width = lips[:, 0], lips[:, 1]
    assert gap.min() >= 0 and gap.std() > 0.01  # the mouth opens and closes
    assert 0.3 < np.median(width) < 0.9  # mouth width relative to the distance between the outer eye corners


@pytest.mark.slow
def test_webcam_close_up_is_found(speaker):
    """Face filling the whole frame (eyes to chin, cut at the sides), upscaled as a webcam would give it."""
    tight = np.stack([cv2.resize(f[50:140, 70:155], (480, 480)) for f in speaker.frames])
    track = track_face(tight, speaker.audio)
    assert track.num_frames >= 0.9 * len(tight)
    crops = crop_faces(tight, track)
    assert crops.shape == (track.num_frames, 224, 224, 3)


@pytest.mark.slow
def test_webcam_close_up_is_found_by_landmarkers_taking_turns(speaker):
    """As above, with the landmarkers taking turns on every other frame (the SyncNet engines' face stage): the probe
    that finds the close-up replaces them in the middle of a batch, and the looks after it are made again."""
    tight = np.stack([cv2.resize(f[50:140, 70:155], (480, 480)) for f in speaker.frames])
    media = Media(tight, speaker.audio, len(tight) / 25, "<memory>", 0.0, None)
    with faces.FaceTracker(crops=False, stride=FACE_STRIDE, landmarkers=2) as tracker:
        for chunk in media_chunks(media):
            tracker.add(chunk)
        tracker.finish()
    assert tracker.landmarker.pad == landmarker.CLOSEUP_PAD
    assert max(t.stop - t.start for t in tracker.tracks) >= 0.9 * len(tight)


def side_by_side(left, right):
    n = min(len(left.frames), len(right.frames))
    return np.ascontiguousarray(np.concatenate([left.frames[:n], right.frames[:n]], axis=2)), n


@pytest.mark.slow
@pytest.mark.parametrize("speaker_on_left", [True, False])
def test_speaking_face_is_chosen(speaker, other, speaker_on_left):
    frames, n = side_by_side(speaker, other) if speaker_on_left else side_by_side(other, speaker)
    track = track_face(frames, speaker.audio[: n * SAMPLES_PER_FRAME])
    assert track.num_faces == 2 and len(track.segments) == 2
    centre_x = np.median(track.boxes[:, [0, 2]].mean(axis=1))
    assert (centre_x < frames.shape[2] / 2) == speaker_on_left
    assert ("on the left" if speaker_on_left else "on the right") in track.describe()
    assert track.describe().startswith("2 faces at once seen")
    chosen = [s for s in track.segments if s.chosen]
    assert chosen[0].speaking_score == max(s.speaking_score for s in track.segments)


def test_no_face(speaker):
    frames = np.full((50, 120, 160, 3), 90, np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        track_face(frames, speaker.audio[: 50 * SAMPLES_PER_FRAME])


def test_face_too_briefly_visible(speaker):
    frames = np.full((60, 224, 224, 3), 90, np.uint8)
    frames[10:25] = speaker.frames[10:25]  # 0.6 s of face
    with pytest.raises(NoFaceError, match="longest 0.6"):
        track_face(frames, speaker.audio[: 60 * SAMPLES_PER_FRAME])


def blur(frames: np.ndarray) -> np.ndarray:
    """Frames so blurred that no face is found, yet no scene cut either (like a face lost to motion blur)."""
    return np.stack([cv2.GaussianBlur(f, (0, 0), 10) for f in frames])


@pytest.mark.slow
def test_short_gap_is_bridged(speaker):
    frames = speaker.frames.copy()
    frames[40:46] = blur(frames[40:46])  # 6 frames without a face
    track = track_face(frames, speaker.audio)
    assert (track.start, track.stop) == (0, len(frames))
    assert not track.detected[40:46].any() and track.detected[:40].all()
    # interpolated landmarks lie between their neighbours
    assert np.all(np.isfinite(track.landmarks[40:46]))
    lo = np.minimum(track.landmarks[39], track.landmarks[46]) - 1e-3
    hi = np.maximum(track.landmarks[39], track.landmarks[46]) + 1e-3
    assert np.all((track.landmarks[40:46] >= lo) & (track.landmarks[40:46] <= hi))


@pytest.mark.slow
def test_long_gap_splits_and_keeps_longest(speaker):
    frames = speaker.frames.copy()
    frames[30:60] = blur(frames[30:60])  # 1.2 s without a face: frames 0..29 and 60..113 are separate segments
    track = track_face(frames, speaker.audio)
    assert (track.start, track.stop) == (60, len(frames))
    assert sorted((s.start, s.stop) for s in track.segments) == [(0, 30), (60, len(frames))]


@pytest.mark.slow
def test_scene_cut_splits_track(speaker, other):
    """Two shots back to back (faces of similar size and place): the track must not run across the cut."""
    frames = np.concatenate([other.frames[:40], speaker.frames[:70]])
    audio = np.concatenate([other.audio[: 40 * SAMPLES_PER_FRAME], speaker.audio[: 70 * SAMPLES_PER_FRAME]])
    assert list(faces.scene_cuts(frames)) == [40]
    track = track_face(frames, audio)
    assert (track.start, track.stop) == (40, 110)


def test_faces_are_compared_on_the_frames_they_share():
    """A brief second face with a high score of its own must not beat the speaker where they are on screen together."""
    rng = np.random.default_rng(1)
    energy = rng.normal(size=300)
    speaker = rng.normal(size=300)
    speaker[100:140] = energy[100:140]  # follows the sound only while the other face is there, diluting its score
    other = 0.5 * energy[100:140] + rng.normal(scale=0.5, size=40)
    segments = [
        faces.Segment(0, 300, faces._speaking_score(speaker, energy)),
        faces.Segment(100, 140, faces._speaking_score(other, energy[100:140])),
    ]
    assert segments[1].speaking_score > segments[0].speaking_score
    assert faces._choose(segments, [speaker, other], energy) == 0


@pytest.mark.slow
@pytest.mark.parametrize("stride, landmarkers", [(1, 1), (FACE_STRIDE, LANDMARKERS)])  # landmarks engine; crop engines
def test_pieces_of_the_silent_face_are_not_speaking(speaker, other, monkeypatch, stride, landmarkers):
    """Two faces side by side, one soundtrack: every piece of the speaker's track is marked speaking and every piece
    of the other face's track judged on enough frames is not, so the SyncNet engines score only the speaker (also
    with the landmarkers taking turns on every other frame, as for the SyncNet engines)."""
    monkeypatch.setattr(faces, "PIECE_FRAMES", 25)  # 1 s pieces: several per track, the first ones not judged
    frames, n = side_by_side(speaker, other)
    media = Media(frames, speaker.audio[: n * SAMPLES_PER_FRAME], n / 25, "<memory>", 0.0, None)
    with faces.FaceTracker(crops=False, stride=stride, landmarkers=landmarkers) as tracker:
        pieces = [p for chunk in media_chunks(media) for p in tracker.add(chunk)] + tracker.finish()
    judged = [p for p in pieces if p.keep[1] >= faces.MIN_JUDGED_FRAMES]
    assert len({p.track for p in pieces}) == 2 and len(judged) >= 4
    assert all(p.speaking is None for p in pieces if p.keep[1] < faces.MIN_JUDGED_FRAMES)  # too little to judge
    speaking_track = next(t for t in tracker.tracks if t.speaking)
    assert {p.track for p in judged if p.speaking} == {speaking_track.number}
    assert np.median(speaking_track.boxes[:, [0, 2]].mean(axis=1)) < frames.shape[2] / 2  # the speaker is on the left


def _spy_on_looks(tracker: faces.FaceTracker) -> list[int]:
    """The frame indices the tracker's landmarker is called on, as they come."""
    looks: list[int] = []
    detect_looks = tracker.landmarker.detect_looks

    def spy(batch):
        looks.extend(index for index, _, _ in batch)
        return detect_looks(batch)

    tracker.landmarker.detect_looks = spy
    return looks


@pytest.mark.slow
@pytest.mark.parametrize("landmarkers", [1, 2])
def test_stride_looks_at_every_other_frame_and_tracks_all_of_them(example, landmarkers):
    """With stride 2 the landmarker sees half the frames (or two landmarkers take turns on them); the track still
    covers every frame, its smoothed boxes close to those found on every frame, and so are the SyncNet crops cut
    from them."""
    media = example
    runs = {}
    for stride, count in ((1, 1), (2, landmarkers)):
        with faces.FaceTracker(crops=True, stride=stride, landmarkers=count) as tracker:
            looks = _spy_on_looks(tracker)
            pieces = [p for chunk in media_chunks(media) for p in tracker.add(chunk)] + tracker.finish()
        runs[stride] = looks, tracker.tracks[0], np.concatenate([p.crops[p.keep[0] - p.start: p.keep[1] - p.start]
                                                                 for p in pieces])
    (looks1, track1, crops1), (looks2, track2, crops2) = runs[1], runs[2]
    assert looks1 == list(range(len(media.frames))) and looks2 == list(range(0, len(media.frames), 2))
    assert (track2.start, track2.num_frames) == (track1.start, track1.num_frames) == (0, 317)
    smoothed1, smoothed2 = (np.stack([medfilt(t.boxes[:, k], faces.SMOOTH_KERNEL) for k in range(4)], axis=1)
                            for t in (track1, track2))
    shift = np.abs(smoothed1 - smoothed2).max(axis=1) / np.median(track1.boxes[:, 2] - track1.boxes[:, 0])
    assert np.median(shift) < 0.01 and shift.max() < 0.05
    assert crops1.shape == crops2.shape and np.abs(crops1.astype(np.int16) - crops2).mean() < 4.0
