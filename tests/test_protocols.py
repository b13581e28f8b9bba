"""The scoring protocols: Wav2Lip's full-frame resize, the original pipelines' JPEG round trip, the tracked crops."""
import glob

import cv2
import numpy as np
import pytest

from syncnet.constants import CROP_SIZE, SAMPLES_PER_FRAME
from syncnet.engines import EngineInput
from syncnet.errors import EngineInputError
from syncnet.faces import crop_faces, track_face
from syncnet.media import load_media
from syncnet.model import check_inputs
from syncnet.protocols import JpegRoundTrip, frame_rate_warning, full_frame_crops
from tests.media_tools import ffmpeg
from tests.paths import CLIPS

GRID_CLIP = CLIPS / "lipnet_grid_sbwe5n.mpg"  # 360x288, 25 fps: the resize does real work


@pytest.fixture(scope="module")
def grid():
    return load_media(GRID_CLIP)


def _engine_view(crops: np.ndarray) -> np.ndarray:
    """The BGR frames a SyncNet engine feeds its network for these crops."""
    frames = len(crops)
    audio = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    frames_bgr, _ = check_inputs(EngineInput(crops=crops, audio=audio, mfcc=np.zeros((13, 4 * frames)), lips=None))
    return frames_bgr


def test_full_frame_crops_are_what_the_original_feeds_the_network(grid):
    """Wav2Lip's SyncNetInstance_calc_scores: cv2.resize(cv2.imread(jpg), (224, 224)) on BGR images, bit for bit."""
    frames = grid.frames
    assert frames.shape[1:] == (288, 360, 3)
    crops = full_frame_crops(frames)
    assert crops.shape == (len(frames), CROP_SIZE, CROP_SIZE, 3) and crops.dtype == np.uint8
    original = np.stack([cv2.resize(np.ascontiguousarray(f[..., ::-1]), (224, 224)) for f in frames])
    np.testing.assert_array_equal(_engine_view(crops), original)
    np.testing.assert_array_equal(crops, np.stack([cv2.resize(f, (224, 224)) for f in frames]))


def test_jpeg_round_trip_equals_ffmpeg_image2_files_read_by_opencv(grid, tmp_path):
    """The same pixels as `ffmpeg -threads 1 -f image2 %06d.jpg` (no quality option) then cv2.imread, frame for frame.

    The frames go to ffmpeg as raw RGB; `-pix_fmt yuvj420p` makes it encode 4:2:0 as it does for a video (from RGB
    input it would otherwise pick 4:4:4).
    """
    frames = grid.frames[:40]
    height, width = frames.shape[1:3]
    raw = tmp_path / "frames.rgb"
    raw.write_bytes(frames.tobytes())
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", "25", "-i", str(raw),
           "-threads", "1", "-pix_fmt", "yuvj420p", "-f", "image2", str(tmp_path / "%06d.jpg"))
    files = np.stack([cv2.imread(f)[..., ::-1] for f in sorted(glob.glob(str(tmp_path / "*.jpg")))])
    assert len(files) == len(frames)
    round_trip = JpegRoundTrip()(frames)
    np.testing.assert_array_equal(round_trip, files)
    assert not np.array_equal(round_trip, frames)  # it is lossy: the rate control's quantisation is visible


def test_jpeg_round_trip_carries_its_rate_control_across_chunks(grid):
    frames = grid.frames[:30]
    whole = JpegRoundTrip()(frames)
    chunked = JpegRoundTrip()
    np.testing.assert_array_equal(np.concatenate([chunked(frames[:13]), chunked(frames[13:])]), whole)
    fresh = JpegRoundTrip()(frames[13:])  # a new encoder starts its rate control again
    assert not np.array_equal(fresh, whole[13:])


def test_full_frame_crops_with_jpeg_resize_the_round_tripped_frames(grid):
    frames = grid.frames[:10]
    expected = full_frame_crops(JpegRoundTrip()(frames))
    np.testing.assert_array_equal(full_frame_crops(frames, jpeg=JpegRoundTrip()), expected)


