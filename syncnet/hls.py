"""Read an HLS stream, finished or live, and decode it window by window in memory.

The playlist and every segment are fetched here, through `netguard` (http(s) only, every URL and redirect
checked, size and time limits); ffmpeg never opens a URL or a local file: segment bytes are concatenated in
memory and decoded with a forced demuxer (MPEG-TS, or fragmented MP4 after its `#EXT-X-MAP` header). A master
playlist is resolved to one variant. A playlist with `#EXT-X-ENDLIST` is read to its end; a live one is
re-polled at its target duration and followed until `max_seconds` of stream, a `stop` event, or a limit.

    for window in stream_windows(url, window_s=8.0, max_seconds=60):
        window.t_start, window.t_end, window.media  # seconds from the first segment read, a media.Media
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from . import netguard
from .constants import DEFAULT_WINDOW_S
from .errors import HlsError, MediaError
from .media import Media, load_media

log = logging.getLogger(__name__)

MIN_WINDOW_S = 2.0  # a shorter leftover at the end of a stream is not analysed
LIVE_START_SEGMENTS = 3  # a live stream is joined this many segments before its end (RFC 8216, 6.3.3)
MAX_SIDE = 640  # frames are scaled down to this longest side while decoding (faces need no more)
PREFERRED_HEIGHT = 360  # the smallest variant at least this tall is chosen from a master playlist
MAX_SEGMENT_S = 60.0  # longest #EXTINF accepted
MAX_TARGET_DURATION_S = 60
STALL_TARGETS = 3  # by default a live playlist without a new segment for 3 target durations + 5 s has stalled
ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^",]*)')


@dataclass(frozen=True)
class HlsLimits:
    max_playlist_bytes: int = 2**20
    max_segment_bytes: int = 50 * 2**20
    max_window_bytes: int = 200 * 2**20  # the segments of one window, held in memory together
    max_total_bytes: int = 2 * 2**30
    max_segments: int = 10_000
    fetch_timeout_s: float = 30.0  # one playlist or segment, redirects included
    max_wait_s: float | None = None  # time spent reading the stream (not the caller's time); None: see below
    stall_s: float | None = None  # a live playlist without a new segment this long has stalled; None: see below


@dataclass
class StreamWindow:
    t_start: float  # seconds from the start of the first segment read
    t_end: float
    media: Media


@dataclass
class Segment:
    url: str
    duration: float
    sequence: int
    discontinuity: bool = False
    init_url: str | None = None  # #EXT-X-MAP (fragmented MP4)


@dataclass
class Playlist:
    target_duration: float = 0.0
    media_sequence: int = 0
    ended: bool = False
    segments: list[Segment] = field(default_factory=list)
    variants: list[tuple[dict[str, str], str]] = field(default_factory=list)  # (attributes, url) of a master
    audio_groups: dict[str, bool] = field(default_factory=dict)  # GROUP-ID -> has a separate URI


def parse_playlist(text: str, base_url: str) -> Playlist:
    """Parse a master or media playlist; URIs are resolved against `base_url`. Raises HlsError."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        raise HlsError("not an HLS playlist: it does not start with #EXTM3U")
    playlist = Playlist()
    duration: float | None = None
    stream_inf: dict[str, str] | None = None
    discontinuity = False
    init_url: str | None = None
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        tag, _, value = line.partition(":")
        try:
            if tag == "#EXT-X-TARGETDURATION":
                playlist.target_duration = float(value)
                if not 0 < playlist.target_duration <= MAX_TARGET_DURATION_S:
                    raise ValueError(f"target duration {value} s out of range")
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                playlist.media_sequence = int(value)
            elif tag == "#EXTINF":
                duration = float(value.split(",", 1)[0])
                if not (math.isfinite(duration) and 0 < duration <= MAX_SEGMENT_S):
                    raise ValueError(f"segment duration {duration} s out of range")
            elif tag == "#EXT-X-DISCONTINUITY":
                discontinuity = True
            elif tag == "#EXT-X-ENDLIST":
                playlist.ended = True
            elif tag == "#EXT-X-STREAM-INF":
                stream_inf = _attributes(value)
            elif tag == "#EXT-X-MEDIA":
                attrs = _attributes(value)
                if attrs.get("TYPE") == "AUDIO":
                    group = attrs.get("GROUP-ID", "")
                    playlist.audio_groups[group] = playlist.audio_groups.get(group, False) or "URI" in attrs
            elif tag == "#EXT-X-KEY":
                method = _attributes(value).get("METHOD", "")
                if method != "NONE":
                    raise HlsError(f"encrypted HLS streams (METHOD={method}) are not supported")
            elif tag == "#EXT-X-MAP":
                attrs = _attributes(value)
                if "BYTERANGE" in attrs or "URI" not in attrs:
                    raise HlsError("unsupported #EXT-X-MAP (byte ranges or no URI)")
                init_url = _resolve(base_url, attrs["URI"])
            elif tag in ("#EXT-X-BYTERANGE", "#EXT-X-I-FRAMES-ONLY"):
                raise HlsError(f"unsupported HLS feature {tag}")
            elif not line.startswith("#"):
                url = _resolve(base_url, line)
                if stream_inf is not None:
                    playlist.variants.append((stream_inf, url))
                    stream_inf = None
                elif duration is not None:
                    sequence = playlist.media_sequence + len(playlist.segments)
                    playlist.segments.append(Segment(url, duration, sequence, discontinuity, init_url))
                    duration, discontinuity = None, False
                else:
                    raise ValueError(f"URI without #EXTINF or #EXT-X-STREAM-INF: {line[:80]!r}")
        except HlsError:
            raise
        except ValueError as e:
            raise HlsError(f"malformed playlist at line {number}: {e}") from e
    if playlist.variants and playlist.segments:
        raise HlsError("malformed playlist: both variants and segments")
    if playlist.segments and not playlist.target_duration:
        raise HlsError("malformed playlist: no #EXT-X-TARGETDURATION")
    if not playlist.variants and not playlist.segments and playlist.ended:
        raise HlsError("the playlist has no segments")
    return playlist


