"""Device choice and the ZeroGPU decorator (without the `spaces` package); on a machine with a GPU, the engines
on CUDA against the CPU reference (skipped elsewhere)."""
import importlib.machinery
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from syncnet import batch_workers, gpu, pipeline
from syncnet.audio import mfcc
from syncnet.engines import EngineInput
from syncnet.errors import BadArgument
from syncnet.fcn import BF16_TOLERANCE, FCNEngine, FCNSyncNet
from syncnet.hls import StreamWindow
from syncnet.model import SyncNetEngine, build_model
from tests.synthetic_weights import synthetic_state_dict
from tests.test_fcn import fixture_input


@pytest.fixture(autouse=True)
def fresh_device(monkeypatch):
    """device() is chosen once per process: forget the choice around each test."""
    monkeypatch.delenv(gpu.DEVICE_ENV, raising=False)
    gpu.device.cache_clear()
    yield
    gpu.device.cache_clear()


def test_no_spaces_package_leaves_the_function_unchanged(monkeypatch):
    monkeypatch.delitem(sys.modules, gpu.ZEROGPU_PACKAGE, raising=False)
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: None)

    def analyse(x):
        return x + 1

    assert gpu.gpu_task(analyse) is analyse
    assert analyse(1) == 2


@pytest.fixture
def zerogpu(monkeypatch) -> list[tuple[str, tuple]]:
    """A stand-in ``spaces`` package whose ``GPU`` records each call it lends the GPU to: (function name, args)."""
    calls = []

    def fake_gpu(fn, duration):
        assert duration == gpu.GPU_SECONDS

        def on_gpu(*args):
            calls.append((fn.__name__, args))
            return fn(*args)

        return on_gpu

    spaces = types.ModuleType(gpu.ZEROGPU_PACKAGE)
    spaces.__spec__ = importlib.machinery.ModuleSpec(gpu.ZEROGPU_PACKAGE, None)
    spaces.GPU = fake_gpu
    monkeypatch.setitem(sys.modules, gpu.ZEROGPU_PACKAGE, spaces)
    return calls


def test_spaces_package_wraps_the_function_in_spaces_gpu(zerogpu):
    def double(x):
        return x * 2

    assert gpu.gpu_task(double)(3) == 6
    assert zerogpu == [("double", (3,))]


def test_a_stream_holds_the_gpu_per_window_not_while_waiting(zerogpu, monkeypatch):
    windows = [StreamWindow(0.0, 5.0, media="window 1"), StreamWindow(5.0, 10.0, media="window 2")]
    monkeypatch.setattr(pipeline, "check_url", lambda url, allow_private: None)
    monkeypatch.setattr(pipeline, "get_engines", lambda names: None)
    monkeypatch.setattr(pipeline, "stream_windows", lambda url, **kw: (w for w in windows))
    monkeypatch.setattr(pipeline, "analyze_media", lambda media, names: f"report of {media}")

    reports = list(pipeline.analyze_stream("https://example.com/live.m3u8", ["fcn"], window_s=5))

    assert [r.report for r in reports] == ["report of window 1", "report of window 2"]
    assert zerogpu == [("<lambda>", ("window 1", ["fcn"])), ("<lambda>", ("window 2", ["fcn"]))]


def test_a_batch_in_process_holds_the_gpu_per_video(zerogpu, monkeypatch):
    monkeypatch.setattr(batch_workers, "score_video", lambda path, settings: f"scored {path}")

    scored = list(batch_workers.run_in_process(["a.mp4", "b.mp4"], "settings"))

    assert scored == ["scored a.mp4", "scored b.mp4"]
    assert [args for _, args in zerogpu] == [("a.mp4", "settings"), ("b.mp4", "settings")]


NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
NEEDS_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA device")


@NEEDS_NO_CUDA
def test_device_is_the_cpu_without_cuda():
    assert gpu.device() == torch.device("cpu")
    assert gpu.device() is gpu.device()  # chosen once


@NEEDS_NO_CUDA
def test_device_setting(monkeypatch):
    monkeypatch.setenv(gpu.DEVICE_ENV, "CPU")
    assert gpu.device() == torch.device("cpu")
    gpu.device.cache_clear()
    monkeypatch.setenv(gpu.DEVICE_ENV, "tpu")
    with pytest.raises(BadArgument, match="SYNCNET_DEVICE='tpu' is not a device"):
        gpu.device()
    gpu.device.cache_clear()
    monkeypatch.setenv(gpu.DEVICE_ENV, "cuda")
    with pytest.raises(BadArgument, match="torch sees no CUDA device"):
        gpu.device()


def test_cuda_is_chosen_when_torch_sees_it_and_tf32_is_switched_off(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert gpu.device() == torch.device("cuda")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_importing_gpu_does_not_import_torch():
    code = "import sys, syncnet.gpu; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@NEEDS_CUDA
def test_cuda_is_the_default_device_when_torch_sees_one():
    assert gpu.device() == torch.device("cuda")
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@NEEDS_CUDA
@pytest.mark.parametrize("shift", ["", "_shift3"])
def test_engines_on_cuda_compute_what_the_cpu_reference_computes(shift):
    """On a GPU: windowed syncnet and fcn fp32 equal the CPU's float32 numbers to rounding; fcn bf16 stays within
    its tolerance (the same contract as on the CPU)."""
    frames, audio_int16 = fixture_input(shift)
    audio = audio_int16.astype(np.float32) / 32768.0
    inputs = EngineInput(np.ascontiguousarray(frames[..., ::-1]), audio, mfcc(audio), np.zeros((0, 1), np.float32))
    state = synthetic_state_dict()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    reference = SyncNetEngine(build_model(state), device=cpu).run(inputs)
    on_cuda = {
        "syncnet": SyncNetEngine(build_model(state), device=cuda).run(inputs),
        "fcn fp32": FCNEngine(FCNSyncNet(build_model(state), precision="fp32", device=cuda)).run(inputs),
    }
    for name, result in on_cuda.items():
        assert result.offset_frames == reference.offset_frames, name
        np.testing.assert_allclose(result.window_dists, reference.window_dists, rtol=1e-4, err_msg=name)
    bf16 = FCNEngine(FCNSyncNet(build_model(state), precision="bf16", device=cuda)).run(inputs)
    assert bf16.offset_frames == reference.offset_frames
    assert abs(bf16.min_dist - reference.min_dist) <= BF16_TOLERANCE.lse_d * reference.min_dist
    assert abs(bf16.confidence - reference.confidence) <= BF16_TOLERANCE.lse_c * reference.min_dist
