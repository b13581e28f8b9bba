"""Decode a video file into 25 fps RGB frames and 16 kHz mono audio, in memory."""
from __future__ import annotations

FPS = 25.0
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 640
