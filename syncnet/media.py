"""Decode a video file into 25 fps RGB frames and 16 kHz mono audio, aligned as a player shows them, chunk by chunk.

Everything happens in process with PyAV: no ffmpeg binary, no temporary files. Video frames are resampled to
25 fps by their presentation timestamps (variable frame rate works), audio is resampled with libswresample
(`AudioResampler`, the same code as ffmpeg's `-ar 16000 -ac 1`). The result covers only the time where both
streams overlap, so video frame i always belongs with audio samples 640*i .. 640*(i+1).

`open_media` decodes as the caller reads: it yields `MediaChunk`s of a few dozen frames and holds no more than
that (plus what the container interleaves ahead), so memory does not grow with the length of the file.
`load_media` gathers every chunk into one `Media` for short clips.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import numpy as np

from syncnet.constants import FPS, MIN_TRACK_S, SAMPLE_RATE, SAMPLES_PER_FRAME
from syncnet.errors import MediaError

log = logging.getLogger(__name__)

__all__ = [
    "FPS", "SAMPLE_RATE", "SAMPLES_PER_FRAME", "MediaError", "Media", "MediaChunk", "MediaInfo", "MediaStream",
    "load_media", "media_chunks", "open_media", "probe_media",
]

MIN_DURATION_S = MIN_TRACK_S  # shortest overlap of audio and video we accept
MAX_DURATION_S = 4 * 3600.0  # default limit on the length of a file (the app sets its own)
MAX_BYTES = 16 * 2**30  # default limit on the size of a file (the app sets its own)
MAX_SIDE = 1280  # frames larger than this (longest side) are scaled down while decoding
CHUNK_FRAMES = 25  # frames per chunk (1 s): what the decoder hands on at a time
MAX_LEAD_S = 10.0  # video decoded this far ahead of any audio (or audio of video) means the file is not interleaved
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


@dataclass
class MediaChunk:
    """Consecutive 25 fps frames and their sound: frame ``start + k`` <-> ``audio[640*k : 640*(k+1)]``."""

    start: int  # index of the first frame on the file's 25 fps timeline
    frames: list[np.ndarray]  # uint8 (H, W, 3) RGB each; a source frame shown in several slots is one array
    audio: np.ndarray  # float32 (len(frames) * 640,) 16 kHz mono in [-1, 1]

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)


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


@dataclass
class MediaStream:
    """A file being decoded: its header now, its chunks as they are read, its length once they are all read."""

    info: MediaInfo
    chunks: Iterator[MediaChunk] = field(repr=False)
    num_frames: int = 0  # frames yielded so far (all of them once the chunks are exhausted)
    start_s: float = 0.0  # time of frame 0 on the source's presentation timeline, known with the first chunk

    @property
    def duration_s(self) -> float:
        return self.num_frames / FPS

    def __iter__(self) -> Iterator[MediaChunk]:
        for chunk in self.chunks:
            self.num_frames = chunk.stop
            yield chunk

    def close(self) -> None:
        self.chunks.close()


def open_media(
    path: Source,
    *,
    format: str | None = None,
    max_duration_s: float = MAX_DURATION_S,
    max_bytes: int = MAX_BYTES,
    max_side: int | None = MAX_SIDE,
    chunk_frames: int = CHUNK_FRAMES,
) -> MediaStream:
    """Check `path` (size, header, declared duration) now; decode it chunk by chunk as the stream is iterated.

    Frames whose longest side exceeds `max_side` are scaled down (aspect kept); None keeps the source size.
    A file too short to use raises MediaError before the first chunk (chunks hold at least 1 s).
    """
    info = probe_media(path, max_bytes=max_bytes, format=format)
    if info.duration_s is not None and info.duration_s > max_duration_s + 0.5:
        raise MediaError(f"video too long: {info.duration_s:.1f} s (limit {max_duration_s:.0f} s)")
    stream = MediaStream(info=info, chunks=iter(()))
    stream.chunks = _decode(path, format, stream, _output_size(info, max_side), max_duration_s,
                            max(chunk_frames, math.ceil(MIN_DURATION_S * FPS)))
    return stream


def load_media(
    path: Source,
    *,
    format: str | None = None,
    max_duration_s: float = MAX_DURATION_S,
    max_bytes: int = MAX_BYTES,
    max_side: int | None = MAX_SIDE,
) -> Media:
    """Decode the whole of `path` into one `Media` (for short clips: the frames are all kept)."""
    stream = open_media(path, format=format, max_duration_s=max_duration_s, max_bytes=max_bytes, max_side=max_side)
    frames, audio = [], []
    for chunk in stream:
        frames += chunk.frames
        audio.append(chunk.audio)
    return Media(
        frames=np.stack(frames),
        audio=np.concatenate(audio),
        duration_s=stream.duration_s,
        source=stream.info.path,
        start_s=stream.start_s,
        info=stream.info,
    )


def media_chunks(media: Media, chunk_frames: int = CHUNK_FRAMES) -> Iterator[MediaChunk]:
    """A decoded `Media` as chunks (views, no copies), for the same code path as a file being decoded."""
    for start in range(0, media.num_frames, chunk_frames):
        stop = min(start + chunk_frames, media.num_frames)
        yield MediaChunk(start, list(media.frames[start:stop]),
                         media.audio[start * SAMPLES_PER_FRAME : stop * SAMPLES_PER_FRAME])


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


class _Aligner:
    """Pairs video frames on the 25 fps grid with their 640 audio samples, and hands on what is certain.

    Grid slot n (time video_start + n/25) shows the last frame whose timestamp is at most half a slot later, as
    ffmpeg's fps filter does. Output frame i is slot ``first + i``, where ``first`` is the first slot with sound;
    it is handed on once the video has reached the end of its slot and the audio has all its samples, so it is
    certainly inside the overlap of the two streams, whose end is only known at the end of the file.
    """

    def __init__(self, name: str, max_duration_s: float):
        self.name = name
        self.max_duration_s = max_duration_s
        self.video_start: float | None = None
        self.video_time = -math.inf  # timestamp of the latest video frame
        self.last_duration = 1.0 / FPS
        self.slots: list[np.ndarray] = []  # slots not yet handed on, from slot self.base
        self.base = 0  # grid slot of self.slots[0]
        self.prev: np.ndarray | None = None
        self.audio_start: float | None = None
        self.audio: list[np.ndarray] = []  # samples not yet handed on
        self.audio_pending = 0  # their number
        self.audio_received = 0  # samples since audio_start
        self.first: int | None = None  # first grid slot with sound
        self.skip = 0  # audio samples before the start of output frame 0
        self.skip_left = 0  # of those, the ones not yet dropped
        self.emitted = 0  # output frames handed on

    def add_video(self, time: float, image: np.ndarray, duration: float | None) -> None:
        if self.video_start is None:
            self.video_start = time
        elif time <= self.video_time:
            return  # duplicate or out-of-order timestamp
        else:
            self.last_duration = time - self.video_time
            if time - self.video_start > self.max_duration_s + 0.5:
                limit = f"{self.max_duration_s:.0f} s"
                raise MediaError(f"video too long: over {limit} (limit {limit})")
            self._fill_until(time)
        if duration:
            self.last_duration = duration
        self.prev, self.video_time = image, time
        self._check_lead()

    def add_audio(self, time: float, samples: np.ndarray) -> None:
        if self.audio_start is None:
            self.audio_start = time
        self.audio.append(samples)
        self.audio_pending += len(samples)
        self.audio_received += len(samples)
        self._check_lead()

    def _fill_until(self, time: float) -> None:
        while self.video_start + (self.base + len(self.slots)) / FPS + 0.5 / FPS < time:
            self.slots.append(self.prev)

    def _anchor(self) -> bool:
        """Fix frame 0 once both streams have started; drop the video slots and samples before it."""
        if self.first is None and self.video_start is not None and self.audio_start is not None:
            self.first = max(0, math.ceil((self.audio_start - self.video_start) * FPS - 1e-6))
            self.skip = self.skip_left = max(0, int(round((self.start_s - self.audio_start) * SAMPLE_RATE)))
        if self.first is None:
            return False
        if self.base < self.first:
            self._drop_slots(min(self.first - self.base, len(self.slots)))
        if self.skip_left and self.audio_pending:
            dropped = min(self.skip_left, self.audio_pending)
            self._drop_samples(dropped)
            self.skip_left -= dropped
        return True

    @property
    def start_s(self) -> float:
        return self.video_start + self.first / FPS

    def ready(self) -> int:
        """Output frames that certainly lie inside the overlap and can be handed on now."""
        if not self._anchor():
            return 0
        by_video = math.floor((self.video_time - self.start_s) * FPS + 1e-6)
        by_audio = (self.audio_received - self.skip - 1) // SAMPLES_PER_FRAME
        return max(0, min(by_video, by_audio, self.base + len(self.slots) - self.first) - self.emitted)

    def take(self, count: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The next `count` output frames and their samples (zero-padded at the very end, a few samples at most)."""
        frames = self.slots[:count]
        self._drop_slots(count)
        wanted = count * SAMPLES_PER_FRAME
        samples = np.concatenate(self.audio) if len(self.audio) != 1 else self.audio[0]
        audio, rest = samples[:wanted], samples[wanted:]
        self.audio, self.audio_pending = [rest], len(rest)
        if len(audio) < wanted:
            audio = np.pad(audio, (0, wanted - len(audio)))
        self.emitted += count
        return frames, np.clip(audio, -1.0, 1.0)

    def finish(self) -> int:
        """Output frames left once the file has ended: up to the end of the shorter stream."""
        if self.video_start is None:
            raise MediaError(f"no decodable video frames in {self.name}")
        if self.audio_start is None or self.audio_received == 0:
            raise MediaError(f"no decodable audio in {self.name}")
        video_end = self.video_time + self.last_duration
        self._fill_until(video_end + 0.5 / FPS - 1e-9)
        self._anchor()
        audio_end = self.audio_start + self.audio_received / SAMPLE_RATE
        count = int(math.floor((min(video_end, audio_end) - self.start_s) * FPS + 1e-6))
        if count < MIN_DURATION_S * FPS:
            raise MediaError(
                f"too short: {max(count / FPS, 0.0):.2f} s of overlapping audio and video"
                f" (need at least {MIN_DURATION_S:.0f} s)"
            )
        return max(0, min(count, self.base + len(self.slots) - self.first) - self.emitted)

    def _drop_slots(self, count: int) -> None:
        del self.slots[:count]
        self.base += count

    def _drop_samples(self, count: int) -> None:
        samples = np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)
        self.audio = [samples[count:]]
        self.audio_pending = len(self.audio[0])

    def _check_lead(self) -> None:
        """Refuse files whose streams are stored far apart: holding one stream until the other comes costs memory."""
        if len(self.slots) > MAX_LEAD_S * FPS or self.audio_pending > 60 * MAX_LEAD_S * SAMPLE_RATE:
            raise MediaError(f"cannot decode {self.name}: its audio and video are stored too far apart in the file")


