"""Uploads that are really playlists must not make ffmpeg read other files or URLs; decoding from memory works."""

import io
import shutil

import numpy as np
import pytest

from syncnet.media import MediaError, load_media, probe_media
from tests.paths import CLIPS

CLIP = CLIPS / "pcavs_posesrc_00067.mp4"


@pytest.mark.parametrize("name,text", [
    ("upload.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\n{secret}\n#EXT-X-ENDLIST\n"),
    ("upload.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\nfile://{secret}\n#EXT-X-ENDLIST\n"),
    ("upload.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5.0,\nsecret.mp4\n#EXT-X-ENDLIST\n"),
    ("upload.mp4", "ffconcat version 1.0\nfile secret.mp4\n"),
    ("upload.ffconcat", "ffconcat version 1.0\nfile secret.mp4\n"),
])
def test_playlist_upload_reads_no_other_file(tmp_path, name, text):
    secret = tmp_path / "secret.mp4"  # a perfectly decodable video next to the upload (another user's upload)
    shutil.copy(CLIP, secret)
    upload = tmp_path / name
    upload.write_text(text.format(secret=secret))
    with pytest.raises(MediaError, match="unreadable or corrupt media file"):
        load_media(upload)


def test_decodes_from_memory_like_from_a_file():
    from_file = load_media(CLIP)
    data = io.BytesIO(CLIP.read_bytes())
    assert probe_media(data).size_bytes == CLIP.stat().st_size
    from_memory = load_media(data)
    assert from_memory.frames.shape == from_file.frames.shape
    assert np.array_equal(from_memory.frames, from_file.frames)
    assert np.array_equal(from_memory.audio, from_file.audio)
    assert from_memory.source == "<memory>"


def test_forced_format_refuses_other_data():
    with pytest.raises(MediaError, match="unreadable or corrupt"):
        load_media(io.BytesIO(CLIP.read_bytes()), format="mpegts")
    with pytest.raises(MediaError, match="empty file"):
        load_media(io.BytesIO(b""))
