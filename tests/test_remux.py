"""The corrected copy: audio moved by exactly the offset, video untouched, MP4 with AAC."""

import av
import numpy as np
import pytest

from syncnet.media import SAMPLES_PER_FRAME, MediaError, load_media
from syncnet.remux import write_corrected
from tests.media_tools import ffmpeg
from tests.paths import CLIPS
from tests.test_media import flash_and_beep


def audio_lag(original: np.ndarray, shifted: np.ndarray, max_lag: int) -> int:
    """Lag in samples (positive: `shifted` is later) at the peak of the cross-correlation."""
    n = min(len(original), len(shifted))
    size = 1 << int(np.ceil(np.log2(2 * n)))
    xc = np.fft.irfft(np.fft.rfft(shifted[:n], size) * np.conj(np.fft.rfft(original[:n], size)), size)
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(np.concatenate([xc[-max_lag:], xc[: max_lag + 1]]))])


@pytest.mark.slow
@pytest.mark.parametrize("clip", ["syncnet_example.avi", "pcavs_posesrc_00067.mp4", "videoretalking_face1.mp4"])
@pytest.mark.parametrize("offset", [7, -4, 0])
def test_audio_moves_by_exactly_the_offset_and_video_is_copied(tmp_path, clip, offset):
    src = CLIPS / clip
    dst = write_corrected(src, tmp_path / "fixed.mp4", offset)
    original, fixed = load_media(src), load_media(dst)
    # relative to the (unchanged) pictures, the sound sits exactly `offset` frames later
    assert audio_lag(original.audio, fixed.audio, 16 * SAMPLES_PER_FRAME) == offset * SAMPLES_PER_FRAME
    assert len(fixed.frames) == len(original.frames) and fixed.start_s == pytest.approx(original.start_s, abs=1e-3)
    assert np.array_equal(fixed.frames, original.frames)  # stream copy: the very same pictures
    with av.open(str(dst)) as out, av.open(str(src)) as inp:
        assert out.format.name.startswith("mov,mp4")
        assert out.streams.audio[0].codec_context.name == "aac"
        assert out.streams.video[0].codec_context.name == inp.streams.video[0].codec_context.name
        # durations match: the audio keeps its length (silence in, overhang out)
        out_audio = out.streams.audio[0]
        in_audio = inp.streams.audio[0]
        out_len = float(out_audio.duration * out_audio.time_base)
        in_len = float(in_audio.duration * in_audio.time_base) if in_audio.duration else original.duration_s
        assert out_len == pytest.approx(in_len, abs=0.07)


def test_silence_fills_the_delay(tmp_path):
    src = CLIPS / "pcavs_posesrc_00067.mp4"
    fixed = load_media(write_corrected(src, tmp_path / "fixed.mp4", 10))
    assert np.abs(fixed.audio[: 10 * SAMPLES_PER_FRAME - 1100]).max() < 1e-3  # allow AAC's smearing at the edge
    assert np.abs(fixed.audio[10 * SAMPLES_PER_FRAME :]).max() > 0.1


@pytest.mark.parametrize("suffix,vcodec,acodec", [("mpg", "mpeg1video", "mp2"), ("webm", "libvpx", "libopus")])
def test_codecs_mp4_cannot_hold_are_reencoded(tmp_path, suffix, vcodec, acodec):
    src = flash_and_beep(tmp_path / f"clip.{suffix}", vcodec=vcodec, acodec=acodec, duration=3.0)
    dst = write_corrected(src, tmp_path / "fixed.mp4", 5)
    original, fixed = load_media(src), load_media(dst)
    with av.open(str(dst)) as out:
        assert out.streams.video[0].codec_context.name == "h264"
    # where the audio ends the overlap, AAC's last frame (padded to 1024 samples) may add one 40 ms slot
    assert 0 <= len(fixed.frames) - len(original.frames) <= 1
    assert audio_lag(original.audio, fixed.audio, 16 * SAMPLES_PER_FRAME) == 5 * SAMPLES_PER_FRAME
    flash = lambda m: int(np.argmax(m.frames.mean(axis=(1, 2, 3))))  # noqa: E731
    assert flash(fixed) == flash(original)  # pictures keep their times


def test_bad_source(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(MediaError):
        write_corrected(bad, tmp_path / "out.mp4", 3)
    assert not (tmp_path / "out.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mp4"]  # no temporary files left


def test_rotation_survives(tmp_path):
    plain = flash_and_beep(tmp_path / "plain.mp4", vcodec="libx264", acodec="aac")
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    fixed = load_media(write_corrected(rotated, tmp_path / "fixed.mp4", 2))
    assert fixed.frames.shape[1:3] == load_media(rotated).frames.shape[1:3] == (96, 64)


@pytest.mark.slow
def test_landmark_engine_reads_zero_on_the_corrected_copy(tmp_path):
    """Shift a clip's audio 6 frames early (ffmpeg, independent of our code), detect, correct, detect again."""
    pytest.importorskip("syncnet.landmarks")
    from syncnet.pipeline import analyze_file

    src = CLIPS / "syncnet_example.avi"
    shifted = tmp_path / "shifted.mkv"
    ffmpeg("-i", str(src), "-ss", "0.24", "-i", str(src), "-map", "0:v", "-map", "1:a", "-c", "copy", str(shifted))
    before = analyze_file(shifted, ["landmarks"])
    offset = before.fix_offset_frames()
    assert offset is not None
    after = analyze_file(write_corrected(shifted, tmp_path / "fixed.mp4", offset), ["landmarks"])
    (result,) = after.results
    assert abs(result.calibrated_offset_frames) <= 1
    assert abs(before.results[0].offset_frames - result.offset_frames - offset) <= 1


@pytest.mark.slow
def test_mpeg4_with_b_frames_in_avi_is_copied(tmp_path):
    extra = ("-bf", "2", "-vtag", "XVID")
    src = flash_and_beep(tmp_path / "xvid.avi", vcodec="mpeg4", acodec="libmp3lame", extra=extra)
    dst = write_corrected(src, tmp_path / "fixed.mp4", -2)
    original, fixed = load_media(src), load_media(dst)
    with av.open(str(dst)) as out:
        assert out.streams.video[0].codec_context.name == "mpeg4"
    # MP3 ends the overlap here: AAC's padded last frame may add one 40 ms slot
    assert 0 <= len(fixed.frames) - len(original.frames) <= 1
    assert np.array_equal(fixed.frames[: len(original.frames)], original.frames)
    assert audio_lag(original.audio, fixed.audio, 16 * SAMPLES_PER_FRAME) == -2 * SAMPLES_PER_FRAME
