"""HLS reading: finished and live streams from a real clip over local HTTP, and hostile streams and servers."""

import ipaddress
import threading
import time

import numpy as np
import pytest

from syncnet import netguard
from syncnet.hls import HlsError, HlsLimits, parse_playlist, stream_windows
from syncnet.media import SAMPLES_PER_FRAME, load_media
from tests.hls_server import TestServer, make_hls
from tests.paths import CLIPS

CLIP = CLIPS / "syncnet_example.avi"  # 12.7 s: 6 segments of 2 s and one of 0.68 s
BOUND_S = 15.0  # every hostile case must end within this


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    return make_hls(CLIP, tmp_path_factory.mktemp("hls"))


@pytest.fixture
def server(stream, monkeypatch):
    monkeypatch.delenv(netguard.ALLOW_PRIVATE_ENV, raising=False)
    with TestServer() as s:
        s.add_stream("/vod", stream)
        yield s


def read_all(url, **kwargs):
    kwargs.setdefault("allow_private", True)
    return list(stream_windows(url, **kwargs))


def refused(url, match, **kwargs):
    """Assert that reading `url` ends with HlsError matching `match` within BOUND_S seconds."""
    t0 = time.monotonic()
    with pytest.raises(HlsError, match=match):
        read_all(url, **kwargs)
    assert time.monotonic() - t0 < BOUND_S


def best_position(reference: np.ndarray, signal: np.ndarray, around: int, search: int = 4) -> int:
    """Index of `reference` where `signal` fits best (highest correlation), within `around` +- `search`."""
    scores = {}
    for p in range(max(0, around - search), min(len(reference) - len(signal), around + search) + 1):
        scores[p] = np.corrcoef(reference[p : p + len(signal)], signal)[0, 1]
    return max(scores, key=scores.get)


def motion(frames: np.ndarray) -> np.ndarray:
    """Mean absolute change of a coarse (4x4 blocks) picture from frame to frame."""
    t, h, w, _ = frames.shape
    cropped = frames[:, : h // 4 * 4, : w // 4 * 4].astype(np.float32)
    coarse = cropped.reshape(t, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4, 5))
    return np.abs(np.diff(coarse, axis=0)).mean(axis=(1, 2))


def energy(audio: np.ndarray) -> np.ndarray:
    """RMS per video frame (640 samples)."""
    return np.sqrt((audio[: len(audio) // 640 * 640].reshape(-1, 640) ** 2).mean(axis=1))


@pytest.mark.slow
def test_finished_stream_gives_aligned_windows(server, stream):
    windows = read_all(server.url("/vod/index.m3u8"), window_s=4.0)
    assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]  # 0.68 s left over
    reference = load_media(CLIP)
    for w in windows:
        m = w.media
        assert m.frames.dtype == np.uint8 and m.frames.ndim == 4 and m.frames.flags.c_contiguous
        assert m.frames.shape[1:] == (120, 160, 3)
        assert m.audio.dtype == np.float32 and len(m.audio) == len(m.frames) * SAMPLES_PER_FRAME
        assert abs(m.duration_s - 4.0) <= 0.08
        # Offsets-ready: the window's picture and sound come from the same place of the original, within a frame.
        first = round(w.t_start * 25)
        video_at = best_position(motion(reference.frames), motion(m.frames), first)
        audio_at = best_position(energy(reference.audio), energy(m.audio), first)
        assert abs(video_at - first) <= 2 and abs(video_at - audio_at) <= 1, (w.t_start, video_at, audio_at)


def test_master_playlist_picks_a_variant(server, stream):
    server.add_bytes("/master.m3u8", (
        "#EXTM3U\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"\n'
        "big/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=160x120\n'
        "/small/index.m3u8\n"
        '#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n'
        "vod/index.m3u8\n"))
    windows = read_all(server.url("/master.m3u8"), window_s=8.0)
    assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 8.0), (8.0, 12.68)]
    assert "/vod/index.m3u8" in server.requests and "/big/index.m3u8" not in server.requests


@pytest.mark.slow
def test_live_playlist_followed_until_it_ends(server, stream):
    server.add_live("/live.m3u8", stream, "/vod", interval=1.0)  # a new segment every second
    t0 = time.monotonic()
    arrivals, windows = [], []
    for w in stream_windows(server.url("/live.m3u8"), window_s=4.0, allow_private=True):
        arrivals.append(time.monotonic() - t0)
        windows.append(w)
    assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert server.requests.count("/live.m3u8") >= 3  # re-polled as it grew
    assert arrivals[-1] - arrivals[0] > 2.0  # windows came as the stream grew, not all at once
    assert all(abs(w.media.duration_s - 4.0) <= 0.08 for w in windows)


