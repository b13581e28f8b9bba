"""Decoding: every container/codec we claim, frame/audio alignment by timestamps, and clear errors."""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from syncnet.media import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, Media, MediaError, load_media, probe_media
from tests.media_tools import FFMPEG, ffmpeg
from tests.paths import CLIPS


def flash_and_beep(
    path: Path,
    *,
    vcodec: str,
    acodec: str,
    rate: str = "25",
    sample_rate: int = 44100,
    video_delay: float = 0.0,
    audio_delay: float = 0.0,
    vfr: bool = False,
    duration: float = 3.0,
    extra: tuple[str, ...] = (),
    pipe: bool = False,
) -> Path:
    """A clip whose picture flashes white at 1.0 s and whose sound beeps at 1.0 s (before the stream delays)."""
    video = (
        f"color=c=black:s=96x64:r={rate}:d={duration},format=yuv420p,"
        "geq=lum='if(between(T,0.999,1.0399),235,16)':cb=128:cr=128"
    )
    if vfr:  # drop every third frame, as in videoretalking_face1.mp4
        video += r",select='not(eq(mod(n\,3)\,2))'"
    audio = f"aevalsrc='0.8*sin(2*PI*1000*t)*between(t,1.0,1.03)':s={sample_rate}:d={duration}"
    args = ["-itsoffset", str(video_delay), "-f", "lavfi", "-i", video]
    args += ["-itsoffset", str(audio_delay), "-f", "lavfi", "-i", audio]
    args += ["-c:v", vcodec, "-c:a", acodec, *extra]
    if vfr:
        args += ["-fps_mode", "vfr"]
    if pipe:  # as a browser's MediaRecorder writes it: streamed, no duration, no cues
        with open(path, "wb") as out:
            ffmpeg(*args, "-f", path.suffix[1:], "pipe:1", stdout=out)
    else:
        ffmpeg(*args, str(path))
    return path


def flash_and_beep_lag(media: Media) -> float:
    """Seconds by which the flash (first bright frame) follows the beep onset in the decoded arrays."""
    bright = np.flatnonzero(media.frames.mean(axis=(1, 2, 3)) > 128)
    loud = np.flatnonzero(np.abs(media.audio) > 0.2 * np.abs(media.audio).max())
    assert len(bright) and len(loud)
    return bright[0] / FPS - loud[0] / SAMPLE_RATE


def check_shapes(media: Media) -> None:
    t = len(media.frames)
    assert media.frames.dtype == np.uint8 and media.frames.ndim == 4 and media.frames.shape[3] == 3
    assert media.frames.flags.c_contiguous
    assert media.audio.dtype == np.float32 and media.audio.shape == (t * SAMPLES_PER_FRAME,)
    assert media.audio.flags.c_contiguous
    assert np.abs(media.audio).max() <= 1.0
    assert media.duration_s == pytest.approx(t / FPS)


CONTAINERS = [  # (suffix, video codec, audio codec, extra ffmpeg args, piped like a browser recording)
    ("mp4", "libx264", "aac", (), False),
    ("avi", "mpeg4", "pcm_s16le", (), False),
    ("mpg", "mpeg1video", "mp2", (), False),
    ("avi", "mpeg4", "libmp3lame", (), False),
    ("webm", "libvpx", "libopus", ("-ar", "48000"), True),
    ("mov", "libx264", "aac", (), False),
    ("mov", "mpeg4", "pcm_s16le", (), False),
]


@pytest.mark.parametrize("suffix,vcodec,acodec,extra,pipe", CONTAINERS)
def test_containers_decode_aligned(tmp_path, suffix, vcodec, acodec, extra, pipe):
    path = flash_and_beep(tmp_path / f"clip.{suffix}", vcodec=vcodec, acodec=acodec, extra=extra, pipe=pipe)
    info = probe_media(path)
    assert info.video_codec and info.audio_codec
    media = load_media(path)
    check_shapes(media)
    assert media.frames.shape[1:3] == (64, 96)
    assert abs(len(media.frames) - 75) <= 2
    # MP3 in AVI carries an encoder delay (~25 ms at 44.1 kHz) that AVI cannot signal: allow it there.
    tolerance = 0.03 if acodec == "libmp3lame" else 0.012
    assert abs(flash_and_beep_lag(media)) <= tolerance


@pytest.mark.parametrize("suffix,vcodec,acodec", [("mp4", "libx264", "aac"), ("mkv", "libx264", "libopus")])
@pytest.mark.parametrize("video_delay,audio_delay", [(0.4, 0.0), (0.0, 0.4), (0.2, 0.6)])
def test_stream_start_times_are_respected(tmp_path, suffix, vcodec, acodec, video_delay, audio_delay):
    path = flash_and_beep(
        tmp_path / f"clip.{suffix}", vcodec=vcodec, acodec=acodec, video_delay=video_delay, audio_delay=audio_delay
    )
    media = load_media(path)
    check_shapes(media)
    # frame 0 is the first 25 fps slot (counted from the first video frame) that has sound
    assert max(video_delay, audio_delay) - 0.001 <= media.start_s <= max(video_delay, audio_delay) + 1 / FPS
    assert flash_and_beep_lag(media) == pytest.approx(video_delay - audio_delay, abs=0.012)


@pytest.mark.parametrize("rate,vfr", [("30", True), ("30", False), ("30000/1001", False), ("50", False), ("15", False)])
def test_frame_rates_resampled_by_timestamp(tmp_path, rate, vfr):
    path = flash_and_beep(tmp_path / "clip.mp4", vcodec="libx264", acodec="aac", rate=rate, vfr=vfr, duration=4.0)
    media = load_media(path)
    check_shapes(media)
    assert abs(len(media.frames) - 100) <= 2
    assert abs(flash_and_beep_lag(media)) <= 0.012