def stream_windows(
    url: str,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    max_seconds: float | None = None,
    allow_private: bool = False,
    stop: threading.Event | None = None,
    limits: HlsLimits = HlsLimits(),
) -> Iterator[StreamWindow]:
    """Yield consecutive windows of about `window_s` seconds (whole segments) of the stream at `url`.

    Ends at #EXT-X-ENDLIST, after `max_seconds` of stream, or when `stop` is set. Raises HlsError for a refused
    URL (scheme, private address unless allowed), a failed fetch, a bad playlist, an undecodable window or a
    limit: time spent waiting for the stream is bounded by `limits.max_wait_s`, by default 2 * max_seconds +
    60 s when `max_seconds` is given (unbounded otherwise: a live stream is then followed until `stop`).
    """
    if not window_s >= MIN_WINDOW_S:
        raise HlsError(f"window too short: {window_s} s (at least {MIN_WINDOW_S:g} s)")
    max_wait = limits.max_wait_s
    if max_wait is None and max_seconds is not None:
        max_wait = 2 * max_seconds + 60
    reader = _Reader(url, allow_private, limits, stop, max_wait)
    try:
        yield from reader.windows(window_s, max_seconds)
    finally:
        reader.close()


class _Reader:
    """Fetches playlists and segments, follows a live playlist, and cuts decoded windows."""

    def __init__(self, url: str, allow_private: bool, limits: HlsLimits, stop, max_wait: float | None):
        self.url, self.limits, self.stop, self.max_wait = url, limits, stop, max_wait
        self.fetcher = netguard.Fetcher(allow_private=allow_private)
        self.total_bytes = 0
        self.segments_read = 0
        self.waited = 0.0  # seconds spent inside this reader (fetching, sleeping), not in the caller
        self.windows_yielded = 0
        self.init_cache: dict[str, bytes] = {}

    def close(self) -> None:
        self.fetcher.close()

    def windows(self, window_s: float, max_seconds: float | None) -> Iterator[StreamWindow]:
        playlist_url, playlist = self._media_playlist()
        pending: list[tuple[Segment, bytes]] = []
        t_cursor = t_window = 0.0  # end of the last segment read; start of the pending window
        next_sequence: int | None = None
        last_new = time.monotonic()

        def full() -> bool:
            return max_seconds is not None and t_cursor >= max_seconds

        while True:
            segments = playlist.segments
            if next_sequence is None:  # joining: all of a finished stream, the last few segments of a live one
                skip = 0 if playlist.ended else max(0, len(segments) - LIVE_START_SEGMENTS)
                next_sequence = segments[skip].sequence if segments else playlist.media_sequence
            elif segments and segments[0].sequence > next_sequence:
                missed = segments[0].sequence - next_sequence
                log.warning("fell behind the live stream: %d segments missed", missed)
                yield from self._emit(pending, t_window, t_cursor)
                t_cursor += missed * playlist.target_duration
                t_window, next_sequence = t_cursor, segments[0].sequence
            new = [s for s in segments if s.sequence >= next_sequence]
            if new:
                last_new = time.monotonic()
            for segment in new:
                if self._stopped() or full():
                    break
                if pending and (segment.discontinuity or segment.init_url != pending[0][0].init_url):
                    yield from self._emit(pending, t_window, t_cursor)  # timestamps restart: decode what we have
                    t_window = t_cursor
                pending.append((segment, self._segment(segment)))
                if sum(len(data) for _, data in pending) > self.limits.max_window_bytes:
                    raise HlsError(f"stream window too large: over {self.limits.max_window_bytes} bytes of segments")
                next_sequence = segment.sequence + 1
                t_cursor += segment.duration
                if t_cursor - t_window >= window_s - 1e-6:
                    yield from self._emit(pending, t_window, t_cursor)
                    t_window = t_cursor
                self._check_wait()
            if self._stopped():
                return
            if full() or (playlist.ended and not [s for s in segments if s.sequence >= next_sequence]):
                break
            stall = self.limits.stall_s or STALL_TARGETS * playlist.target_duration + 5
            if time.monotonic() - last_new > stall:
                raise HlsError(f"live stream stalled: no new segment for {stall:g} s")
            self._sleep(playlist.target_duration if new else playlist.target_duration / 2)
            self._check_wait()
            playlist = self._fetch_playlist(playlist_url)
            if playlist.variants:
                raise HlsError("the media playlist turned into a master playlist")
        yield from self._emit(pending, t_window, t_cursor)
        if not self.windows_yielded:
            raise HlsError(f"stream too short: {t_cursor:.1f} s read, need at least {MIN_WINDOW_S:g} s")
        log.info("HLS: %d windows, %d segments, %d bytes", self.windows_yielded, self.segments_read, self.total_bytes)

    def _media_playlist(self) -> tuple[str, Playlist]:
        playlist = self._fetch_playlist(self.url)
        url = self.url
        if playlist.variants:
            url = _choose_variant(playlist)
            log.info("HLS master playlist: variant %s", url)
            playlist = self._fetch_playlist(url)
            if playlist.variants:
                raise HlsError("nested master playlists are not supported")
        return url, playlist

    def _fetch_playlist(self, url: str) -> Playlist:
        response = self._fetch(url, self.limits.max_playlist_bytes, "playlist")
        try:
            text = response.content.decode("utf-8")
        except UnicodeDecodeError as e:
            raise HlsError(f"not an HLS playlist: {url} is not UTF-8 text") from e
        return parse_playlist(text, response.url)

    def _segment(self, segment: Segment) -> bytes:
        self.segments_read += 1
        if self.segments_read > self.limits.max_segments:
            raise HlsError(f"too many segments (limit {self.limits.max_segments})")
        data = self._get(segment.url, f"segment {segment.sequence}")
        if segment.init_url is None and not (len(data) >= 188 and data[0] == 0x47):
            raise HlsError(f"unsupported segment {segment.sequence}: not MPEG-TS (and no #EXT-X-MAP)")
        return data

    def _get(self, url: str, what: str) -> bytes:
        return self._fetch(url, self.limits.max_segment_bytes, what).content

    def _fetch(self, url: str, max_bytes: int, what: str) -> netguard.Response:
        start = time.monotonic()
        try:
            response = self.fetcher.get(url, max_bytes=max_bytes, timeout_s=self.limits.fetch_timeout_s)
        except netguard.NetGuardError as e:
            raise HlsError(f"{what}: {e}") from e
        finally:
            self.waited += time.monotonic() - start
        self._count_bytes(len(response.content))
        return response

    def _count_bytes(self, n: int) -> None:
        self.total_bytes += n
        if self.total_bytes > self.limits.max_total_bytes:
            raise HlsError(f"stream too large: over {self.limits.max_total_bytes} bytes read")

    def _emit(self, pending: list[tuple[Segment, bytes]], t_start: float, t_end: float) -> Iterator[StreamWindow]:
        """Decode the pending segments into one window and empty the list; nothing when too short to analyse."""
        if not pending:
            return
        segments, chunks = zip(*pending)
        pending.clear()
        if t_end - t_start < MIN_WINDOW_S:
            log.info("HLS: %.1f s at %.1f s, too short to analyse", t_end - t_start, t_start)
            return
        init = segments[0].init_url
        data = (self._init_section(init) if init else b"") + b"".join(chunks)
        try:
            media = load_media(io.BytesIO(data), format="mp4" if init else "mpegts", max_duration_s=t_end - t_start + 5,
                               max_bytes=len(data), max_side=MAX_SIDE)
        except MediaError as e:
            raise HlsError(f"stream window {t_start:.1f}-{t_end:.1f} s: {e}") from e
        self.windows_yielded += 1
        yield StreamWindow(t_start=t_start, t_end=t_end, media=media)

    def _init_section(self, url: str) -> bytes:
        if url not in self.init_cache:
            self.init_cache[url] = self._get(url, "#EXT-X-MAP")
        return self.init_cache[url]

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _sleep(self, seconds: float) -> None:
        start = time.monotonic()
        if self.stop is not None:
            self.stop.wait(seconds)
        else:
            time.sleep(seconds)
        self.waited += time.monotonic() - start

    def _check_wait(self) -> None:
        if self.max_wait is not None and self.waited > self.max_wait:
            raise HlsError(f"time limit: waited {self.waited:.0f} s for the stream (limit {self.max_wait:g} s)")


