"""Placeholder until syncnet/protocols.py (issue 14) lands: Wav2Lip's full-frame crops, each frame resized."""
from __future__ import annotations

import cv2
import numpy as np

from syncnet.constants import CROP_SIZE


def full_frame_crops(frames_rgb: np.ndarray) -> np.ndarray:
    """uint8 (T, 224, 224, 3): every frame resized to SyncNet's input size (no face detection)."""
    return np.stack([cv2.resize(f, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) for f in frames_rgb])
