import numpy as np
import pytest
from scipy.fft import dct

from syncnet.audio import N_CEPSTRA, N_FILTERS, AudioError, dct_matrix, mel_filterbank, mfcc
from tests.synthetic_weights import DATA


@pytest.mark.parametrize("name", ["", "_shift3"])
def test_mfcc_matches_python_speech_features(name):
    audio = np.load(DATA / f"input{name}.npz")["audio_int16"]
    expected = np.load(DATA / f"expected{name}.npz")["mfcc"]
    got = mfcc(audio)
    assert got.shape == expected.shape == (13, 199)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_float_audio_is_scaled_to_int16_range():
    audio = np.load(DATA / "input.npz")["audio_int16"]
    np.testing.assert_allclose(mfcc(audio.astype(np.float32) / 32768.0), mfcc(audio), rtol=1e-6, atol=1e-9)


def test_steps_per_second():
    assert mfcc(np.zeros(16000, np.float32)).shape == (13, 99)  # 1 + ceil((16000 - 400) / 160)
    assert mfcc(np.zeros(100, np.int16)).shape == (13, 1)  # shorter than one window: one zero-padded frame


def test_filterbank_is_triangular_on_floored_bins():
    bank = mel_filterbank()
    assert bank.shape == (26, 257)
    assert np.all(bank >= 0) and np.all(bank <= 1)
    assert np.all(bank.max(axis=1) > 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 100), np.float32), "1-D"),
        (np.zeros(0, np.float32), "non-empty"),
        (np.array([0.0, np.nan] * 300, np.float32), "NaN"),
        (np.zeros(1000, np.int32), "dtype"),
    ],
)
def test_bad_audio_is_a_clear_error(bad, match):
    with pytest.raises(AudioError, match=match):
        mfcc(bad)


def test_dct_matrix_is_scipy_orthonormal_dct_ii():
    x = np.random.default_rng(0).normal(size=(40, N_FILTERS))
    expected = dct(x, type=2, axis=1, norm="ortho")[:, :N_CEPSTRA]
    np.testing.assert_allclose(x @ dct_matrix(N_CEPSTRA, N_FILTERS).T, expected, rtol=0, atol=1e-12)

