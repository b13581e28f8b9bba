"""Decode a video file into 25 fps RGB frames and 16 kHz mono audio, aligned as a player shows them.

Everything happens in process with PyAV: no ffmpeg binary, no temporary files. Video frames are resampled to
25 fps by their presentation timestamps (variable frame rate works), audio is resampled with libswresample
(`AudioResampler`, the same code as ffmpeg's `-ar 16000 -ac 1`). The result covers only the time where both
streams overlap, so video frame i always belongs with audio samples 640*i .. 640*(i+1).
"""

from __future__ import annotations

import logging
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from syncnet.constants import FPS, MIN_TRACK_S, SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.errors import MediaError

log = logging.getLogger(__name__)

__all__ = ["FPS", "SAMPLE_RATE", "SAMPLES_PER_FRAME", "MediaError", "Media", "MediaInfo", "load_media", "probe_media"]

MIN_DURATION_S = MIN_TRACK_S  # shortest overlap of audio and video we accept
MAX_DURATION_S = 60.0  # default limit on the length of a file
MAX_BYTES = 200 * 2**20  # default limit on the size of a file
MAX_SIDE = 1280  # frames larger than this (longest side) are scaled down while decoding
# Demuxers we open. Never hls, concat, image2 and the like: a file can be a playlist that makes ffmpeg read other
# local files or URLs (an upload named .m3u8, or "ffconcat version 1.0" named .mp4).
FORMAT_WHITELIST = "mov,matroska,avi,mpegts,mpeg,flv,ogg,asf,mxf,wav,mp3,aac,flac"

Source = str | os.PathLike | BinaryIO  # a path, or a seekable binary file object (e.g. io.BytesIO)


@dataclass
class MediaInfo:
    """What the container says, read before decoding anything."""

    path: str
    container: str
    size_bytes: int
    duration_s: float | None  # None when the container does not say (e.g. browser-recorded WebM)
    video_codec: str
    width: int
    height: int
    fps: float | None  # average frame rate claimed by the container
    rotation: int  # degrees from the display matrix (phones), applied while decoding
    audio_codec: str
    sample_rate: int
    channels: int


@dataclass
class Media:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB, C-contiguous, 25 fps
    audio: np.ndarray  # float32 (T * 640,) 16 kHz mono in [-1, 1]; frame i <-> audio[640*i : 640*(i+1)]
    duration_s: float  # T / 25
    source: str  # the path decoded
    start_s: float  # time of frame 0 on the source's presentation timeline
    info: MediaInfo  # original container, codecs, size, frame rate, audio rate

    @property
    def num_frames(self) -> int:
        return len(self.frames)


def probe_media(path: Source, *, max_bytes: int = MAX_BYTES, format: str | None = None) -> MediaInfo:
    """Read the container's header: format, streams and codecs. Raises MediaError for unusable files.

    `path` may also be a seekable binary file object; `format` forces a demuxer (e.g. "mpegts").
    """
    if hasattr(path, "read"):
        size = path.seek(0, os.SEEK_END)
        path.seek(0)
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise MediaError(f"no such file: {path}")
        size = os.path.getsize(path)
    if size == 0:
        raise MediaError(f"empty file: {_name(path)}")
    if size > max_bytes:
        raise MediaError(f"file too large: {size / 2**20:.1f} MB (limit {max_bytes / 2**20:.0f} MB)")
    try:
        with open_container(path, format) as container:
            return _info(_name(path) if hasattr(path, "read") else path, size, container)
    except av.error.FFmpegError as e:
        raise MediaError(f"unreadable or corrupt media file {_name(path)}: {e.strerror or e}") from e


