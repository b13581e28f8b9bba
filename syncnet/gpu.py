"""Where the SyncNet engines run: CUDA when torch sees one, else the CPU; and ZeroGPU's ``spaces.GPU``.

``device()`` is chosen once per process (``SYNCNET_DEVICE=cpu|cuda`` forces it). On CUDA, TF32 is switched off
so that float32 stays float32 (the ``syncnet`` engine is the exact reference). ``gpu_task`` marks the functions that
do the GPU work: on a Hugging Face ZeroGPU Space (package ``spaces`` installed) it is ``spaces.GPU``, which lends
the process a GPU for the call; elsewhere it returns the function unchanged. This module does not import torch
until ``device()`` is called, so the landmarks-only path stays free of it.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from syncnet.errors import BadArgument

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "SYNCNET_DEVICE"
DEVICES = ("cpu", "cuda")
ZEROGPU_PACKAGE = "spaces"
GPU_SECONDS = 120  # the longest a ZeroGPU call may hold the GPU (an analysis of an upload of at most 60 s)

F = TypeVar("F", bound=Callable)


@functools.cache
def device() -> torch.device:
    """The device the engines use: ``SYNCNET_DEVICE`` if set, else CUDA when torch sees a GPU, else the CPU."""
    import torch

    wanted = os.environ.get(DEVICE_ENV, "").strip().lower()
    if wanted and wanted not in DEVICES:
        raise BadArgument(f"{DEVICE_ENV}={wanted!r} is not a device; use one of {', '.join(DEVICES)}")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise BadArgument(f"{DEVICE_ENV}=cuda but torch sees no CUDA device")
    chosen = torch.device(wanted or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32: no TF32 in matmuls...
        torch.backends.cudnn.allow_tf32 = False  # ...nor in convolutions (cuDNN's default is on)
    return chosen


def where(dev: torch.device) -> str:
    """Words for a device: "the CPU", "CUDA"."""
    return "CUDA" if dev.type == "cuda" else "the CPU" if dev.type == "cpu" else dev.type


def gpu_task(fn: F) -> F:
    """``spaces.GPU(fn, duration=GPU_SECONDS)`` where the ``spaces`` package is installed, else ``fn`` itself."""
    if importlib.util.find_spec(ZEROGPU_PACKAGE) is None:
        return fn
    import spaces

    return spaces.GPU(fn, duration=GPU_SECONDS)