def _choose_variant(playlist: Playlist) -> str:
    """The smallest variant at least PREFERRED_HEIGHT tall (else the tallest), with muxed audio."""
    def height(attrs: dict[str, str]) -> int:
        resolution = attrs.get("RESOLUTION", "")
        return int(resolution.split("x")[1]) if re.fullmatch(r"\d+x\d+", resolution) else 0

    muxed = [(a, u) for a, u in playlist.variants if not playlist.audio_groups.get(a.get("AUDIO", ""), False)]
    if not muxed:
        raise HlsError("unsupported stream: audio only in a separate rendition (#EXT-X-MEDIA), none muxed with video")
    muxed.sort(key=lambda v: (height(v[0]), int(v[0].get("BANDWIDTH", "0") or 0)))
    tall = [v for v in muxed if height(v[0]) >= PREFERRED_HEIGHT]
    return (tall[0] if tall else muxed[-1])[1]


def _attributes(value: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in ATTRIBUTE.findall(value)}


def _resolve(base_url: str, uri: str) -> str:
    """Absolute URL of a playlist entry; only http(s) entries are accepted (never file: or other schemes)."""
    url = urljoin(base_url, uri.strip())
    scheme = urlsplit(url).scheme.lower()
    if scheme not in netguard.SCHEMES:
        raise HlsError(f"playlist entry refused: {uri[:100]!r} (only http and https URLs are followed)")
    return url

