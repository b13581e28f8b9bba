"""MFCC features exactly as SyncNet was trained on them.

A numpy re-implementation of ``python_speech_features.mfcc`` with its defaults at 16 kHz (25 ms windows every
10 ms, 512-point FFT, 26 mel filters, pre-emphasis 0.97, cepstral lifter 22, the first coefficient replaced by
the log frame energy), computed on int16-scaled samples: 100 steps per second, 4 steps per 25 fps video frame.
"""
from __future__ import annotations

import numpy as np

from syncnet.constants import MFCC_HOP, MFCC_WINDOW_LENGTH, SAMPLE_RATE
from syncnet.errors import EngineInputError

WIN_LENGTH = MFCC_WINDOW_LENGTH  # 25 ms
HOP_LENGTH = MFCC_HOP  # 10 ms
N_FFT = 512
N_FILTERS = 26
N_CEPSTRA = 13
PREEMPHASIS = 0.97
CEP_LIFTER = 22
INT16_SCALE = 32768.0
EPS = np.finfo(float).eps


class AudioError(EngineInputError):
    """The audio cannot be turned into MFCC features."""


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


def mel_filterbank(n_filters: int = N_FILTERS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular filters on floored FFT bins, as python_speech_features' ``get_filterbanks``."""
    mel_points = np.linspace(_hz_to_mel(0), _hz_to_mel(sample_rate / 2), n_filters + 2)
    bins = np.floor((n_fft + 1) * _mel_to_hz(mel_points) / sample_rate)
    bank = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """The first `n_out` rows of the orthonormal DCT-II of length `n_in`: ``x @ dct_matrix(k, n).T`` is
    ``scipy.fft.dct(x, type=2, norm="ortho")[..., :k]`` (a 13 x 26 product here; importing scipy.fft would add
    0.24 s to every command's start-up)."""
    k, n = np.arange(n_out)[:, None], np.arange(n_in)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n_in), np.sqrt(2.0 / n_in))
    return scale * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))


_FILTERBANK = mel_filterbank()
_DCT = dct_matrix(N_CEPSTRA, N_FILTERS)
_LIFTER = 1 + (CEP_LIFTER / 2.0) * np.sin(np.pi * np.arange(N_CEPSTRA) / CEP_LIFTER)


def _frames(signal: np.ndarray) -> np.ndarray:
    """Zero-pad the tail and cut overlapping frames (python_speech_features' ``framesig``)."""
    n = len(signal)
    n_frames = 1 if n <= WIN_LENGTH else 1 + int(np.ceil((n - WIN_LENGTH) / HOP_LENGTH))
    padded = np.concatenate([signal, np.zeros((n_frames - 1) * HOP_LENGTH + WIN_LENGTH - n)])
    return np.lib.stride_tricks.sliding_window_view(padded, WIN_LENGTH)[::HOP_LENGTH]


def mfcc(audio: np.ndarray) -> np.ndarray:
    """(13, steps) float64 MFCC of 16 kHz mono audio: int16 used as is, float in [-1, 1] scaled by 32768 first."""
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0:
        raise AudioError(f"expected a non-empty 1-D array of samples, got shape {audio.shape}")
    if audio.dtype == np.int16:
        signal = audio.astype(np.float64)
    elif np.issubdtype(audio.dtype, np.floating):
        if not np.all(np.isfinite(audio)):
            raise AudioError("audio contains NaN or infinite samples")
        signal = audio.astype(np.float64) * INT16_SCALE
    else:
        raise AudioError(f"audio must be int16 or float in [-1, 1], got dtype {audio.dtype}")
    signal = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1])
    power = np.abs(np.fft.rfft(_frames(signal), N_FFT)) ** 2 / N_FFT
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, EPS, energy)
    feat = power @ _FILTERBANK.T
    feat = np.where(feat == 0, EPS, feat)
    cepstra = np.log(feat) @ _DCT.T * _LIFTER
    cepstra[:, 0] = np.log(energy)
    return cepstra.T