def load_media(
    path: Source,
    *,
    format: str | None = None,
    max_duration_s: float = MAX_DURATION_S,
    max_bytes: int = MAX_BYTES,
    max_side: int | None = MAX_SIDE,
) -> Media:
    """Decode `path` to 25 fps RGB frames and 16 kHz mono float32 audio over the span where both exist.

    Frames whose longest side exceeds `max_side` are scaled down (aspect kept); None keeps the source size.
    """
    info = probe_media(path, max_bytes=max_bytes, format=format)
    name = os.path.basename(info.path)
    if info.duration_s is not None and info.duration_s > max_duration_s + 0.5:
        raise MediaError(f"video too long: {info.duration_s:.1f} s (limit {max_duration_s:.0f} s)")
    out_w, out_h = _output_size(info, max_side)
    try:
        decoded = _decode(path, format, info, out_w, out_h, max_duration_s)
    except av.error.FFmpegError as e:
        raise MediaError(f"corrupt media file {name}: {e.strerror or e}") from e
    video_start, video_end, frames, audio_start, audio, rotation = decoded
    info = dataclasses.replace(info, rotation=rotation)
    if not len(frames):
        raise MediaError(f"no decodable video frames in {name}")
    if audio is None or len(audio) == 0:
        raise MediaError(f"no decodable audio in {name}")

    audio_end = audio_start + len(audio) / SAMPLE_RATE
    first = max(0, math.ceil((audio_start - video_start) * FPS - 1e-6))  # first 25 fps slot with audio
    start_s = video_start + first / FPS
    count = int(math.floor((min(video_end, audio_end) - start_s) * FPS + 1e-6))
    overlap = count / FPS
    if count < MIN_DURATION_S * FPS:
        raise MediaError(
            f"too short: {max(overlap, 0.0):.2f} s of overlapping audio and video"
            f" (need at least {MIN_DURATION_S:.0f} s)"
        )
    frames = frames[first : first + count]
    skip = int(round((start_s - audio_start) * SAMPLE_RATE))
    audio = audio[skip : skip + count * SAMPLES_PER_FRAME]
    audio = np.pad(audio, (0, count * SAMPLES_PER_FRAME - len(audio)))  # a few samples of rounding at most
    log.debug("%s: %d frames from %.3f s (video %.3f s, audio %.3f s)", name, count, start_s, video_start, audio_start)
    return Media(
        frames=np.ascontiguousarray(frames),
        audio=np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32),
        duration_s=overlap,
        source=info.path,
        start_s=start_s,
        info=info,
    )


def _info(path: str, size: int, container: av.container.InputContainer) -> MediaInfo:
    name = os.path.basename(path)
    video = video_stream(container)
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise MediaError(f"not a video file: {name} has no audio or video stream")
    if video is None:
        cover = " with cover art" if container.streams.video else ""
        raise MediaError(f"no video stream in {name} (audio only{cover})")
    if audio is None:
        raise MediaError(f"no audio stream in {name}: SyncNet needs the soundtrack")
    if video.codec_context.width <= 0 or video.codec_context.height <= 0:
        raise MediaError(f"unreadable video stream in {name}: unknown frame size")
    rate = video.average_rate or video.guessed_rate
    return MediaInfo(
        path=path,
        container=container.format.name,
        size_bytes=size,
        duration_s=container.duration / av.time_base if container.duration else None,
        video_codec=video.codec_context.name,
        width=video.codec_context.width,
        height=video.codec_context.height,
        fps=float(rate) if rate else None,
        rotation=0,
        audio_codec=audio.codec_context.name,
        sample_rate=audio.codec_context.sample_rate or 0,
        channels=audio.codec_context.channels or 0,
    )


def _output_size(info: MediaInfo, max_side: int | None) -> tuple[int, int]:
    scale = 1.0 if max_side is None else min(1.0, max_side / max(info.width, info.height))
    return 2 * round(info.width * scale / 2), 2 * round(info.height * scale / 2)


