"""Median filtering over time, as `scipy.signal.medfilt` computes it (zero padding at both ends).

A median over a sliding window of numpy: `scipy.signal` and `scipy.ndimage` are not imported (0.65 s and 0.25 s
of every command's start-up here, on the path where the face stage is waiting for them).
"""
from __future__ import annotations

import numpy as np


def medfilt(values: np.ndarray, kernel_size: int) -> np.ndarray:
    """`scipy.signal.medfilt(values, kernel_size)` of a 1-D array (odd kernel), as float64."""
    padded = np.pad(np.asarray(values, np.float64), kernel_size // 2)
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, kernel_size), axis=-1)
