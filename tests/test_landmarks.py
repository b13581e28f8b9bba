"""The landmark engine: sign convention, shift recovery on synthetic and real data (whole clips and short excerpts
with real shifted audio), with and without blendshapes, silence/noise, shapes, errors."""
import json

import numpy as np
import pytest

from syncnet.card import CARD_PATH as CARD_CONFIG
from syncnet.engines import EngineInput, load_engines
from syncnet.landmarks import (
    LIPS,
    LIPS_AND_BLENDSHAPES,
    MOUTH_BLENDSHAPES,
    NUM_BLENDSHAPES,
    NUM_LIP_FEATURES,
    SURROUND_SIGMA,
    SURROUND_WEIGHT,
    LandmarkEngine,
    LandmarkInputError,
    Projection,
    audio_features,
    projections,
    visual_features,
    window_dists,
)
from syncnet.media import SAMPLES_PER_FRAME
from syncnet.scoring import OFFSETS, Calibration, summarize
from tests.paths import CLIPS
from tests.test_engines import runs_with_rows

FRAMES = 150


def shift_audio(audio: np.ndarray, frames: int) -> np.ndarray:
    """Audio made early by `frames` (sample n takes sample n + 640 * frames), zero padded; late if negative."""
    step = frames * SAMPLES_PER_FRAME
    return np.concatenate([audio[step:], np.zeros(step, audio.dtype)]) if step >= 0 else (
        np.concatenate([np.zeros(-step, audio.dtype), audio[:step]]))