def test_rotated_phone_video_is_turned_upright(tmp_path):
    plain = flash_and_beep(tmp_path / "plain.mp4", vcodec="libx264", acodec="aac")
    rotated = tmp_path / "rotated.mov"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    media = load_media(rotated)
    assert media.frames.shape[1:3] == (96, 64)
    assert media.info.rotation in (90, 270)
    # ffmpeg's own autorotation is the reference for the direction of the turn
    reference = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(rotated), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    first = np.frombuffer(reference, np.uint8).reshape(96, 64, 3)
    assert np.abs(first.astype(int) - media.frames[0].astype(int)).mean() < 3


@pytest.mark.slow
def test_real_clips_decode():
    """AVI/PCM, MP3 in AVI, MPEG-1/MP2, MP4/AAC (H.264, variable frame rate)."""
    expected = {  # frames at 25 fps over the audio/video overlap
        "syncnet_example.avi": 317,
        "syncnet_example_audiodelay5.avi": 319,
        "lipnet_grid_sbwe5n.mpg": 74,
        "pcavs_posesrc_00067.mp4": 114,
        "videoretalking_face1.mp4": 151,
    }
    for name, frames in expected.items():
        media = load_media(CLIPS / name)
        check_shapes(media)
        assert len(media.frames) == frames, name
        assert np.abs(media.audio).max() > 0.05, name  # real sound, not silence


def test_syncnet_example_is_bit_exact_pcm():
    media = load_media(CLIPS / "syncnet_example.avi")
    assert media.info.container == "avi" and media.info.audio_codec == "pcm_s16le" and media.info.sample_rate == 16000
    assert media.frames.shape == (317, 224, 224, 3)
    # 16 kHz mono PCM passes through the resampler unchanged: samples are exactly int16 / 32768
    assert np.array_equal(media.audio * 32768, np.round(media.audio * 32768))


def test_variable_frame_rate_clip_follows_timestamps():
    media = load_media(CLIPS / "videoretalking_face1.mp4")
    assert media.info.fps == pytest.approx(22.13, abs=0.01)
    assert media.start_s == pytest.approx(0.033, abs=0.001)  # video starts one 30 fps slot late
    # 135 source frames over 6.1 s: a reader that assumed 30 fps would see 4.5 s of video
    assert media.duration_s == pytest.approx(6.04, abs=0.05)


@pytest.mark.slow
def test_large_frames_are_scaled_down(tmp_path):
    path = tmp_path / "big.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=1920x1080:r=25:d=1.5", "-f", "lavfi", "-i", "sine=d=1.5",
        "-c:v", "libx264", "-c:a", "aac", str(path),
    )  # fmt: skip
    assert load_media(path, max_side=640).frames.shape[1:3] == (360, 640)
    assert load_media(path).frames.shape[1:3] == (720, 1280)
    assert load_media(path, max_side=None).frames.shape[1:3] == (1080, 1920)


# --- errors -----------------------------------------------------------------------------------------------


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        load_media(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        load_media(tmp_path / "empty.mp4")


def test_garbage_is_unreadable(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match="unreadable or corrupt"):
        load_media(path)


def test_truncated_file(tmp_path):
    data = (CLIPS / "pcavs_posesrc_00067.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError):
        load_media(path)


def test_no_audio_stream(tmp_path):
    path = tmp_path / "silent.mp4"
    ffmpeg("-i", str(CLIPS / "pcavs_posesrc_00067.mp4"), "-an", "-c:v", "copy", str(path))
    with pytest.raises(MediaError, match="no audio stream"):
        load_media(path)


def test_no_video_stream(tmp_path):
    path = tmp_path / "sound.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=d=2", str(path))
    with pytest.raises(MediaError, match="no video stream"):
        load_media(path)


def test_cover_art_is_not_video(tmp_path):
    path = tmp_path / "song.mp3"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=d=2", "-f", "lavfi", "-i", "color=s=64x64:d=1",
        "-map", "0", "-map", "1", "-c:v", "mjpeg", "-frames:v", "1", "-disposition:v", "attached_pic", str(path),
    )  # fmt: skip
    with pytest.raises(MediaError, match="no video stream .* cover art"):
        load_media(path)


def test_too_short(tmp_path):
    path = flash_and_beep(tmp_path / "short.mp4", vcodec="libx264", acodec="aac", duration=0.8)
    with pytest.raises(MediaError, match="too short"):
        load_media(path)


def test_too_short_overlap(tmp_path):
    """3 s of each stream, but they overlap only 0.6 s."""
    path = flash_and_beep(tmp_path / "apart.mp4", vcodec="libx264", acodec="aac", audio_delay=2.4)
    with pytest.raises(MediaError, match="too short: 0.6"):
        load_media(path)


def test_too_long(tmp_path):
    with pytest.raises(MediaError, match="too long"):
        load_media(CLIPS / "pcavs_posesrc_00067.mp4", max_duration_s=2.0)


@pytest.mark.slow
def test_too_long_without_declared_duration(tmp_path):
    """A streamed WebM declares no duration: the limit is enforced while decoding."""
    path = flash_and_beep(tmp_path / "rec.webm", vcodec="libvpx", acodec="libopus", duration=4.0, pipe=True)
    assert probe_media(path).duration_s is None
    with pytest.raises(MediaError, match="too long"):
        load_media(path, max_duration_s=2.0)


def test_too_large():
    with pytest.raises(MediaError, match="too large"):
        load_media(CLIPS / "pcavs_posesrc_00067.mp4", max_bytes=100_000)