class _FrameGrid:
    """Frames on the 25 fps grid anchored at the first frame, written into one preallocated array.

    Slot n (time start + n/25) shows the last frame whose timestamp is at most half a slot later, as ffmpeg's fps
    filter does; a frame is converted to RGB once, however many slots it fills.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.buffer: np.ndarray | None = None
        self.count = 0
        self.start: float | None = None
        self.prev: np.ndarray | None = None

    def add(self, time: float, image: np.ndarray) -> None:
        if self.start is None:
            self.start = time
            self.buffer = np.empty((self.capacity, *image.shape), np.uint8)  # pages are touched only when written
        else:
            self.fill_until(time)
        self.prev = image

    def fill_until(self, time: float) -> None:
        while self.start + self.count / FPS + 0.5 / FPS < time:
            if self.count == len(self.buffer):
                self.buffer = np.concatenate([self.buffer, np.empty_like(self.buffer)])
            self.buffer[self.count] = self.prev
            self.count += 1


def _decode(source: Source, format: str | None, info: MediaInfo, out_w: int, out_h: int, max_duration_s: float):
    """One pass over the file: video frames on the 25 fps grid, and all audio samples at 16 kHz mono.

    Returns (video_start, video_end, frames, audio_start, audio, rotation).
    """
    duration = min(info.duration_s or max_duration_s, max_duration_s) + 1.0
    grid = _FrameGrid(capacity=int(duration * FPS) + 2)
    chunks: list[np.ndarray] = []
    audio_start = prev_time = None
    rotation = 0
    last_duration = 1.0 / (info.fps or FPS)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    with open_container(source, format) as container:
        video, audio = video_stream(container), container.streams.audio[0]
        video.thread_type = "AUTO"
        for packet in container.demux(video, audio):
            for frame in _decode_packet(packet):
                if frame.time is None:
                    continue
                if packet.stream is audio:
                    audio_start = frame.time if audio_start is None else audio_start
                    chunks.extend(f.to_ndarray()[0] for f in resampler.resample(frame))
                    continue
                if prev_time is not None:
                    if frame.time <= prev_time:
                        continue  # duplicate or out-of-order timestamp
                    last_duration = frame.time - prev_time
                    if frame.time - grid.start > max_duration_s + 0.5:
                        raise MediaError(f"video too long: over {max_duration_s:.0f} s (limit {max_duration_s:.0f} s)")
                rotation = frame.rotation % 360
                grid.add(frame.time, _to_rgb(frame, out_w, out_h, rotation))
                prev_time = frame.time
                if frame.duration:
                    last_duration = float(frame.duration * frame.time_base)
        chunks.extend(f.to_ndarray()[0] for f in resampler.resample(None))
    if prev_time is None:
        return 0.0, 0.0, np.empty((0, out_h, out_w, 3), np.uint8), audio_start, None, 0
    video_end = prev_time + last_duration
    grid.fill_until(video_end + 0.5 / FPS - 1e-9)
    samples = np.concatenate(chunks) if chunks else None
    return grid.start, video_end, grid.buffer[: grid.count], audio_start, samples, rotation


def video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The first real video stream: cover art (an attached picture) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def open_container(source: Source, format: str | None = None) -> av.container.InputContainer:
    """Open with only the whitelisted demuxers; a path may only lead to local files, never to a URL."""
    options = {"format_whitelist": FORMAT_WHITELIST}
    if hasattr(source, "read"):
        source.seek(0)
    else:
        options["protocol_whitelist"] = "file"
    return av.open(source, format=format, metadata_errors="ignore", container_options=options)


def _name(source: Source) -> str:
    if hasattr(source, "read"):
        return os.path.basename(getattr(source, "name", "<memory>"))
    return os.path.basename(source)


def _decode_packet(packet: av.Packet) -> list[av.frame.Frame]:
    """Decode one packet; a damaged packet inside an otherwise good file is skipped, not fatal."""
    try:
        return packet.decode()
    except av.error.InvalidDataError:
        log.warning("skipping a damaged %s packet at %s", packet.stream.type, packet.pts)
        return []


def _to_rgb(frame: av.VideoFrame, out_w: int, out_h: int, rotation: int) -> np.ndarray:
    """RGB view of the frame, scaled and turned upright (a view on libswscale's buffer: no extra copy)."""
    rgb = frame.reformat(width=out_w, height=out_h, format="rgb24", interpolation="AREA")
    plane = rgb.planes[0]
    image = np.frombuffer(plane, np.uint8).reshape(out_h, plane.line_size)[:, : out_w * 3].reshape(out_h, out_w, 3)
    return np.rot90(image, k=rotation // 90) if rotation else image  # display matrix angle is counter-clockwise
