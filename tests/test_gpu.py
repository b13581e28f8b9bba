"""Device choice and the ZeroGPU decorator, on a machine without a GPU and without the `spaces` package."""
import importlib.machinery
import subprocess
import sys
import types

import pytest
import torch

from syncnet import gpu
from syncnet.errors import BadArgument


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


def test_spaces_package_wraps_the_function_in_spaces_gpu(monkeypatch):
    calls = []

    def fake_gpu(fn, duration):
        calls.append(duration)
        return lambda *a: ("on gpu", fn(*a))

    spaces = types.ModuleType(gpu.ZEROGPU_PACKAGE)
    spaces.__spec__ = importlib.machinery.ModuleSpec(gpu.ZEROGPU_PACKAGE, None)
    spaces.GPU = fake_gpu
    monkeypatch.setitem(sys.modules, gpu.ZEROGPU_PACKAGE, spaces)

    wrapped = gpu.gpu_task(lambda x: x * 2)
    assert wrapped(3) == ("on gpu", 6)
    assert calls == [gpu.GPU_SECONDS]


def test_device_is_the_cpu_without_cuda():
    assert not torch.cuda.is_available()  # this test machine has no GPU
    assert gpu.device() == torch.device("cpu")
    assert gpu.device() is gpu.device()  # chosen once


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
