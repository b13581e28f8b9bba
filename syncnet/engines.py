"""The engines that score audio-visual sync, behind one interface, and the registry that loads them."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from syncnet.constants import LIP_WINDOW_FRAMES, SAMPLES_PER_FRAME
from syncnet.errors import BadArgument, EngineInputError, SyncNetError
from syncnet.scoring import SyncResult

log = logging.getLogger(__name__)

# name -> "module:function" returning a ready Engine, or raising EngineUnavailable with the reason.
ENGINE_FACTORIES = {
    "syncnet": "syncnet.model:load_engine",
    "fcn": "syncnet.fcn:load_engine",
    "landmarks": "syncnet.landmarks:load_engine",
}
ENGINE_NAMES = tuple(ENGINE_FACTORIES)


class EngineUnavailable(SyncNetError):
    """An engine cannot run here (e.g. its weights cannot be had); the message says why."""


@dataclass
class EngineInput:
    """Everything an engine may look at, for one face segment.

    Video frame i goes with audio samples ``SAMPLES_PER_FRAME * i`` to ``SAMPLES_PER_FRAME * (i + 1)``
    and MFCC columns ``4 * i`` to ``4 * i + 3``.

    ``rows = (lo, hi)`` asks for the distance rows of windows ``lo..hi-1`` only (indices from the input's first
    frame; None: all of them), so that an engine can skip the lips of context frames; the audio is still the whole
    input's, as a row pairs its lips with audio up to ``MAX_OFFSET`` windows away. See :class:`Engine`.
    """

    crops: np.ndarray  # uint8 (T, 224, 224, 3) RGB face crops in SyncNet's convention
    audio: np.ndarray  # float32 (N,) 16 kHz mono in [-1, 1]
    mfcc: np.ndarray  # (13, 4T) MFCC as SyncNet was trained on
    lips: np.ndarray  # float32 (T, K) lip-shape series (see syncnet.lips.lip_shapes)
    blendshapes: np.ndarray | None = None  # float32 (T, 52) MediaPipe face blendshape scores, when available
    rows: tuple[int, int] | None = None  # [lo, hi): the distance rows wanted; None: all


class Engine(Protocol):
    """Scores one :class:`EngineInput`.

    ``run`` returns a SyncResult whose ``window_dists`` has one row per window i of the ``n`` it scores (lip frames
    i..i+4; frame i for the landmarks engine). With ``inputs.rows = (lo, hi)`` it has exactly the rows
    ``[max(lo, 0), min(hi, n))`` (:func:`row_span`; a range that leaves none is an EngineInputError): row k is window
    ``max(lo, 0) + k``, computed by the same operations on the same data as that row of the full run (equal to it,
    but for the last bits where a backend's kernel sums in another order for another batch size). Offset, LSE-D, LSE-C
    and frame confidences are those of the returned rows (:func:`syncnet.scoring.summarize`).
    """

    name: str

    def run(self, inputs: EngineInput) -> SyncResult: ...


def n_windows(n_frames: int, n_samples: int) -> int:
    """Number of 5-frame windows the original evaluation scores: ``min(frames, samples // 640) - 5``."""
    return max(0, min(n_frames, n_samples // SAMPLES_PER_FRAME) - LIP_WINDOW_FRAMES)


def row_span(rows: tuple[int, int] | None, n: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` an engine scoring ``n`` windows returns for ``EngineInput.rows``: all for None, else
    ``rows`` clipped to ``[0, n)``; EngineInputError when that leaves none (an empty or inverted range, or one
    outside the input)."""
    if rows is None:
        return 0, n
    lo, hi = max(int(rows[0]), 0), min(int(rows[1]), n)
    if lo >= hi:
        raise EngineInputError(f"rows [{rows[0]}, {rows[1]}) select none of this input's {n} windows")
    return lo, hi


@dataclass(frozen=True)
class Skipped:
    engine: str
    reason: str


def load_engine(name: str) -> Engine:
    """Load one engine by name; raises EngineUnavailable when it cannot run here."""
    if name not in ENGINE_FACTORIES:
        raise BadArgument(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)}")
    module_name, function_name = ENGINE_FACTORIES[name].split(":")
    factory = getattr(importlib.import_module(module_name), function_name)
    return factory()


def load_engines(names: Sequence[str] | None = None) -> tuple[list[Engine], list[Skipped]]:
    """Load the named engines (all by default); those that cannot run are returned as Skipped with the reason."""
    engines: list[Engine] = []
    skipped: list[Skipped] = []
    for name in names or ENGINE_NAMES:
        try:
            engines.append(load_engine(name))
        except EngineUnavailable as error:
            log.warning("engine %s skipped: %s", name, error)
            skipped.append(Skipped(name, str(error)))
    return engines, skipped