@pytest.mark.slow
def test_endless_live_stream_stopped_by_max_seconds_and_by_stop(server, stream):
    server.add_live("/loop.m3u8", stream, "/vod", interval=0.5, loop=True)  # never ends, no ENDLIST
    t0 = time.monotonic()
    windows = read_all(server.url("/loop.m3u8"), window_s=4.0, max_seconds=8.0)
    assert [(w.t_start, w.t_end) for w in windows] == [(0.0, 4.0), (4.0, 8.0)]
    assert time.monotonic() - t0 < BOUND_S

    stop = threading.Event()
    t0 = time.monotonic()
    count = 0
    for _ in stream_windows(server.url("/loop.m3u8"), window_s=2.0, allow_private=True, stop=stop):
        count += 1
        if count == 2:
            stop.set()
    assert count == 2 and time.monotonic() - t0 < BOUND_S


@pytest.mark.slow
def test_stalled_live_playlist(server, stream):
    server.add_bytes("/stalled.m3u8", stream.playlist("/vod/", count=2, ended=False))  # never grows
    refused(server.url("/stalled.m3u8"), r"live stream stalled: no new segment for 3 s", limits=HlsLimits(stall_s=3))


@pytest.mark.slow
def test_time_limit_on_waiting(server, stream):
    server.add_live("/slowlive.m3u8", stream, "/vod", interval=30.0, start=1, loop=True)
    refused(server.url("/slowlive.m3u8"), r"time limit: waited \d+ s for the stream \(limit 3 s\)",
            limits=HlsLimits(max_wait_s=3))


@pytest.mark.slow
def test_slow_segment_stopped_by_fetch_timeout(server, stream):
    data = (stream.directory / stream.segments[0]).read_bytes()
    server.add_slow("/slow/seg.ts", data, delay_s=0.05, chunk=100)  # would take minutes
    server.add_bytes("/slow.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/slow/seg.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/slow.m3u8"), r"segment 0: timed out after 2 s", limits=HlsLimits(fetch_timeout_s=2))


@pytest.mark.parametrize("entry", ["file:///etc/passwd", "FILE:///etc/hostname", "file:{tmp}/secret.ts",
                                   "ftp://example.com/seg.ts", "data:video/mp2t;base64,Rw==",
                                   "concat:/etc/passwd"])
def test_segments_with_local_schemes_refused(server, stream, tmp_path, entry):
    (tmp_path / "secret.ts").write_bytes((stream.directory / stream.segments[0]).read_bytes())
    server.add_bytes("/evil.m3u8", f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{entry.format(tmp=tmp_path)}\n")
    refused(server.url("/evil.m3u8"), r"playlist entry refused: .* \(only http and https URLs are followed\)")


@pytest.mark.parametrize("entry", ["/etc/passwd", "../../../../etc/passwd", "{tmp}/secret.ts",
                                   "subfile,,start,0,end,10,,:/etc/passwd"])
def test_local_paths_are_asked_of_the_server_not_read(server, stream, tmp_path, entry):
    secret = tmp_path / "secret.ts"
    secret.write_bytes((stream.directory / stream.segments[0]).read_bytes())
    entry = entry.format(tmp=tmp_path)
    server.add_bytes("/evil.m3u8", f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{entry}\n#EXT-X-ENDLIST\n")
    refused(server.url("/evil.m3u8"), r"segment 0: HTTP 404 Not Found for http://127\.0\.0\.1:\d+/")
    assert server.requests[-1].endswith(entry.lstrip("./"))  # the path went to the HTTP server, not the disk


def test_keys_and_init_sections_are_checked(server):
    server.add_bytes("/aes.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-KEY:METHOD=AES-128,URI=\"file:///k\"\n"
                     "#EXTINF:2.0,\n/vod/seg000.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/aes.m3u8"), r"encrypted HLS streams \(METHOD=AES-128\) are not supported")
    server.add_bytes("/map.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"file:///etc/passwd\"\n"
                     "#EXTINF:2.0,\n/vod/seg000.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/map.m3u8"), "playlist entry refused: 'file:///etc/passwd'")


def test_loopback_refused_unless_allowed(server, monkeypatch):
    url = server.url("/vod/index.m3u8")
    refused(url, r"refused to contact loopback address 127\.0\.0\.1 \(set SYNCNET_ALLOW_PRIVATE_HOSTS=1",
            allow_private=False)
    refused(url.replace("127.0.0.1", "[::ffff:127.0.0.1]"), "loopback", allow_private=False)
    refused(url.replace("127.0.0.1", "2130706433"), "loopback", allow_private=False)
    assert server.requests == []
    monkeypatch.setenv(netguard.ALLOW_PRIVATE_ENV, "1")
    assert len(read_all(url, allow_private=False, max_seconds=4.0)) == 1


