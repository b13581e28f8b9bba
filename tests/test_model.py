"""The port reproduces the original SyncNet evaluation on the fixture (synthetic weights, see synthetic_weights)."""
import numpy as np
import pytest
import torch

from syncnet.audio import mfcc
from syncnet.model import SyncNet, build_model, n_windows, offset_distances, windowed_embeddings
from tests.synthetic_weights import DATA, DIGEST, digest, key_shapes, synthetic_arrays, synthetic_state_dict

RTOL = 1e-5


def rel_err(got, expected):
    return float(np.max(np.abs(np.asarray(got) - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="module")
def model():
    return build_model(synthetic_state_dict())


def test_synthetic_weights_digest():
    assert digest(synthetic_arrays()) == DIGEST


def test_state_dict_layout_is_syncnet_v2():
    layout = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    assert layout == key_shapes()


@pytest.mark.parametrize("name", ["", "_shift3"])
def test_reproduces_reference(model, name):
    frames = np.load(DATA / "input.npz")["frames_bgr"]
    audio = np.load(DATA / f"input{name}.npz")["audio_int16"]
    exp = np.load(DATA / f"expected{name}.npz")
    lip, aud = windowed_embeddings(model, frames, mfcc(audio), len(audio))
    assert lip.shape == aud.shape == (45, 1024)
    assert rel_err(lip, exp["im_feat"]) < RTOL
    assert rel_err(aud, exp["cc_feat"]) < RTOL
    dists = offset_distances(lip, aud)  # columns: offsets -15..15; the original's column j is offset 15 - j
    assert rel_err(dists, exp["dists"][:, ::-1]) < RTOL
    mean = dists.mean(axis=0)
    offset = int(np.argmin(mean)) - 15
    assert offset == int(exp["offset"])
    np.testing.assert_allclose(mean.min(), exp["minval"], rtol=RTOL)
    # conf is a difference of two ~5000 values: its error is bounded by the distances' relative error times minval
    assert abs((np.median(mean) - mean.min()) - exp["conf"]) < RTOL * exp["minval"]


def test_offsets_of_plain_and_shifted_reference():
    assert int(np.load(DATA / "expected.npz")["offset"]) == -15
    assert int(np.load(DATA / "expected_shift3.npz")["offset"]) == 15


def test_window_count_follows_the_original():
    assert n_windows(50, 32000) == 45
    assert n_windows(50, 32000 - 1) == 44
    assert n_windows(30, 64000) == 25
    assert n_windows(4, 64000) == 0


def test_distance_sign_convention():
    """Offset +k pairs lip window i with audio window i - k (audio early by k frames)."""
    aud = torch.randn(40, 1024)
    lip = torch.zeros(40, 1024)
    lip[3:] = aud[:-3]  # lip window i matches audio window i - 3
    dists = offset_distances(lip, aud)
    assert np.all(dists[3:, 15 + 3] < 1e-3)
    assert int(np.argmin(dists[3:].mean(axis=0))) - 15 == 3


def test_distance_rows_from_a_first_window_are_the_full_rows():
    """Lip windows lo..hi-1 against all the audio windows: the very rows lo..hi-1 of all the lip windows'."""
    lip, aud = torch.randn(30, 1024), torch.randn(30, 1024)
    full = offset_distances(lip, aud)
    for lo, hi in [(0, 30), (0, 4), (9, 21), (20, 30), (29, 30)]:
        np.testing.assert_array_equal(offset_distances(lip[lo:hi], aud, first=lo), full[lo:hi])


def test_too_short_input_gives_no_windows(model):
    lip, aud = windowed_embeddings(model, np.zeros((4, 224, 224, 3), np.uint8), mfcc(np.zeros(6400, np.int16)), 6400)
    assert lip.shape == aud.shape == (0, 1024)
    assert offset_distances(lip, aud).shape == (0, 31)