def talking(seed: int = 0, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic in-sync pair: syllable-like mouth opening and noise bursts loud exactly when the mouth is open.

    The lips: 5 lip shapes, then 8 lip-contour components (the first follows the opening, the rest are noise)."""
    rng = np.random.default_rng(seed)
    opening = np.convolve((rng.random(frames) < 0.3).astype(float), np.hanning(5), mode="same").clip(0, 1)
    contour = 0.01 * rng.standard_normal((frames, NUM_LIP_FEATURES - 5))
    contour[:, 0] += 0.2 * opening
    lips = np.concatenate([np.stack([0.1 * opening, 0.6 + 0.01 * rng.standard_normal(frames), 0.3 + 0.2 * opening,
                                     0.05 * opening, 1.2 + 0.05 * opening], axis=1), contour], axis=1)
    lips += 0.003 * rng.standard_normal(lips.shape)
    envelope = np.repeat(opening, SAMPLES_PER_FRAME)
    audio = 0.3 * envelope * rng.standard_normal(len(envelope)) + 0.001 * rng.standard_normal(len(envelope))
    return lips.astype(np.float32), audio.astype(np.float32)


def blendshapes_of(lips: np.ndarray, seed: int = 0) -> np.ndarray:
    """Synthetic (T, 52) blendshape scores: jawOpen follows the mouth opening, the rest small noise."""
    rng = np.random.default_rng(seed)
    scores = 0.02 * rng.random((len(lips), NUM_BLENDSHAPES))
    scores[:, 25] += 5.0 * lips[:, 0]  # jawOpen
    return scores.astype(np.float32)


def run(lips: np.ndarray, audio: np.ndarray, blendshapes: np.ndarray | None = None):
    crops = np.zeros((len(lips), 224, 224, 3), np.uint8)
    inputs = EngineInput(crops, audio, np.zeros((13, 4 * len(lips))), lips)
    if blendshapes is not None:  # the optional EngineInput.blendshapes field (T, 52)
        inputs.blendshapes = blendshapes
    return LandmarkEngine().run(inputs)


def test_output_shapes():
    lips, audio = talking()
    result = run(lips, audio)
    assert result.engine == "landmarks"
    assert result.window_dists.shape == (FRAMES, len(OFFSETS))
    assert result.dists.shape == (len(OFFSETS),)
    assert result.frame_confidence.shape == (FRAMES,)
    assert np.isfinite(result.window_dists).all()
    assert result.time_s >= 0


def test_in_sync_synthetic_reads_zero():
    lips, audio = talking()
    assert abs(run(lips, audio).offset_frames) <= 1


@pytest.mark.parametrize("shift", [-9, -4, 3, 8])
def test_sign_convention_on_synthetic_shift(shift):
    """Audio made EARLY by k frames must read +k (audio for frame i sits at audio frame i - k)."""
    lips, audio = talking(seed=1)
    base = run(lips, audio).offset_frames
    shifted = run(lips, shift_audio(audio, shift)).offset_frames
    assert np.sign(shifted - base) == np.sign(shift)
    assert abs(shifted - base - shift) <= 1


@pytest.mark.parametrize("shift", [-6, 4])
def test_blendshapes_are_used_when_given(shift):
    lips, audio = talking(seed=6)
    shapes = blendshapes_of(lips)
    base = run(lips, audio, shapes)
    shifted = run(lips, shift_audio(audio, shift), shapes)
    assert abs(shifted.offset_frames - base.offset_frames - shift) <= 1
    assert not np.allclose(base.dists, run(lips, audio).dists)  # another projection: other distances


def test_projections_fit_the_features():
    lips, audio = talking()
    weights = np.ones(len(lips))
    audio_dims = audio_features(audio.astype(np.float64), len(lips), weights).shape[1]
    for shapes in (None, blendshapes_of(lips)):
        projection = projections()[LIPS if shapes is None else LIPS_AND_BLENDSHAPES]
        assert projection.visual.shape[0] == visual_features(lips.astype(np.float64), shapes).shape[1]
        assert projection.audio.shape[0] == audio_dims
        assert projection.visual.shape[1] == projection.audio.shape[1] == len(projection.weights)
        assert (projection.weights > 0).all()
    assert visual_features(lips.astype(np.float64), blendshapes_of(lips)).shape[1] == 2 * (
        NUM_LIP_FEATURES + len(MOUTH_BLENDSHAPES))


def test_shift_recovered_under_noise():
    lips, audio = talking(seed=2)
    noisy = audio + 0.1 * np.random.default_rng(3).standard_normal(len(audio)).astype(np.float32)  # ~0 dB SNR
    assert abs(run(lips, shift_audio(noisy, 5)).offset_frames - run(lips, noisy).offset_frames - 5) <= 1


def test_silence_gives_no_confidence_and_no_crash():
    lips, _ = talking()
    result = run(lips, np.zeros(FRAMES * SAMPLES_PER_FRAME, np.float32))
    assert result.confidence == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(result.dists).all()


def test_motionless_lips_give_no_confidence():
    _, audio = talking()
    still = np.tile(np.array([0.1, 0.6, 0.3, 0.05, 1.2] + [0.0] * (NUM_LIP_FEATURES - 5), np.float32), (FRAMES, 1))
    assert run(still, audio).confidence == pytest.approx(0.0, abs=1e-9)


def test_unrelated_noise_is_much_less_confident_than_speech():
    lips, audio = talking(seed=4)
    noise = (0.3 * np.random.default_rng(5).standard_normal(len(audio))).astype(np.float32)
    assert run(lips, noise).confidence < 0.5 * run(lips, audio).confidence


def test_short_audio_is_padded_and_gaps_in_lips_are_filled():
    lips, audio = talking()
    lips[10:14, 0] = np.nan
    result = run(lips, audio[: len(audio) // 2])
    assert np.isfinite(result.dists).all()


@pytest.mark.parametrize(
    ("lips", "audio", "message"),
    [
        (np.zeros((50, 3)), np.zeros(50 * 640), "lip shapes must be"),
        (np.zeros((1, NUM_LIP_FEATURES)), np.zeros(640), "at least 2 frames"),
        (np.zeros((50, NUM_LIP_FEATURES)), np.full(50 * 640, np.nan), "NaN"),
        (np.full((50, NUM_LIP_FEATURES), np.nan), np.zeros(50 * 640), "no finite value"),
    ],
)
def test_bad_input_is_refused_clearly(lips, audio, message):
    with pytest.raises(LandmarkInputError, match=message):
        LandmarkEngine().window_dists(lips, audio)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (np.zeros((50, 10)), "blendshapes must be"),
        (np.zeros((49, NUM_BLENDSHAPES)), "one row per lip-shape frame"),
        (np.full((50, NUM_BLENDSHAPES), np.nan), "blendshape column has no finite value"),
    ],
)
def test_bad_blendshapes_are_refused_clearly(shapes, message):
    lips, audio = talking(frames=50)
    with pytest.raises(LandmarkInputError, match=message):
        LandmarkEngine().window_dists(lips, audio, shapes)


def test_gaps_in_blendshapes_are_filled():
    lips, audio = talking()
    shapes = blendshapes_of(lips)
    shapes[20:25, 25] = np.nan
    assert np.isfinite(run(lips, audio, shapes).dists).all()


def test_each_offset_is_scored_against_its_surround():
    """1 - dists is the similarity minus SURROUND_WEIGHT times its Gaussian surround over offsets, frame by frame."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(3)
    visual, sound = rng.standard_normal((2, 40, 3))
    weights = np.array([0.5, 0.3, 0.2])
    similarity = np.zeros((40, len(OFFSETS)))
    for column, offset in enumerate(OFFSETS):
        for t in range(40):
            if 0 <= t - offset < 40:
                similarity[t, column] = (weights * visual[t] * sound[t - offset]).sum()
    surround = gaussian_filter1d(similarity, SURROUND_SIGMA, axis=1, mode="nearest")
    expected = 1.0 - (similarity - SURROUND_WEIGHT * surround)
    np.testing.assert_allclose(window_dists(visual, sound, weights), expected, atol=1e-12)


def test_other_projections_can_be_given():
    """LandmarkEngine(fitted=...) scores with those projections (the cross-validation's folds), not the stored ones."""
    lips, audio = talking()
    stored = projections()[LIPS]
    flipped = {LIPS: Projection(stored.visual, -stored.audio, stored.weights)}
    same = LandmarkEngine(fitted={LIPS: stored}).window_dists(lips, audio)
    np.testing.assert_array_equal(same, LandmarkEngine().window_dists(lips, audio))
    assert not np.allclose(LandmarkEngine(fitted=flipped).window_dists(lips, audio), same)


def test_rows_are_the_very_rows_of_the_whole_result():
    """rows: the rows of those frames of the whole segment's result, bit for bit, and the summary of those rows."""
    lips, audio = talking()
    inputs = EngineInput(np.zeros((len(lips), 224, 224, 3), np.uint8), audio, np.zeros((13, 0)), lips,
                         blendshapes_of(lips))
    for part, expected in runs_with_rows(LandmarkEngine(), inputs):
        np.testing.assert_array_equal(part.window_dists, expected)
        reference = summarize(LandmarkEngine.name, expected)
        np.testing.assert_array_equal(part.dists, reference.dists)
        np.testing.assert_array_equal(part.frame_confidence, reference.frame_confidence)


def test_registry_loads_the_engine_with_the_cards_calibration():
    engines, skipped = load_engines(["landmarks"])
    assert [e.name for e in engines] == ["landmarks"] and skipped == []
    card = json.loads(CARD_CONFIG.read_text())["calibration"]["landmarks"]
    assert engines[0].calibration == Calibration(card["scale"], card["bias"])


def test_calibration_shifts_the_reported_offset():
    lips, audio = talking()
    crops = np.zeros((len(lips), 224, 224, 3), np.uint8)
    result = LandmarkEngine(Calibration(1.0, -0.5)).run(EngineInput(crops, audio, np.zeros((13, 0)), lips))
    assert result.calibrated_offset_frames == pytest.approx(result.subframe_offset - 0.5)


def test_lip_contour_ignores_head_pose():
    """The lip shapes and lip-contour components do not change when the whole face is turned, scaled and moved
    (a random face whose head points are the stored pose template)."""
    from syncnet.lips import LIP_FEATURES, RIGID_POINTS, lip_contour_model, lip_shapes_of

    rng = np.random.default_rng(0)
    face = rng.normal(0.0, 0.3, (6, 478, 3))  # 6 frames of a random face ...
    face[:, RIGID_POINTS] = lip_contour_model().template  # ... whose head points are the template's
    face[:, 33], face[:, 263] = (-0.5, 0.0, 0.0), (0.5, 0.0, 0.0)  # outer eye corners
    angle = 0.4
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    moved = 80.0 * face @ turn.T + np.array([300.0, 200.0, 5.0])
    assert lip_shapes_of(face).shape == (6, len(LIP_FEATURES)) == (6, NUM_LIP_FEATURES)
    np.testing.assert_allclose(lip_shapes_of(moved), lip_shapes_of(face), atol=1e-4)


@pytest.fixture(scope="module")
def real_clip():
    from syncnet.faces import track_face
    from syncnet.lips import lip_shapes
    from syncnet.media import load_media

    media = load_media(str(CLIPS / "pcavs_audiosrc_00086.mp4"))
    track = track_face(media.frames, media.audio)
    audio = np.zeros(track.num_frames * SAMPLES_PER_FRAME, np.float32)
    piece = media.audio[track.start * SAMPLES_PER_FRAME : track.stop * SAMPLES_PER_FRAME]
    audio[: len(piece)] = piece
    return lip_shapes(track), audio


@pytest.mark.slow
@pytest.mark.parametrize("shift", [-7, 5])
def test_known_shift_recovered_on_real_clip(real_clip, shift):
    lips, audio = real_clip
    base = run(lips, audio)
    shifted = run(lips, shift_audio(audio, shift))
    assert abs(base.offset_frames) <= 3  # a VoxCeleb2 clip: near sync
    assert abs(shifted.offset_frames - base.offset_frames - shift) <= 1
    assert base.confidence > 0.1


def test_short_excerpts_with_real_shifted_audio(real_clip):
    """2 s excerpts (video [a, a+50), audio [a+s, a+s+50) of the same recording) find the shift within +-1."""
    lips, audio = real_clip
    reference = run(lips, audio).offset_frames
    hits = []
    for start in range(10, len(lips) - 60, 10):
        for shift in (-8, -3, 2, 7):
            piece = audio[(start + shift) * SAMPLES_PER_FRAME : (start + shift + 50) * SAMPLES_PER_FRAME]
            hits.append(abs(run(lips[start : start + 50], piece).offset_frames - reference - shift) <= 1)
    assert len(hits) >= 20 and np.mean(hits) >= 0.9
