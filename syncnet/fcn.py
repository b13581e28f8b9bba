"""FCN-SyncNet: SyncNet's own weights run fully convolutionally over a whole clip.

- Lip stream: the first layer (a Conv3d, the only one that looks across time: 5 frames) runs as a 2-D convolution
  over each window's 5 frames stacked as 15 channels (its weights reshaped: the same products, summed in another
  order; in bfloat16 1.16-1.23x faster than the Conv3d on an AVX512-BF16 CPU, where oneDNN's 3-D kernel ran below
  the 2-D one); the stacks are built a chunk of windows at a time (``CHUNK_WINDOWS``). Every later layer sees one
  frame, so it runs as a 2-D convolution on all windows at once, and the fully connected layers become 1x1
  convolutions. One embedding per 5-frame window, identical to the original.
- Audio stream: the 20-step MFCC windows, batched in one pass (exact), or the whole MFCC sequence in one pass
  (``audio="sequence"``: windows then see their real neighbours instead of zero padding at their edges).
- BatchNorm is folded into the preceding convolution at load; every ReLU that precedes a max-pool runs after it
  (the two commute exactly, and the pooled map is a quarter of the size); the distance matrix (all windows x 31
  offsets) comes from one matrix product.
- Precision: ``fp32`` computes what the original computes (to float32 rounding); ``bf16`` runs both streams in
  bfloat16 (the uint8 pixels are exact in bfloat16; weights and activations are rounded to 8 significant bits,
  sums are kept in float32) and is the default where the device has fast bfloat16 (AVX512-BF16/AMX CPUs, CUDA);
  ``int8`` is ``bf16`` with the lip stream's first layer (54% of its FLOPs) run by oneDNN in int8 (the uint8 pixels
  exact, weights rounded to int8 per output channel, sums exact in int32: :class:`Int8StackedConv`), the default on
  CPUs with VNNI, where that layer runs about twice as fast. Both keep the float32 reference's offsets on every clip
  of the benchmark set and its LSE-C / LSE-D within ``TOLERANCES`` (measured by ``benchmarks/precision.py``).
  ``SYNCNET_FCN_PRECISION=fp32|bf16|int8`` chooses.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _triple

from syncnet.engines import row_span
from syncnet.errors import BadArgument
from syncnet.gpu import device as default_device
from syncnet.gpu import where
from syncnet.model import (
    EMBED_DIM,
    MAX_OFFSET,
    MFCC_PER_FRAME,
    MFCC_WINDOW,
    PDIST_EPS,
    VIDEO_WINDOW,
    SyncNet,
    build_model,
    check_inputs,
    n_windows,
)
from syncnet.scoring import Calibration, SyncResult, summarize

if TYPE_CHECKING:
    from syncnet.engines import EngineInput

# Lip windows per pass: bounds memory. Per window, the stacked input holds 15x224x224 values and the first activation
# 96x109x109 (3.0 + 4.6 MB in fp32, half in bf16): 61 MB a pass in fp32. 8 was faster than 16 or 32 (cache).
CHUNK_WINDOWS = 8
INT8_MAX = 127  # int8 weights are symmetric: -127..127
AudioMode = Literal["windows", "sequence"]
Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "int8")
PRECISION_ENV = "SYNCNET_FCN_PRECISION"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}  # int8: only the first layer
ARITHMETIC = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8 first layer + bfloat16"}  # in words


@dataclass(frozen=True)
class Tolerance:
    """How far a reduced-precision ``fcn`` may be from the float32 reference on one clip, besides the same offset.

    Both bounds are fractions of the reference's LSE-D (the scale of the distances: LSE-C is a difference of two
    distances, so its rounding error scales with them, not with LSE-C itself, which can be near 0).
    """

    lse_d: float  # |LSE-D - reference LSE-D| <= lse_d * reference LSE-D
    lse_c: float  # |LSE-C - reference LSE-C| <= lse_c * reference LSE-D


# About twice the worst of benchmarks/precision.py on the 54 clips (1.11e-3 and 9.5e-6; README, "Engine speed").
BF16_TOLERANCE = Tolerance(lse_d=2e-3, lse_c=2e-5)
# About twice the worst of benchmarks/precision.py on the 54 clips (3.27e-3 and 8.1e-6; README, "Engine speed").
INT8_TOLERANCE = Tolerance(lse_d=7e-3, lse_c=2e-5)
TOLERANCES = {"bf16": BF16_TOLERANCE, "int8": INT8_TOLERANCE}


def fast_bf16(dev: torch.device) -> bool:
    """Whether ``dev`` computes bfloat16 natively (CUDA with bf16, or a CPU with AVX512-BF16 or AMX)."""
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def int8_runs(dev: torch.device) -> bool:
    """Whether ``dev`` can run the int8 first layer: a CPU, through oneDNN's quantized convolution."""
    return dev.type == "cpu" and torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise")


