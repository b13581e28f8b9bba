"""Write a copy of a video with its audio shifted to fix a detected offset.

Offset +k frames means the audio is k frames early (DESIGN.md), so it is delayed by k * 40 ms; a negative offset
advances it. The audio keeps its length (silence fills in, the overhang is cut), is encoded as AAC, and the video
stream is copied packet for packet when MP4 can hold its codec (re-encoded with H.264 otherwise).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from fractions import Fraction

import av
import numpy as np
from av.bitstream import BitStreamFilterContext

from syncnet.constants import FPS
from syncnet.errors import MediaError
from syncnet.media import open_container, probe_media, video_stream

log = logging.getLogger(__name__)

COPYABLE_VIDEO = {"h264", "hevc", "mpeg4", "av1", "vp9"}  # codecs the MP4 muxer takes as they are
AUDIO_CODEC = "aac"
AUDIO_BITRATE = 160_000
AAC_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}
AAC_FRAME = 1024


def write_corrected(src: str | os.PathLike, dst: str | os.PathLike, offset_frames: float) -> str:
    """Write `dst` (MP4, AAC audio): `src` with its audio delayed by offset_frames * 40 ms (advanced if negative)."""
    info = probe_media(src, max_bytes=2**62)
    dst = os.fspath(dst)
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=os.path.dirname(os.path.abspath(dst)))
    os.close(fd)
    try:
        _remux(info.path, tmp, offset_frames / FPS)
        os.replace(tmp, dst)
    except av.error.FFmpegError as e:
        raise MediaError(f"cannot write the corrected video for {os.path.basename(info.path)}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log.info("wrote %s with the audio shifted by %+.3f s", dst, offset_frames / FPS)
    return dst


def _remux(src: str, dst: str, shift_s: float) -> None:
    audio_start, samples, rate, layout = _shifted_audio(src, shift_s)
    with open_container(src) as source:
        video = video_stream(source)
        # Both streams move by the same amount so that the output starts at 0 (the MP4 muxer handles AAC priming
        # and B-frame delays cleanly from there); their relative timing is kept. A stream's start delay is an edit
        # list counted in the movie timescale, 1/1000 s by default: use the video's time base instead.
        video_start = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        origin = min(audio_start, video_start)
        timescale = video.time_base.denominator if video.time_base.denominator <= 10**6 else 90000
        options = {"movie_timescale": str(timescale), "movflags": "+faststart"}  # faststart: playable while loading
        with av.open(dst, "w", format="mp4", options=options) as out:
            copy = video.codec_context.name in COPYABLE_VIDEO
            out_video = out.add_stream_from_template(video) if copy else _h264_stream(out, video)
            out_audio = out.add_stream(AUDIO_CODEC, rate=rate, layout=layout)
            out_audio.bit_rate = AUDIO_BITRATE
            out_audio.time_base = Fraction(1, rate)
            audio_packets = _encode_audio(out_audio, samples, first=int(round((audio_start - origin) * rate)))
            _write_video(source, video, out, out_video, copy, int(round(origin / video.time_base)), audio_packets)


def _h264_stream(out: av.container.OutputContainer, video: av.VideoStream) -> av.VideoStream:
    stream = out.add_stream("libx264", rate=video.average_rate or video.guessed_rate or 25)
    stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
    stream.time_base = stream.codec_context.time_base = video.time_base  # keep the exact frame times
    stream.options = {"crf": "18", "preset": "veryfast"}
    return stream


def _write_video(source, video, out, stream, copy: bool, shift: int, audio: deque[av.Packet]) -> None:
    """Copy the packets of `video` (timestamps moved back by `shift`) or re-encode them with H.264, muxing the
    audio packets in between in time order (interleaved, so that the file plays while it loads)."""

    def mux(packets: list[av.Packet]) -> None:
        for packet in packets:
            at = None if packet.dts is None else packet.dts * packet.time_base
            while audio and at is not None and audio[0].dts * audio[0].time_base <= at:
                out.mux(audio.popleft())
            out.mux(packet)

    if copy:
        # DivX/Xvid AVIs may pack B-frames into one packet, which MP4 cannot hold: unpack them (no-op otherwise)
        unpack = BitStreamFilterContext("mpeg4_unpack_bframes", video) if video.codec_context.name == "mpeg4" else None
        for packet in source.demux(video):
            if packet.dts is None and packet.pts is None:
                continue  # the demuxer's flush packet
            for part in unpack.filter(packet) if unpack else [packet]:
                part.pts = None if part.pts is None else part.pts - shift
                part.dts = None if part.dts is None else part.dts - shift
                part.stream = stream
                mux([part])
    else:
        for frame in source.decode(video):
            frame.pts -= shift
            frame.pict_type = av.video.frame.PictureType.NONE
            mux(stream.encode(frame))
        mux(stream.encode(None))
    out.mux(list(audio))


def _encode_audio(stream, samples: np.ndarray, first: int) -> deque[av.Packet]:
    rate, layout = stream.codec_context.sample_rate, stream.codec_context.layout.name
    packets = []
    for i in range(0, samples.shape[1], AAC_FRAME):
        chunk = np.ascontiguousarray(samples[:, i : i + AAC_FRAME])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, first + i, Fraction(1, rate)
        packets += stream.encode(frame)
    return deque(packets + stream.encode(None))


def _shifted_audio(src: str, shift_s: float) -> tuple[float, np.ndarray, int, str]:
    """The audio's start time, its samples (channels, n) as float32 shifted by shift_s (>0: later) and cut or
    padded back to their length, the sample rate and the channel layout for the AAC encoder."""
    chunks, start = [], None
    with open_container(src) as source:
        audio = source.streams.audio[0]
        rate = audio.codec_context.sample_rate if audio.codec_context.sample_rate in AAC_RATES else 48000
        layout = "mono" if audio.codec_context.channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        for frame in source.decode(audio):
            if start is None and frame.time is not None:
                start = frame.time
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        raise MediaError("no decodable audio to shift")
    samples = np.concatenate(chunks, axis=1)
    shift = int(round(shift_s * rate))
    length = samples.shape[1]
    if shift >= 0:
        samples = np.concatenate([np.zeros((samples.shape[0], shift), np.float32), samples], axis=1)[:, :length]
    else:
        tail = np.zeros((samples.shape[0], min(-shift, length)), np.float32)
        samples = np.concatenate([samples[:, -shift:], tail], axis=1)
    return start or 0.0, np.ascontiguousarray(samples, dtype=np.float32), rate, layout
