"""The original SyncNet network and its windowed evaluation (joonson/syncnet_python), on arrays.

The module layout matches the ``syncnet_v2.model`` state dict exactly (keys ``netcnnaud.*``, ``netfcaud.*``,
``netcnnlip.*``, ``netfclip.*``). The lip stream takes 5 raw BGR frames (0..255, not normalised) of a 224x224
face crop, the audio stream 20 MFCC steps (13 x 20); both give 1024-d embeddings whose Euclidean distance is
small when lips and sound belong together.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from syncnet import card
from syncnet.constants import (
    AUDIO_WINDOW_STEPS,
    CROP_SIZE,
    LIP_WINDOW_FRAMES,
    MAX_OFFSET,
    MFCC_STEPS_PER_FRAME,
)
from syncnet.engines import EngineUnavailable, n_windows, row_span
from syncnet.errors import EngineInputError, WeightsError
from syncnet.gpu import device as default_device
from syncnet.gpu import where
from syncnet.scoring import Calibration, SyncResult, summarize
from syncnet.weights import shared_weights

if TYPE_CHECKING:
    from syncnet.engines import EngineInput

VIDEO_WINDOW = LIP_WINDOW_FRAMES  # frames per lip window
MFCC_WINDOW = AUDIO_WINDOW_STEPS  # MFCC steps per audio window
MFCC_PER_FRAME = MFCC_STEPS_PER_FRAME  # 100 MFCC steps/s over 25 video frames/s
EMBED_DIM = 1024
BATCH_SIZE = 20  # windows per forward pass, as the original evaluation
PDIST_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default


class SyncNetInputError(EngineInputError):
    """The crops, audio or MFCC handed to a SyncNet engine cannot be scored."""


def _conv_bn_relu(conv: nn.Module, channels: int, bn: type[nn.Module]) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """SyncNet's two streams; ``forward_lip`` on (N,3,5,224,224), ``forward_aud`` on (N,1,13,20)."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, padding=1), 64, nn.BatchNorm2d),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, padding=1), 192, nn.BatchNorm2d),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, nn.BatchNorm2d),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, nn.BatchNorm2d),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, nn.BatchNorm2d),
            nn.MaxPool2d(3, 2),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, nn.BatchNorm2d),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2)), 96, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, nn.BatchNorm3d),
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(x).flatten(1))


