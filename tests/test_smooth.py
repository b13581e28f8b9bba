import warnings

import numpy as np
import pytest
from scipy import signal

from syncnet.smooth import medfilt


@pytest.mark.parametrize("length", [1, 5, 12, 13, 14, 317])
@pytest.mark.parametrize("kernel", [3, 13])
def test_medfilt_is_scipy_signal_medfilt(length, kernel):
    """Zero padding at both ends, as scipy.signal.medfilt (a kernel longer than the series included)."""
    x = np.random.default_rng(length).normal(size=length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scipy warns when the kernel is longer than the series
        expected = signal.medfilt(x, kernel)
    np.testing.assert_array_equal(medfilt(x, kernel), expected)
