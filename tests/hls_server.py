"""Test helper: HLS made from a real clip with ffmpeg, served over HTTP on 127.0.0.1 from a background thread.

    stream = make_hls(CLIPS / "syncnet_example.avi", tmp_path / "hls")
    with TestServer() as server:
        server.add_stream("/vod", stream)                  # finished: /vod/index.m3u8 with #EXT-X-ENDLIST
        server.add_live("/live/index.m3u8", stream, "/vod")  # grows by one segment per segment duration
        url = server.url("/vod/index.m3u8")

Routes are plain functions of the request handler, so tests can add hostile ones (redirects, slow or endless
bodies, playlists pointing anywhere). `server.requests` records every path asked for.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.media_tools import ffmpeg

Route = Callable[[http.server.BaseHTTPRequestHandler], None]
ENDLESS_LIMIT_BYTES = 2 * 2**30  # an "endless" body still stops somewhere
ENDLESS_LIMIT_S = 120.0


@dataclass
class HlsStream:
    """An HLS rendition on disk: MPEG-TS segments and their durations (from the playlist ffmpeg wrote)."""

    directory: Path
    segments: list[str]  # file names, in order
    durations: list[float]
    target_duration: int

    def playlist(self, prefix: str = "", *, first: int = 0, count: int | None = None, ended: bool = True,
                 sequence: int | None = None) -> str:
        """A media playlist over segments[first : first + count] (indices wrap around, with discontinuities)."""
        count = len(self.segments) - first if count is None else count
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{self.target_duration}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first if sequence is None else sequence}"]
        for i in range(first, first + count):
            k = i % len(self.segments)
            if k == 0 and i > 0:
                lines.append("#EXT-X-DISCONTINUITY")
            lines += [f"#EXTINF:{self.durations[k]:.6f},", f"{prefix}{self.segments[k]}"]
        if ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def make_hls(clip: Path, out_dir: Path, *, seconds: float | None = None, hls_time: int = 2,
             size: str = "160:120") -> HlsStream:
    """Encode `clip` (optionally its first `seconds`) to HLS with ffmpeg: H.264 + AAC in MPEG-TS segments."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["-i", str(clip)]
    if seconds is not None:
        cmd += ["-t", f"{seconds}"]
    cmd += ["-vf", f"scale={size}", "-r", "25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
            "-sc_threshold", "0", "-c:a", "aac", "-ar", "16000", "-ac", "1",
            "-f", "hls", "-hls_time", str(hls_time), "-hls_list_size", "0",
            "-hls_segment_filename", str(out_dir / "seg%03d.ts"), str(out_dir / "index.m3u8")]
    ffmpeg(*cmd)
    segments, durations, target = [], [], hls_time
    for line in (out_dir / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            durations.append(float(line.split(":", 1)[1].rstrip(",")))
        elif line and not line.startswith("#"):
            segments.append(line)
    return HlsStream(out_dir, segments, durations, target)


class TestServer:
    """A threaded HTTP server on 127.0.0.1 (free port) serving routes; use as a context manager."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                server.headers.append(dict(self.headers))
                route = server.routes.get(path)
                try:
                    if route is None:
                        send(self, b"not found\n", status=404, content_type="text/plain")
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> TestServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, route: Route) -> None:
        self.routes[path] = route

    def add_bytes(self, path: str, data: bytes | str, *, content_type: str = "application/octet-stream",
                  status: int = 200) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.routes[path] = lambda h: send(h, body, status=status, content_type=content_type)

    def add_stream(self, prefix: str, stream: HlsStream) -> None:
        """Serve a finished stream: `{prefix}/index.m3u8` and its segments under `{prefix}/`."""
        self.add_bytes(f"{prefix}/index.m3u8", stream.playlist(), content_type="application/vnd.apple.mpegurl")
        self.add_segments(prefix, stream)

    def add_segments(self, prefix: str, stream: HlsStream) -> None:
        for name in stream.segments:
            self.add_bytes(f"{prefix}/{name}", (stream.directory / name).read_bytes(), content_type="video/mp2t")

    def add_live(self, path: str, stream: HlsStream, segments_prefix: str, *, interval: float | None = None,
                 start: int = 2, window: int = 4, loop: bool = False) -> None:
        """A live playlist at `path`: `start` segments at first, one more every `interval` seconds (default:
        the target duration), the last `window` listed, no ENDLIST until the segments run out (never with
        `loop`, which starts over with a discontinuity). Segments must be served under `segments_prefix`."""
        interval = stream.target_duration if interval is None else interval
        t0 = time.monotonic()
        total = len(stream.segments)

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            available = start + int((time.monotonic() - t0) / interval)
            ended = not loop and available >= total
            available = available if loop else min(available, total)
            first = max(0, available - window)
            text = stream.playlist(f"{segments_prefix}/", first=first, count=available - first, ended=ended)
            send(h, text.encode(), content_type="application/vnd.apple.mpegurl")

        self.routes[path] = route

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route

    def add_slow(self, path: str, data: bytes, *, delay_s: float = 0.2, chunk: int = 1) -> None:
        """Serve `data` (with its full Content-Length) `chunk` bytes every `delay_s` seconds."""

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            for i in range(0, len(data), chunk):
                h.wfile.write(data[i : i + chunk])
                h.wfile.flush()
                time.sleep(delay_s)

        self.routes[path] = route

    def add_endless(self, path: str, *, declare_length: int | None = None) -> None:
        """An unbounded body (zero bytes, no Content-Length unless `declare_length`), until the client hangs up."""

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            if declare_length is not None:
                h.send_header("Content-Length", str(declare_length))
            h.send_header("Connection", "close")
            h.end_headers()
            block, sent, t0 = bytes(65536), 0, time.monotonic()
            while sent < ENDLESS_LIMIT_BYTES and time.monotonic() - t0 < ENDLESS_LIMIT_S:
                h.wfile.write(block)
                sent += len(block)
            h.close_connection = True

        self.routes[path] = route


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up early are what these tests are about


def send(h: http.server.BaseHTTPRequestHandler, body: bytes, *, status: int = 200,
         content_type: str = "application/octet-stream") -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)