def test_bad_frames_are_refused():
    with pytest.raises(EngineInputError, match="uint8"):
        full_frame_crops(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(EngineInputError, match="uint8"):
        JpegRoundTrip()(np.zeros((0, 8, 8, 3), np.uint8))
    round_trip = JpegRoundTrip()
    round_trip(np.zeros((1, 16, 16, 3), np.uint8))
    with pytest.raises(EngineInputError, match="changed size"):
        round_trip(np.zeros((1, 32, 16, 3), np.uint8))


def test_frame_rate_warning():
    assert frame_rate_warning(25.0) is None and frame_rate_warning(None) is None
    assert "200 ms per second" in frame_rate_warning(30.0)
    assert "29.97 fps" in frame_rate_warning(30000 / 1001)


class _RecordingEngine:
    """Stands in for a crop engine: keeps the crops it is given and scores nothing in particular."""

    name = "syncnet"

    def __init__(self):
        from syncnet.scoring import Calibration

        self.calibration = Calibration()
        self.crops: list[np.ndarray] = []

    def run(self, inputs: EngineInput):
        from syncnet.scoring import summarize

        self.crops.append(inputs.crops)
        return summarize(self.name, np.ones((max(len(inputs.crops) - 4, 1), 31)))


@pytest.mark.slow
@pytest.mark.parametrize("crop", ["track", "full-frame"])
def test_each_protocol_feeds_the_engines_its_crops(grid, monkeypatch, crop):
    """track: syncnet_python's tracked crops, as faces.crop_faces cuts them from the same tracking (the
    landmarkers taking turns on every FACE_STRIDE-th frame, as for the SyncNet engines alone); full-frame: every
    frame resized."""
    from syncnet import pipeline

    engine = _RecordingEngine()
    monkeypatch.setattr(pipeline, "get_engines", lambda names=None: ([engine], []))
    report = pipeline.analyze_file(GRID_CLIP, ["syncnet"], crop=crop)
    seen = np.concatenate(engine.crops)
    if crop == "track":
        track = track_face(grid.frames, grid.audio, stride=pipeline.FACE_STRIDE, landmarkers=pipeline.LANDMARKERS)
        assert report.segment == (track.start, track.stop)
        expected = crop_faces(grid.frames, track)
    else:
        expected = full_frame_crops(grid.frames)
    np.testing.assert_array_equal(seen, expected)
    assert report.to_dict()["protocol"] == crop


@pytest.mark.parametrize("crop", ["track", "full-frame"])
def test_cli_detect_passes_the_crop_protocol_on(monkeypatch, capsys, crop):
    from syncnet import cli, pipeline

    seen = {}

    def fake_analyze_file(path, engines, progress=None, **options):
        seen.update(options)
        raise pipeline.BadArgument("stop here")  # the pipeline's own handling of the protocol is tested elsewhere

    monkeypatch.setattr(pipeline, "analyze_file", fake_analyze_file)
    assert cli.main(["detect", str(GRID_CLIP), "--crop", crop, "--verbose"]) == cli.EXIT_BAD_INPUT
    assert seen["crop"] == crop
    assert "stop here" in capsys.readouterr().err


def test_cli_detect_refuses_an_unknown_crop_protocol(capsys):
    from syncnet import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["detect", str(GRID_CLIP), "--crop", "mouth"])
    assert stopped.value.code == cli.EXIT_BAD_INPUT
    assert "invalid choice: 'mouth'" in capsys.readouterr().err


def test_app_passes_the_crop_protocol_on(monkeypatch):
    import gradio as gr

    import app
    from syncnet import pipeline

    seen = {}

    def fake_analyze_file(path, engines, progress=None, **options):
        seen.update(options)
        raise pipeline.BadArgument("stop here")

    monkeypatch.setattr(pipeline, "analyze_file", fake_analyze_file)
    with pytest.raises(gr.Error, match="stop here"):
        app.detect(str(GRID_CLIP), ["landmarks"], crop="full-frame", progress=lambda *a, **k: None)
    assert seen["crop"] == "full-frame"