@pytest.fixture
def public_server(server, monkeypatch):
    """The test server treated as a public host; every other loopback/private address stays refused."""
    real = netguard.address_problem
    monkeypatch.setattr(netguard, "address_problem", lambda ip, allow_private=False:
                        None if ip == ipaddress.ip_address("127.0.0.1") else real(ip, allow_private=allow_private))
    return server


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/seg.ts", "http://10.0.0.1/seg.ts",
                                    "http://127.0.0.2:{port}/vod/seg000.ts", "http://[::1]:{port}/vod/seg000.ts",
                                    "http://0x7f000002:{port}/vod/seg000.ts"])
def test_private_segments_and_redirects_refused(public_server, target):
    target = target.format(port=public_server.port)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{target}\n#EXT-X-ENDLIST\n"
    public_server.add_bytes("/direct.m3u8", playlist)
    refused(public_server.url("/direct.m3u8"), "segment 0: refused to contact", allow_private=False)
    public_server.add_redirect("/redirect/seg.ts", target)
    public_server.add_bytes(
        "/redir.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/redirect/seg.ts\n#EXT-X-ENDLIST\n"
    )
    refused(public_server.url("/redir.m3u8"), "segment 0: refused to contact", allow_private=False)
    public_server.add_redirect("/redirect/playlist.m3u8", target)
    refused(public_server.url("/redirect/playlist.m3u8"), "playlist: refused to contact", allow_private=False)
    assert not any(path.startswith(("/latest", "/seg")) for path in public_server.requests)


def test_not_found_and_malformed(server):
    refused(server.url("/nothing.m3u8"), r"playlist: HTTP 404 Not Found")
    server.add_bytes("/html.m3u8", "<html><body>hello</body></html>", content_type="text/html")
    refused(server.url("/html.m3u8"), "not an HLS playlist: it does not start with #EXTM3U")
    server.add_bytes("/binary.m3u8", bytes(range(256)) * 4)
    refused(server.url("/binary.m3u8"), "not an HLS playlist")
    server.add_bytes("/badinf.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:abc,\n/vod/seg000.ts\n")
    refused(server.url("/badinf.m3u8"), "malformed playlist at line 3")
    server.add_bytes("/nan.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:nan,\n/vod/seg000.ts\n")
    refused(server.url("/nan.m3u8"), "malformed playlist at line 3: segment duration nan s out of range")
    server.add_bytes("/orphan.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n/vod/seg000.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/orphan.m3u8"), "malformed playlist at line 3: URI without #EXTINF")
    server.add_bytes("/empty.m3u8", "#EXTM3U\n#EXT-X-ENDLIST\n")
    refused(server.url("/empty.m3u8"), "the playlist has no segments")
    server.add_bytes("/garbage.ts", bytes(500_000))
    server.add_bytes("/garbage.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/garbage.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/garbage.m3u8"), "segment 0: not MPEG-TS")
    server.add_bytes("/fake.ts", b"\x47" + bytes(range(256)) * 2000)  # starts like MPEG-TS, is not
    server.add_bytes("/fake.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/fake.ts\n#EXTINF:2.0,\n/fake.ts\n"
                     "#EXT-X-ENDLIST\n")
    refused(server.url("/fake.m3u8"), r"stream window 0\.0-4\.0 s: ")


def test_short_stream(server):
    server.add_bytes("/short.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.5,\n/vod/seg000.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/short.m3u8"), r"stream too short: 1\.5 s read")


def test_huge_segment_and_playlist(server):
    server.add_endless("/huge.ts")
    server.add_bytes("/huge.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n/huge.ts\n#EXT-X-ENDLIST\n")
    refused(server.url("/huge.m3u8"), r"segment 0: response too large: over 5242880 bytes",
            limits=HlsLimits(max_segment_bytes=5 * 2**20))
    server.add_endless("/endless.m3u8")
    refused(server.url("/endless.m3u8"), r"playlist: response too large: over 1048576 bytes")
    refused(server.url("/vod/index.m3u8"), r"stream too large: over 300000 bytes read",
            limits=HlsLimits(max_total_bytes=300_000))
    refused(server.url("/vod/index.m3u8"), r"too many segments \(limit 3\)", limits=HlsLimits(max_segments=3))
    refused(server.url("/vod/index.m3u8"), r"stream window too large: over 100000 bytes of segments",
            limits=HlsLimits(max_window_bytes=100_000))


def test_parse_playlist_resolves_urls():
    playlist = parse_playlist("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:6.0,\na.ts\n"
                              "#EXT-X-DISCONTINUITY\n#EXTINF:5.5,title\nhttps://cdn.example/b.ts\n",
                              "https://example.com/live/index.m3u8")
    assert not playlist.ended and playlist.target_duration == 6
    assert [(s.url, s.duration, s.sequence, s.discontinuity) for s in playlist.segments] == [
        ("https://example.com/live/a.ts", 6.0, 41, False), ("https://cdn.example/b.ts", 5.5, 42, True)]