def fast_int8(dev: torch.device) -> bool:
    """Whether ``dev`` runs the int8 first layer fast: a CPU with VNNI (AVX512-VNNI or AVX-VNNI)."""
    return int8_runs(dev) and torch.cpu._is_vnni_supported()


def default_precision(dev: torch.device) -> Precision:
    """``SYNCNET_FCN_PRECISION`` if set, else int8 on a CPU with VNNI, bf16 where ``dev`` computes it natively, else
    fp32."""
    wanted = os.environ.get(PRECISION_ENV, "").strip().lower()
    if wanted and wanted not in PRECISIONS:
        raise BadArgument(f"{PRECISION_ENV}={wanted!r} is not a precision; use one of {', '.join(PRECISIONS)}")
    if wanted:
        return wanted
    return "int8" if fast_int8(dev) else "bf16" if fast_bf16(dev) else "fp32"


def fold_bn(
    weight: torch.Tensor, bias: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(layer(x))`` for a conv/linear layer followed by an eval-mode BatchNorm."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.reshape(shape), (bias - bn.running_mean) * scale + bn.bias


def _folded(seq: nn.Sequential) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    """(layer, folded weight, folded bias) for each conv/linear of ``seq``; BN folded where one follows."""
    out = []
    mods = list(seq)
    for i, m in enumerate(mods):
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            w, b = m.weight.detach(), m.bias.detach()
            if i + 1 < len(mods) and isinstance(mods[i + 1], nn.modules.batchnorm._BatchNorm):
                w, b = fold_bn(w, b, mods[i + 1])
            out.append((m, w.contiguous(), b.contiguous()))
    return out


def _conv2d(src: nn.Module, w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    """A Conv2d holding ``w``/``b``: a time-1 Conv3d or a Linear (as a 1x1 conv) becomes 2-D."""
    if isinstance(src, nn.Linear):
        w = w[:, :, None, None]
        conv = nn.Conv2d(w.shape[1], w.shape[0], 1)
    elif isinstance(src, nn.Conv3d):
        assert src.kernel_size[0] == 1 and src.stride[0] == 1 and src.padding[0] == 0
        w = w[:, :, 0]
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], src.stride[1:], src.padding[1:])
    else:
        conv = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, src.stride, src.padding)
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(b)
    return conv