def build_model(state_dict: dict[str, torch.Tensor]) -> SyncNet:
    """A SyncNet in eval mode holding ``state_dict`` (strict: every key and shape must match)."""
    model = SyncNet()
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def windowed_lip_embeddings(
    model: SyncNet, frames_bgr: np.ndarray, n: int, batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """(n, 1024) lip embeddings of windows i = 0..n-1 (frames i..i+4 of uint8 (T, 224, 224, 3) BGR frames).

    Runs on the model's device; the embeddings come back on the CPU.
    """
    video = torch.from_numpy(np.ascontiguousarray(frames_bgr)).permute(3, 0, 1, 2).float()[None]  # 1,3,T,H,W
    dev = _device_of(model)
    out = []
    for start in range(0, n, batch_size):
        windows = [video[:, :, i : i + VIDEO_WINDOW] for i in range(start, min(n, start + batch_size))]
        out.append(model.forward_lip(torch.cat(windows).to(dev)).cpu())
    return torch.cat(out) if out else torch.zeros(0, EMBED_DIM)


@torch.inference_mode()
def windowed_audio_embeddings(model: SyncNet, mfcc: np.ndarray, n: int, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """(n, 1024) audio embeddings of windows i = 0..n-1 (MFCC steps 4i..4i+19 of a (13, steps) MFCC)."""
    cc = torch.from_numpy(np.asarray(mfcc, dtype=np.float32))[None, None]  # 1,1,13,steps
    dev = _device_of(model)
    out = []
    for start in range(0, n, batch_size):
        steps = [i * MFCC_PER_FRAME for i in range(start, min(n, start + batch_size))]
        out.append(model.forward_aud(torch.cat([cc[..., s : s + MFCC_WINDOW] for s in steps]).to(dev)).cpu())
    return torch.cat(out) if out else torch.zeros(0, EMBED_DIM)


def windowed_embeddings(
    model: SyncNet, frames_bgr: np.ndarray, mfcc: np.ndarray, n_samples: int, batch_size: int = BATCH_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings (W, 1024) of the original evaluation's W windows, cut and batched as it does.

    ``frames_bgr`` is uint8 (T, 224, 224, 3) in BGR order, ``mfcc`` (13, steps) the MFCC of ``n_samples``
    16 kHz samples; window i is frames i..i+4 and MFCC steps 4i..4i+19 (``SyncNetInstance.evaluate``).
    """
    n = n_windows(frames_bgr.shape[0], n_samples)
    return (windowed_lip_embeddings(model, frames_bgr, n, batch_size),
            windowed_audio_embeddings(model, mfcc, n, batch_size))


@torch.inference_mode()
def offset_distances(
    lip: torch.Tensor, aud: torch.Tensor, max_offset: int = MAX_OFFSET, first: int = 0
) -> np.ndarray:
    """(len(lip), 2*max_offset+1) distances, column k = offset k - max_offset, window by window as the original.

    Offset o pairs lip window i with audio window i - o (zero vector outside the clip): audio early by o frames.
    ``lip`` holds windows ``first``, ``first + 1``... and ``aud`` all of the clip's, so row k is window
    ``first + k``, the same numbers as row ``first + k`` of the distances of all the lip windows.
    """
    padded = nn.functional.pad(aud, (0, 0, max_offset, max_offset))
    span = 2 * max_offset + 1
    rows = [
        nn.functional.pairwise_distance(lip[[k]].repeat(span, 1), padded[first + k : first + k + span], eps=PDIST_EPS)
        for k in range(len(lip))
    ]
    if not rows:
        return np.zeros((0, span), dtype=np.float32)
    return torch.stack(rows).numpy()[:, ::-1].copy()


def check_inputs(inputs: EngineInput) -> tuple[np.ndarray, int]:
    """BGR frames (SyncNet was trained on cv2's channel order) and the number of windows to score."""
    crops = np.asarray(inputs.crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
        raise SyncNetInputError(
            f"face crops must be uint8 (T, {CROP_SIZE}, {CROP_SIZE}, 3), got {crops.dtype} {crops.shape}"
        )
    n = n_windows(len(crops), len(inputs.audio))
    if n == 0:
        raise SyncNetInputError(
            f"too short to score: {len(crops)} frames and {len(inputs.audio) / 16000:.2f} s of audio; "
            f"SyncNet needs at least {VIDEO_WINDOW + 1} frames (0.24 s) of both"
        )
    needed = (n - 1) * MFCC_PER_FRAME + MFCC_WINDOW
    if inputs.mfcc.ndim != 2 or inputs.mfcc.shape[0] != 13 or inputs.mfcc.shape[1] < needed:
        raise SyncNetInputError(f"MFCC must be (13, >= {needed}) for this audio, got {inputs.mfcc.shape}")
    return np.ascontiguousarray(crops[..., ::-1]), n


class SyncNetEngine:
    """Engine ``syncnet``: the original windowed evaluation, unchanged arithmetic (float32, on ``device``)."""

    name = "syncnet"

    def __init__(
        self,
        model: SyncNet,
        calibration: Calibration = Calibration(),
        source: str = "",
        device: torch.device | None = None,
    ):
        self.model = model.eval().to(device or default_device())
        self.calibration = calibration
        self.source = source  # which weights, from where (shown by the app)
        self.arithmetic = f"float32 on {where(next(self.model.parameters()).device)}"  # (shown by the app and CLI)

    def run(self, inputs: EngineInput) -> SyncResult:
        """Score ``inputs``: the lips of the windows of ``inputs.rows`` only, against the audio of all windows."""
        start = time.perf_counter()
        frames_bgr, n = check_inputs(inputs)
        lo, hi = row_span(inputs.rows, n)
        lip = windowed_lip_embeddings(self.model, frames_bgr[lo : hi + VIDEO_WINDOW - 1], hi - lo)
        aud = windowed_audio_embeddings(self.model, inputs.mfcc, n)
        dists = offset_distances(lip, aud, first=lo)
        return summarize(self.name, dists, self.calibration, time.perf_counter() - start)


def weights_layout() -> dict[str, tuple[int, ...]]:
    """The ``syncnet_v2.model`` keys and shapes, read off the network (no memory allocated)."""
    with torch.device("meta"):
        return {key: tuple(value.shape) for key, value in SyncNet().state_dict().items()}


def engine_weights(engine: str) -> tuple[dict[str, torch.Tensor], Calibration, str]:
    """The state dict both SyncNet engines share, ``engine``'s calibration from the card, and where the weights
    came from; EngineUnavailable (with the reason) if they cannot be had."""
    try:
        loaded = shared_weights(weights_layout())
    except WeightsError as error:
        raise EngineUnavailable(f"SyncNet weights: {error}") from error
    return loaded.state_dict, card.calibration(engine), loaded.describe()


def load_engine() -> SyncNetEngine:
    """The ``syncnet`` engine with the weights from :mod:`syncnet.weights`; EngineUnavailable if they cannot be had."""
    state, calibration, source = engine_weights(SyncNetEngine.name)
    return SyncNetEngine(build_model(state), calibration, source)