def _decode(source: Source, format: str | None, stream: MediaStream, size: tuple[int, int], max_duration_s: float,
            chunk_frames: int) -> Iterator[MediaChunk]:
    """One pass over the file, yielding aligned chunks of `chunk_frames` frames (the last one shorter)."""
    info = stream.info
    name = os.path.basename(info.path)
    aligner = _Aligner(name, max_duration_s)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    try:
        with open_container(source, format) as container:
            video, audio = video_stream(container), container.streams.audio[0]
            video.thread_type = "AUTO"
            for packet in container.demux(video, audio):
                for frame in _decode_packet(packet):
                    if frame.time is None:
                        continue
                    if packet.stream is audio:
                        for f in resampler.resample(frame):
                            aligner.add_audio(frame.time, f.to_ndarray()[0])
                        continue
                    rotation = frame.rotation % 360
                    if rotation != stream.info.rotation:
                        stream.info = dataclasses.replace(stream.info, rotation=rotation)
                    duration = float(frame.duration * frame.time_base) if frame.duration else None
                    aligner.add_video(frame.time, _to_rgb(frame, *size, rotation), duration)
                while aligner.ready() >= chunk_frames:
                    yield _chunk(aligner, stream, chunk_frames)
            for f in resampler.resample(None):
                aligner.add_audio(0.0, f.to_ndarray()[0])
    except av.error.FFmpegError as e:
        raise MediaError(f"corrupt media file {name}: {e.strerror or e}") from e
    left = aligner.finish()
    while left > 0:
        yield _chunk(aligner, stream, min(left, chunk_frames))
        left -= min(left, chunk_frames)


def _chunk(aligner: _Aligner, stream: MediaStream, count: int) -> MediaChunk:
    start = aligner.emitted
    if start == 0:
        stream.start_s = aligner.start_s
        log.debug("%s: frame 0 at %.3f s (video %.3f s, audio %.3f s)", stream.info.path, aligner.start_s,
                  aligner.video_start, aligner.audio_start)
    frames, audio = aligner.take(count)
    return MediaChunk(start, frames, audio)


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
