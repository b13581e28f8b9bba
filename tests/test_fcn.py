"""FCN-SyncNet computes what the windowed original computes: on the fixture and on real clips.

The real syncnet_v2.model is not available here: both engines run the fixture's synthetic weights, which exercise
every layer and every number the same way (the outputs are meaningless as sync judgements, identical as arithmetic).
"""
from dataclasses import replace

import numpy as np
import pytest
import torch

from syncnet.audio import mfcc
from syncnet.engines import EngineInput
from syncnet.errors import BadArgument
from syncnet.fcn import (
    BF16_TOLERANCE,
    PRECISION_ENV,
    TOLERANCES,
    FCNEngine,
    FCNSyncNet,
    Tolerance,
    _pool_before_relu,
    default_precision,
    distance_matrix,
    fast_bf16,
    fast_int8,
    fold_bn,
    int8_runs,
    stack_windows,
)
from syncnet.media import SAMPLES_PER_FRAME, load_media
from syncnet.model import (
    SyncNetEngine,
    SyncNetInputError,
    build_model,
    offset_distances,
    windowed_embeddings,
)
from syncnet.scoring import Calibration, summarize
from tests.paths import CLIPS, SYNCNET_REF
from tests.synthetic_weights import synthetic_state_dict
from tests.test_engines import rows_input, runs_with_rows

CLIP_FRAMES = 60  # 2.4 s of each real clip keeps the windowed baseline quick
REAL_CLIPS = ["syncnet_example.avi", "pcavs_posesrc_00067.mp4", "pcavs_audiosrc_00086.mp4"]


def rel_err(got, expected):
    return float(np.max(np.abs(np.asarray(got) - np.asarray(expected))) / np.max(np.abs(np.asarray(expected))))


@pytest.fixture(scope="module")
def net():
    return build_model(synthetic_state_dict())


@pytest.fixture(scope="module")
def fcn(net):
    return FCNSyncNet(net, precision="fp32")


@pytest.fixture(scope="module")
def fcn_bf16(net):
    return FCNSyncNet(net, precision="bf16")


@pytest.fixture(scope="module")
def fcn_int8(net):
    if not int8_runs(torch.device("cpu")):
        pytest.skip("this torch has no oneDNN int8 convolution")
    return FCNSyncNet(net, precision="int8", device=torch.device("cpu"))


def fixture_input(name=""):
    frames = np.load(SYNCNET_REF / "input.npz")["frames_bgr"]
    audio = np.load(SYNCNET_REF / f"input{name}.npz")["audio_int16"]
    return frames, audio


def test_batchnorm_folding_is_exact():
    conv, bn = torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8).eval()
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2), bn.weight.data.normal_(), bn.bias.data.normal_()
    w, b = fold_bn(conv.weight, conv.bias, bn)
    x = torch.randn(2, 4, 9, 9)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, w, b), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["", "_shift3"])
def test_fcn_reproduces_reference(fcn, name):
    frames, audio = fixture_input(name)
    exp = np.load(SYNCNET_REF / f"expected{name}.npz")
    lip, aud = fcn.embed(frames, mfcc(audio), len(audio))
    assert rel_err(lip, exp["im_feat"]) < 1e-5
    assert rel_err(aud, exp["cc_feat"]) < 1e-5
    dists = distance_matrix(lip, aud)
    assert rel_err(dists, exp["dists"][:, ::-1]) < 1e-5
    assert int(np.argmin(dists.mean(axis=0))) - 15 == int(exp["offset"])


def test_stacked_first_layer_is_the_conv3d(net, fcn):
    """The first layer as a 2-D conv over 5 stacked frames gives the original's Conv3d (+BN) maps, window by window."""
    frames = np.load(SYNCNET_REF / "input.npz")["frames_bgr"][:12]
    clip = torch.from_numpy(frames).float()
    with torch.inference_mode():  # each model on its own device (CUDA where torch sees one); compared on the CPU
        original = clip.to(next(net.parameters()).device).permute(3, 0, 1, 2)[None]
        expected = net.netcnnlip[1](net.netcnnlip[0](original))[0].transpose(0, 1).cpu()
        stacked = stack_windows(clip, 8)
        got = fcn.lip_conv1(stacked.to(fcn.device)).cpu()
    assert stacked.shape == (8, 15, 224, 224) and stacked.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(stacked[3, 6:9], clip[5].permute(2, 0, 1))  # window 3, its third frame (3 + 2), B, G, R
    assert got.shape == expected.shape == (8, 96, 109, 109)
    assert rel_err(got, expected) < 1e-5