def _stacked_conv(src: nn.Conv3d, w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    """The lip stream's first layer (a Conv3d spanning ``kt`` frames) as a Conv2d over the ``kt`` frames stacked as
    channels, frame-major (channel ``t * 3 + c``, as :func:`stack_windows` builds them): the same products, summed
    in another order."""
    assert src.stride[0] == 1 and src.padding[0] == 0
    out, cin, kt, kh, kw = w.shape
    conv = nn.Conv2d(kt * cin, out, (kh, kw), src.stride[1:], src.padding[1:])
    conv.weight.data.copy_(w.transpose(1, 2).reshape(out, kt * cin, kh, kw))
    conv.bias.data.copy_(b)
    return conv


class Int8StackedConv(nn.Module):
    """A stacked first layer (:func:`_stacked_conv`) in int8 through oneDNN: the uint8 pixels go in exactly (scale 1,
    zero point 0), the weights are rounded to int8 with one scale per output channel (``weight * scale``), products
    are summed in int32, and the output comes back in bfloat16. The same layer with its weights rounded to 8 bits
    instead of bfloat16's 8 significant bits; ``benchmarks/precision.py`` measures it like every precision."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        weight = conv.weight.detach().float().cpu()
        # plain attributes, not buffers: Module.to() must not cast them
        self.scale = weight.abs().amax(dim=(1, 2, 3)).clamp_min(torch.finfo(torch.float32).tiny) / INT8_MAX
        self.weight = torch.round(weight / self.scale[:, None, None, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        self.bias = conv.bias.detach().float().cpu()
        self._zero_points = torch.zeros(len(self.scale), dtype=torch.int64)
        self._geometry = ([*conv.stride], [*conv.padding], [*conv.dilation], conv.groups)
        self._packed = torch.ops.onednn.qconv_prepack(self.weight, self.scale, 1.0, 0, *self._geometry, None)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) uint8 channels-last pixels -> (n, out, h, w) bfloat16."""
        stride, padding, dilation, groups = self._geometry
        return torch.ops.onednn.qconv2d_pointwise(
            pixels, 1.0, 0, self._packed, self.scale, self._zero_points, self.bias, stride, padding, dilation, groups,
            1.0, 0, torch.bfloat16, "none", [], ""
        )


def stack_windows(frames: torch.Tensor, n: int) -> torch.Tensor:
    """(n, 5*C, H, W) channels-last: window i's frames i..i+4 stacked frame-major, from (n+4, H, W, C) frames."""
    stacked = torch.cat([frames[t : t + n] for t in range(VIDEO_WINDOW)], dim=3)  # n, H, W, 5*C
    return stacked.permute(0, 3, 1, 2)


def _pool2d(pool: nn.Module) -> nn.MaxPool2d:
    """A MaxPool2d doing what ``pool`` does on each frame (a MaxPool3d must pool one frame at a time)."""
    if isinstance(pool, nn.MaxPool2d):
        return pool
    (kt, *k), (st, *s), (pt, *p) = (_triple(v) for v in (pool.kernel_size, pool.stride, pool.padding))
    assert kt == 1 and st == 1 and pt == 0
    return nn.MaxPool2d(k, s, p)


def _is_identity(pool: nn.Module) -> bool:
    """A 1x1 max-pool with stride 1 and no padding (the audio stream has one) passes its input through."""
    return all(set(_triple(v)) == {want} for v, want in ((pool.kernel_size, 1), (pool.stride, 1), (pool.padding, 0)))


def _pool_before_relu(layers: list[nn.Module]) -> list[nn.Module]:
    """Each ReLU followed by a max-pool moved after it: ``pool(relu(x)) == relu(pool(x))`` exactly, on less data."""
    out = list(layers)
    for i in range(len(out) - 1):
        if isinstance(out[i], nn.ReLU) and isinstance(out[i + 1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _frame_stream(cnn: nn.Sequential, fc: nn.Sequential, skip_first: bool) -> nn.Sequential:
    """The per-frame part of a stream as 2-D layers: conv(+BN folded)+ReLU and pools, then FC as 1x1 convs.

    ``skip_first`` leaves out the first conv and its BN (the lip stream's 3-D conv), keeping its ReLU.
    """
    folded = {id(m): (w, b) for m, w, b in _folded(cnn) + _folded(fc)}
    layers: list[nn.Module] = []
    mods = list(cnn)[2:] if skip_first else list(cnn)
    for m in mods:
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            layers.append(_conv2d(m, *folded[id(m)]))
        elif isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)) and not _is_identity(m):
            layers.append(_pool2d(m))
        elif isinstance(m, nn.ReLU):
            layers.append(nn.ReLU(inplace=True))
    for m in fc:
        if isinstance(m, nn.Linear):
            layers += [_conv2d(m, *folded[id(m)]), nn.ReLU(inplace=True)]
    return nn.Sequential(*_pool_before_relu(layers[:-1]))  # no ReLU after the last FC


class FCNSyncNet(nn.Module):
    """SyncNet run over a whole clip; built from a loaded :class:`SyncNet` (BatchNorm folded).

    ``precision`` (``fp32`` or ``bf16``; default :func:`default_precision`) and ``device`` (default
    :func:`syncnet.gpu.device`) are fixed at construction; embeddings come back as float32 on the CPU.
    """

    def __init__(
        self,
        net: SyncNet,
        channels_last: bool = True,
        precision: Precision | None = None,
        device: torch.device | None = None,
    ):
        super().__init__()
        net = net.eval()
        self.device = device or default_device()
        self.precision = precision or default_precision(self.device)
        if self.precision not in PRECISIONS:
            raise BadArgument(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.precision == "int8" and not int8_runs(self.device):
            raise BadArgument(f"precision int8 runs on a CPU through oneDNN, not on {self.device.type}")
        self.dtype = DTYPES[self.precision]
        self.lip_conv1 = _stacked_conv(*_folded(net.netcnnlip)[0])
        self.int8_conv1 = Int8StackedConv(self.lip_conv1) if self.precision == "int8" else None
        self.lip_frames = _frame_stream(net.netcnnlip, net.netfclip, skip_first=True)
        self.audio = _frame_stream(net.netcnnaud, net.netfcaud, skip_first=False)
        self.channels_last = channels_last
        self.eval()
        self.to(self.device, self.dtype)
        if channels_last:
            self.lip_conv1.to(memory_format=torch.channels_last)
            self.lip_frames.to(memory_format=torch.channels_last)
            self.audio.to(memory_format=torch.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def embed_lips(self, frames_bgr: np.ndarray, n: int, chunk: int = CHUNK_WINDOWS) -> torch.Tensor:
        """(n, 1024) lip embeddings of windows 0..n-1 (frames i..i+4) from uint8 (T,224,224,3) BGR frames."""
        out = []
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            clip = torch.from_numpy(np.ascontiguousarray(frames_bgr[start : stop + VIDEO_WINDOW - 1]))
            if self.int8_conv1 is not None:
                y = self.int8_conv1(stack_windows(clip, stop - start))  # uint8 pixels in, channels-last
            else:
                x = stack_windows(clip.to(self.device).to(self.dtype), stop - start)
                y = self.lip_conv1(x if self.channels_last else x.contiguous())  # one map per window
            out.append(self.lip_frames(self._layout(y)).flatten(1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, EMBED_DIM)

    @torch.inference_mode()
    def embed_audio(self, mfcc: np.ndarray, n: int, mode: AudioMode = "windows") -> torch.Tensor:
        """(n, 1024) audio embeddings of windows 0..n-1 (MFCC steps 4i..4i+19)."""
        if n == 0:
            return torch.zeros(0, EMBED_DIM)
        cc = torch.from_numpy(np.asarray(mfcc, dtype=np.float32)).to(self.device, self.dtype)
        if mode == "windows":
            x = cc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)[:, :n].permute(1, 0, 2)[:, None]  # n,1,13,20
            return self.audio(self._layout(x)).flatten(1).float().cpu()
        if mode == "sequence":
            x = cc[:, : (n - 1) * MFCC_PER_FRAME + MFCC_WINDOW][None, None]  # 1,1,13,steps
            return self.audio(self._layout(x))[0, :, 0, :n].T.float().cpu()
        raise ValueError(f"unknown audio mode {mode!r}: use 'windows' or 'sequence'")

    def embed(
        self, frames_bgr: np.ndarray, mfcc: np.ndarray, n_samples: int, audio: AudioMode = "windows"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lip and audio embeddings (W, 1024) for the original evaluation's W windows."""
        n = n_windows(frames_bgr.shape[0], n_samples)
        return self.embed_lips(frames_bgr, n), self.embed_audio(mfcc, n, audio)


@torch.inference_mode()
def distance_matrix(lip: torch.Tensor, aud: torch.Tensor, max_offset: int = MAX_OFFSET, first: int = 0) -> np.ndarray:
    """(W, 2*max_offset+1) distances in one batched op; column k = offset k - max_offset (lip i vs audio i - o).

    ``lip`` holds the W windows ``first..first+W-1`` and ``aud`` all of the clip's: row k is window ``first + k``.
    ``||l - a + eps||`` as torch's pairwise_distance, expanded around one (W x W+2*max_offset) float64 matmul
    with the audio windows those rows pair with.
    """
    n, dim = lip.shape
    lip64 = lip.double()
    padded = F.pad(aud.double(), (0, 0, max_offset, max_offset))[first : first + n + 2 * max_offset]
    sq = (
        (lip64 * lip64).sum(1)[:, None] + (padded * padded).sum(1)[None, :] - 2 * lip64 @ padded.T
        + 2 * PDIST_EPS * (lip64.sum(1)[:, None] - padded.sum(1)[None, :]) + dim * PDIST_EPS**2
    )
    idx = torch.arange(n)[:, None] + (2 * max_offset - torch.arange(2 * max_offset + 1))[None, :]
    return torch.gather(sq, 1, idx).clamp_min_(0).sqrt_().float().numpy()


class FCNEngine:
    """Engine ``fcn``: SyncNet's weights over the whole clip in one pass (exact windowed audio by default)."""

    name = "fcn"

    def __init__(
        self, net: FCNSyncNet, calibration: Calibration = Calibration(), source: str = "", audio: AudioMode = "windows"
    ):
        self.net = net
        self.calibration = calibration
        self.source = source  # which weights, from where (shown by the app)
        self.arithmetic = f"{ARITHMETIC[net.precision]} on {where(net.device)}"  # (shown by the app and CLI)
        self.audio = audio

    def run(self, inputs: EngineInput) -> SyncResult:
        """Score ``inputs``: the lips of the windows of ``inputs.rows`` only, against the audio of all windows."""
        start = time.perf_counter()
        frames_bgr, n = check_inputs(inputs)
        lo, hi = row_span(inputs.rows, n)
        lip = self.net.embed_lips(frames_bgr[lo : hi + VIDEO_WINDOW - 1], hi - lo)
        aud = self.net.embed_audio(inputs.mfcc, n, self.audio)
        dists = distance_matrix(lip, aud, first=lo)
        return summarize(self.name, dists, self.calibration, time.perf_counter() - start)


def load_engine() -> FCNEngine:
    """The ``fcn`` engine with the weights from :mod:`syncnet.weights`; EngineUnavailable if they cannot be had."""
    from syncnet.model import engine_weights

    state, calibration, source = engine_weights(FCNEngine.name)
    return FCNEngine(FCNSyncNet(build_model(state)), calibration, source)
