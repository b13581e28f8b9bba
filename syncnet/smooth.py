"""Median filtering over time, as `scipy.signal.medfilt` computes it (zero padding at both ends).

`scipy.ndimage.median_filter` gives the same numbers and imports in a third of the time (0.2 s against 0.65 s
here): the command line starts faster.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter


def medfilt(values: np.ndarray, kernel_size: int) -> np.ndarray:
    """`scipy.signal.medfilt(values, kernel_size)` of a 1-D array (odd kernel), as float64."""
    return median_filter(np.asarray(values, np.float64), size=kernel_size, mode="constant", cval=0.0)
