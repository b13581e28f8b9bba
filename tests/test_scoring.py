"""summarize() must derive exactly the numbers the original SyncNet derived from its distances."""
import numpy as np
import pytest

from syncnet.errors import SyncNetError
from syncnet.scoring import OFFSETS, Calibration, refine_minimum, summarize
from tests.paths import SYNCNET_REF


def original_order_to_offsets(dists_j: np.ndarray) -> np.ndarray:
    """The original's column j is offset 15 - j."""
    return dists_j[:, ::-1]


@pytest.mark.parametrize("name", ["expected.npz", "expected_shift3.npz"])
def test_reproduces_reference_offset_and_confidence(name):
    ref = np.load(SYNCNET_REF / name)
    result = summarize("syncnet", original_order_to_offsets(ref["dists"]))
    assert result.offset_frames == int(ref["offset"])
    assert result.min_dist == pytest.approx(float(ref["minval"]), rel=1e-6)
    # The reference averaged ~5000-sized float32 distances in float32: its own rounding is ~1e-3 absolute
    # (2e-7 of the distances), which is what a difference of two such numbers (the confidence) inherits.
    float32_noise = 4 * float(np.finfo(np.float32).eps) * float(ref["minval"])
    assert result.confidence == pytest.approx(float(ref["conf"]), abs=float32_noise)
    np.testing.assert_allclose(result.dists, ref["mean_dists"][::-1], rtol=1e-6)
    np.testing.assert_allclose(result.frame_confidence, ref["fconfm"], atol=float32_noise)


def test_offset_sign_and_ms():
    window_dists = np.tile(np.abs(OFFSETS - 4).astype(float) + 1.0, (10, 1))
    result = summarize("x", window_dists)
    assert result.offset_frames == 4
    assert result.offset_ms == pytest.approx(160.0)
    assert result.confidence == pytest.approx(np.median(window_dists[0]) - 1.0)


def test_parabola_refines_between_frames():
    true_minimum = 2.3
    dists = (OFFSETS - true_minimum) ** 2
    assert refine_minimum(dists, int(np.argmin(dists))) == pytest.approx(true_minimum)


def test_calibration_is_applied_to_subframe_offset():
    dists = (OFFSETS - 1.25) ** 2
    result = summarize("x", dists[None, :], Calibration(scale=2.0, bias=-0.5))
    assert result.subframe_offset == pytest.approx(1.25)
    assert result.calibrated_offset_frames == pytest.approx(2.0)


def test_rejects_wrong_shape():
    with pytest.raises(SyncNetError, match="window_dists"):
        summarize("x", np.zeros((3, 30)))


def test_median_filter_is_scipy_signal_medfilt():
    """syncnet.smooth.medfilt (scipy.ndimage, quicker to import) gives scipy.signal.medfilt's numbers, ends included."""
    import warnings

    from scipy.signal import medfilt as reference

    from syncnet.smooth import medfilt

    rng = np.random.default_rng(0)
    for length in (1, 5, 12, 13, 14, 200):
        for kernel in (3, 13):
            values = rng.normal(size=length).astype(np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # kernel wider than the input: zero-padded
                assert np.array_equal(medfilt(values, kernel), reference(values.astype(np.float64), kernel))