def test_int8_first_layer_is_the_layer_with_int8_weights(fcn, fcn_int8):
    """oneDNN's int8 convolution computes the stacked first layer with each output channel's weights rounded to
    int8: sums exact in int32, so only the bfloat16 output rounds (2^-8 relative)."""
    frames = np.load(SYNCNET_REF / "input.npz")["frames_bgr"][:12]
    stacked = stack_windows(torch.from_numpy(frames), 8)
    layer = fcn_int8.int8_conv1
    assert layer.weight.dtype == torch.int8 and int(layer.weight.abs().max()) == 127
    rounded = layer.weight.double() * layer.scale.double()[:, None, None, None]
    conv = fcn.lip_conv1.cpu()
    with torch.inference_mode():
        got = layer(stacked)
        expected = torch.nn.functional.conv2d(stacked.double(), rounded, layer.bias.double(), conv.stride, conv.padding)
        exact = conv(stacked.float())
    assert got.dtype == torch.bfloat16 and got.shape == (8, 96, 109, 109)
    assert rel_err(got.float(), expected) < 2 ** -8
    assert rel_err(rounded, conv.weight.detach().double()) <= 0.5 / 127 + 1e-9  # half a step of the largest at most
    assert rel_err(got.float(), exact) < 0.02


def test_pool_before_relu_is_exact():
    x = torch.randn(3, 8, 21, 21)
    layers = [torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1), torch.nn.Conv2d(8, 4, 1), torch.nn.ReLU()]
    swapped = _pool_before_relu(layers)
    assert [type(m) for m in swapped] == [torch.nn.MaxPool2d, torch.nn.ReLU, torch.nn.Conv2d, torch.nn.ReLU]
    assert torch.equal(torch.nn.Sequential(*swapped)(x), torch.nn.Sequential(*layers)(x))


def test_batched_distances_equal_the_original_loop():
    lip, aud = torch.randn(40, 1024) * 10, torch.randn(40, 1024) * 10
    np.testing.assert_allclose(distance_matrix(lip, aud), offset_distances(lip, aud), rtol=1e-5)


def test_distance_rows_from_a_first_window_are_the_full_rows():
    lip, aud = torch.randn(40, 1024) * 10, torch.randn(40, 1024) * 10
    full = distance_matrix(lip, aud)
    for lo, hi in [(0, 40), (0, 1), (7, 23), (25, 40), (39, 40)]:
        np.testing.assert_array_equal(distance_matrix(lip[lo:hi], aud, first=lo), full[lo:hi])


def test_rows_embed_the_lips_of_their_windows_only(fcn):
    """rows=(2, 5) of 7 windows: 3 lip windows through the lip stream, all 7 audio windows through the audio one."""
    seen = {"lips": 0, "audio": 0}

    def count(stream):
        return lambda module, args, output: seen.__setitem__(stream, seen[stream] + output.shape[0])

    hooks = [fcn.lip_frames.register_forward_hook(count("lips")), fcn.audio.register_forward_hook(count("audio"))]
    try:
        result = FCNEngine(fcn).run(replace(rows_input(), rows=(2, 5)))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"lips": 3, "audio": 7} and result.window_dists.shape == (3, 31)


@pytest.mark.slow
def test_chunking_does_not_change_lip_embeddings(fcn):
    frames, _ = fixture_input()
    whole = fcn.embed_lips(frames, 45, chunk=64)
    np.testing.assert_allclose(fcn.embed_lips(frames, 45, chunk=7), whole, rtol=1e-5, atol=1e-5 * whole.abs().max())


@pytest.mark.slow
def test_channels_last_and_plain_layout_agree(net, fcn):
    frames, audio = fixture_input()
    plain = FCNSyncNet(net, channels_last=False, precision="fp32")
    assert rel_err(plain.embed_lips(frames, 45), fcn.embed_lips(frames, 45)) < 1e-5


