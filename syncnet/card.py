"""The engines' configuration that travels inside the package (``syncnet/assets/card.json``): where the SyncNet
weights come from and what they must look like, and each engine's calibration. No torch: any engine may read it.

The top-level ``weights_card/`` is the Hub model card that documents this file.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from syncnet.scoring import Calibration

CARD_PATH = Path(__file__).parent / "assets" / "card.json"


@lru_cache(maxsize=4)
def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def load_card(path: Path = CARD_PATH) -> dict[str, Any]:
    """The card's configuration as a dict (read once per process; callers must not change it)."""
    return _read(Path(path))


def calibration(engine: str, path: Path = CARD_PATH) -> Calibration:
    """The calibration the card stores for ``engine`` (identity when none is fitted)."""
    fitted = load_card(path).get("calibration", {}).get(engine)
    return Calibration(**fitted) if fitted else Calibration()


def no_signal_threshold(engine: str, frames: int | None = None, path: Path = CARD_PATH) -> float:
    """The confidence below which ``engine`` finds no sync signal, for a result over ``frames`` frames.

    Where the card gives the engine a reference length (``no_signal_reference_frames``), the threshold is the one
    stored for that length, scaled by sqrt(reference / frames): a chance correlation's peak shrinks as 1/sqrt(n).
    0 when the card stores no threshold for the engine (never no signal).
    """
    card = load_card(path)
    threshold = float(card.get("no_signal_threshold", {}).get(engine, 0.0))
    reference = card.get("no_signal_reference_frames", {}).get(engine)
    if reference and frames:
        threshold *= math.sqrt(reference / frames)
    return threshold
