"""Making test media with the ffmpeg that imageio-ffmpeg ships (a fresh machine has no system ffmpeg)."""
from __future__ import annotations

import subprocess

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
FFMPEG_TIMEOUT_S = 120


def ffmpeg(*args: str, stdout=None, timeout: float = FFMPEG_TIMEOUT_S) -> None:
    """Run ffmpeg quietly with ``args``, overwriting outputs; fail the test if it fails or hangs."""
    subprocess.run([FFMPEG, "-y", "-hide_banner", "-loglevel", "error", *args], check=True, stdout=stdout,
                   timeout=timeout)