@pytest.mark.parametrize("name", ["", "_shift3"])
def test_whole_sequence_audio(fcn, name):
    """Audio over the whole MFCC sequence: windows see real neighbours instead of zero padding at their edges."""
    frames, audio = fixture_input(name)
    cc = mfcc(audio)
    windows = fcn.embed_audio(cc, 45, "windows")
    sequence = fcn.embed_audio(cc, 45, "sequence")
    assert sequence.shape == windows.shape == (45, 1024)
    assert rel_err(sequence, windows) > 1e-3  # a different function of the MFCC, not a rounding difference
    lip = fcn.embed_lips(frames, 45)
    offsets = [int(np.argmin(distance_matrix(lip, a).mean(axis=0))) - 15 for a in (windows, sequence)]
    assert offsets[0] == offsets[1] == int(np.load(SYNCNET_REF / f"expected{name}.npz")["offset"])
    with pytest.raises(ValueError, match="unknown audio mode"):
        fcn.embed_audio(cc, 45, "nope")


@pytest.mark.slow
@pytest.mark.parametrize("clip", REAL_CLIPS)
def test_fcn_matches_syncnet_on_real_clips(net, fcn, clip):
    media = load_media(CLIPS / clip)
    crops = media.frames[:CLIP_FRAMES]  # these clips are already 224x224 face crops
    audio = media.audio[: CLIP_FRAMES * SAMPLES_PER_FRAME]
    inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=np.zeros((len(crops), 1), np.float32))
    bgr = np.ascontiguousarray(crops[..., ::-1])  # what SyncNetEngine.run feeds the windowed original
    lip_ref, aud_ref = windowed_embeddings(net, bgr, inputs.mfcc, len(audio))
    base = summarize("syncnet", offset_distances(lip_ref, aud_ref))
    fast = FCNEngine(fcn).run(inputs)
    assert rel_err(fcn.embed_lips(bgr, len(lip_ref)), lip_ref) < 1e-4
    assert fast.offset_frames == base.offset_frames
    assert abs(fast.confidence - base.confidence) <= 0.01 * abs(base.confidence)
    assert rel_err(fast.window_dists, base.window_dists) < 1e-4


@pytest.mark.slow
def test_engines_agree_on_the_fixture(net, fcn):
    frames, audio = fixture_input("_shift3")
    crops = np.ascontiguousarray(frames[..., ::-1])  # engines take RGB
    audio = audio.astype(np.float32) / 32768.0
    inputs = EngineInput(crops, audio, mfcc(audio), np.zeros((len(crops), 1), np.float32))
    base, fast = SyncNetEngine(net).run(inputs), FCNEngine(fcn).run(inputs)
    exp = np.load(SYNCNET_REF / "expected_shift3.npz")
    assert base.offset_frames == fast.offset_frames == int(exp["offset"]) == 15
    assert abs(fast.confidence - base.confidence) <= 0.01 * base.confidence
    np.testing.assert_allclose(base.frame_confidence, exp["fconfm"], rtol=1e-5, atol=1e-5 * float(exp["minval"]))
    assert (base.engine, fast.engine) == ("syncnet", "fcn") and fast.time_s > 0


def test_precision_setting(net, monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    cpu = torch.device("cpu")
    monkeypatch.setenv(PRECISION_ENV, "FP32")
    assert default_precision(cpu) == "fp32"
    assert FCNSyncNet(net).precision == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    model = FCNSyncNet(net)
    assert model.precision == "bf16" and model.lip_conv1.weight.dtype == torch.bfloat16
    monkeypatch.delenv(PRECISION_ENV)
    expected = "int8" if fast_int8(cpu) else "bf16" if fast_bf16(cpu) else "fp32"
    assert default_precision(cpu) == expected
    with pytest.raises(BadArgument, match="precision int8 runs on a CPU"):
        FCNSyncNet(net, precision="int8", device=torch.device("cuda"))
    monkeypatch.setenv(PRECISION_ENV, "int4")
    with pytest.raises(BadArgument, match="SYNCNET_FCN_PRECISION='int4' is not a precision"):
        FCNSyncNet(net)
    with pytest.raises(BadArgument, match="unknown precision 'fp16'"):
        FCNSyncNet(net, precision="fp16")


def within_tolerance(fast, base, tolerance: Tolerance = BF16_TOLERANCE) -> None:
    """A reduced-precision result against the float32 reference: same offset, LSE-C and LSE-D within tolerance."""
    assert fast.offset_frames == base.offset_frames
    assert abs(fast.min_dist - base.min_dist) <= tolerance.lse_d * base.min_dist
    assert abs(fast.confidence - base.confidence) <= tolerance.lse_c * base.min_dist


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
@pytest.mark.parametrize("name", ["", "_shift3"])
def test_reduced_precision_stays_within_its_tolerance_on_the_fixture(net, request, precision, name):
    fast_net = request.getfixturevalue(f"fcn_{precision}")
    frames, audio = fixture_input(name)
    audio = audio.astype(np.float32) / 32768.0
    inputs = EngineInput(np.ascontiguousarray(frames[..., ::-1]), audio, mfcc(audio), np.zeros((50, 1), np.float32))
    base, fast = SyncNetEngine(net).run(inputs), FCNEngine(fast_net).run(inputs)
    assert fast.offset_frames == int(np.load(SYNCNET_REF / f"expected{name}.npz")["offset"])
    within_tolerance(fast, base, TOLERANCES[precision])
    lip = fast_net.embed_lips(frames, 45)
    assert lip.dtype == torch.float32 and 1e-4 < rel_err(lip, np.load(SYNCNET_REF / f"expected{name}.npz")["im_feat"])


def test_bf16_rows_stay_within_its_tolerance_of_the_full_rows(fcn_bf16):
    for part, expected in runs_with_rows(FCNEngine(fcn_bf16), rows_input()):
        assert part.window_dists.shape == expected.shape
        within_tolerance(part, summarize("fcn", expected))


@pytest.mark.slow
@pytest.mark.parametrize("clip", REAL_CLIPS)
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_matches_syncnet_on_real_clips(net, request, clip, precision):
    fast_net = request.getfixturevalue(f"fcn_{precision}")
    media = load_media(CLIPS / clip)
    crops = media.frames[:CLIP_FRAMES]
    audio = media.audio[: CLIP_FRAMES * SAMPLES_PER_FRAME]
    inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=np.zeros((len(crops), 1), np.float32))
    within_tolerance(FCNEngine(fast_net).run(inputs), SyncNetEngine(net).run(inputs), TOLERANCES[precision])


def test_too_short_and_malformed_inputs(fcn, net):
    audio = np.zeros(640 * 5, np.float32)
    short = EngineInput(np.zeros((5, 224, 224, 3), np.uint8), audio, mfcc(audio), np.zeros((5, 1), np.float32))
    for engine in (SyncNetEngine(net), FCNEngine(fcn)):
        with pytest.raises(SyncNetInputError, match="too short"):
            engine.run(short)
    bad = EngineInput(np.zeros((10, 112, 112, 3), np.uint8), audio, mfcc(audio), np.zeros((10, 1), np.float32))
    with pytest.raises(SyncNetInputError, match="uint8 \\(T, 224, 224, 3\\)"):
        FCNEngine(fcn).run(bad)


@pytest.mark.slow
def test_calibrated_subframe_offset(net, fcn):
    """The sub-frame offset (parabola vertex) goes through the engine's calibration: frames and milliseconds."""
    frames, audio = fixture_input()
    crops = np.ascontiguousarray(frames[..., ::-1])
    inputs = EngineInput(crops, audio.astype(np.float32) / 32768.0, mfcc(audio), np.zeros((50, 1), np.float32))
    plain = FCNEngine(fcn).run(inputs)
    scaled = FCNEngine(fcn, Calibration(scale=0.5, bias=1.25)).run(inputs)
    assert abs(plain.subframe_offset - plain.offset_frames) <= 0.5
    assert plain.calibrated_offset_frames == plain.subframe_offset
    assert scaled.calibrated_offset_frames == pytest.approx(0.5 * plain.subframe_offset + 1.25)
    assert scaled.calibrated_offset_ms == pytest.approx(40.0 * scaled.calibrated_offset_frames)
