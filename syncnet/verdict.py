"""Is it in sync, out of sync, or is there nothing to judge? The verdict rule, tolerances, and the words for it.

```
confidence < the engine's no-signal threshold   -> "no_signal"    the sound does not follow these lips (or no speech;
                                                                   under SURE_S: too short to tell)
-late_ms <= calibrated offset (ms) <= early_ms  -> "in_sync"      within what viewers notice
calibrated offset > early_ms                    -> "audio_early"  delay the audio
calibrated offset < -late_ms                    -> "audio_late"   advance the audio
```
Offsets follow DESIGN.md's sign convention (+ = the audio is early). Tolerances are the broadcast recommendations'
windows, stored as two magnitudes: how early and how late the audio may be (ms). Thresholds are per engine, in the
card (``syncnet/assets/card.json``, ``no_signal_threshold``), measured by ``benchmarks/thresholds.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

from syncnet.card import no_signal_threshold
from syncnet.constants import FPS, MS_PER_FRAME
from syncnet.errors import BadArgument
from syncnet.scoring import SyncResult

IN_SYNC, AUDIO_EARLY, AUDIO_LATE, NO_SIGNAL = "in_sync", "audio_early", "audio_late", "no_signal"
VERDICTS = (IN_SYNC, AUDIO_EARLY, AUDIO_LATE, NO_SIGNAL)
FIX_STEP_MS = 10.0  # offsets are said, and corrected, to the nearest 10 ms (sub-frame estimates are not finer)
# Below this length a genuine clip often falls under the no-signal threshold for want of evidence (benchmarks/
# accuracy.py, "offset said" by excerpt length), so its no_signal is said as "too short to tell", not as a mismatch.
SURE_S = 3.0
NOT_FOLLOWING = "this sound does not follow these lips"
TOO_SHORT = f"too short to tell whether this sound follows these lips, which takes {SURE_S:g} s or more of speech"


@dataclass(frozen=True)
class Tolerance:
    """How early (``early_ms``) and how late (``late_ms``) the audio may be and still count as in sync."""

    early_ms: float
    late_ms: float
    name: str = ""

    def allows(self, offset_ms: float) -> bool:
        return -self.late_ms <= offset_ms <= self.early_ms

    def as_list(self) -> list[float]:
        """``[early, late]``: the JSON's ``tolerance_ms``."""
        return [float(self.early_ms), float(self.late_ms)]

    def describe(self) -> str:
        label = PRESET_LABELS.get(self.name, "custom")
        return f"{label}: audio early by at most {self.early_ms:g} ms, late by at most {self.late_ms:g} ms"


PRESETS = {
    "itu": Tolerance(45.0, 125.0, "itu"),
    "itu-accept": Tolerance(90.0, 185.0, "itu-accept"),
    "ebu-r37": Tolerance(40.0, 60.0, "ebu-r37"),
    "atsc": Tolerance(15.0, 45.0, "atsc"),
}
PRESET_LABELS = {
    "itu": "ITU-R BT.1359 detectability",
    "itu-accept": "ITU-R BT.1359 acceptability",
    "ebu-r37": "EBU R37",
    "atsc": "ATSC IS-191",
}
DEFAULT_TOLERANCE = PRESETS["itu"]
MAX_TOLERANCE_MS = 600.0  # the engines search +-15 frames; a wider window could never be left
TOLERANCE_HELP = (
    f"how far out of sync still counts as in sync: {', '.join(PRESETS)} (default itu: ITU-R BT.1359 detectability, "
    "audio early by at most 45 ms, late by at most 125 ms) or EARLY_MS,LATE_MS (e.g. 40,60)"
)


def parse_tolerance(choice: str | Tolerance | None) -> Tolerance:
    """A preset name, ``"EARLY_MS,LATE_MS"`` (the late side may be written negative, as in "+45,-125"), a Tolerance,
    or None (the default). Raises BadArgument with a one-line message."""
    if choice is None:
        return DEFAULT_TOLERANCE
    if isinstance(choice, Tolerance):
        return choice
    text = str(choice).strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    parts = text.split(",")
    expected = f"choose {', '.join(PRESETS)} or EARLY_MS,LATE_MS (e.g. 40,60)"
    if len(parts) != 2:
        raise BadArgument(f"unknown tolerance {choice!r}: {expected}")
    try:
        early, late = float(parts[0]), abs(float(parts[1]))
    except ValueError:
        raise BadArgument(f"tolerance {choice!r} is not two numbers: {expected}") from None
    if not (0.0 <= early <= MAX_TOLERANCE_MS and late <= MAX_TOLERANCE_MS):
        raise BadArgument(
            f"tolerance {choice!r}: EARLY_MS must be 0-{MAX_TOLERANCE_MS:g} and LATE_MS within {MAX_TOLERANCE_MS:g}"
        )
    return Tolerance(early, late)


def judge(offset_ms: float, confidence: float, threshold: float, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The verdict for a calibrated offset (ms, + = audio early) and a confidence against an engine's threshold."""
    if not confidence >= threshold:  # NaN confidence is no signal either
        return NO_SIGNAL
    if tolerance.allows(offset_ms):
        return IN_SYNC
    return AUDIO_EARLY if offset_ms > 0 else AUDIO_LATE


def verdict_of(result: SyncResult, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    """The verdict for one engine's result, with that engine's threshold from the card."""
    threshold = no_signal_threshold(result.engine, len(result.window_dists))
    return judge(result.calibrated_offset_ms, result.confidence, threshold, tolerance)


def has_signal(result: SyncResult) -> bool:
    """Whether the result's verdict is anything but ``no_signal`` (which no tolerance changes): its offset counts."""
    return verdict_of(result) != NO_SIGNAL


def said_ms(offset_ms: float) -> float:
    """The offset as it is said and corrected: to the nearest FIX_STEP_MS."""
    return round(offset_ms / FIX_STEP_MS) * FIX_STEP_MS


def describe(verdict: str, offset_ms: float, frames: int | None = None) -> str:
    """The verdict in words, with the fix for an offset outside the tolerance (+ = the audio is early); `frames`:
    the length judged (a no_signal shorter than SURE_S is said as too short to tell)."""
    ms = abs(said_ms(offset_ms))
    if verdict == NO_SIGNAL:
        return f"no sync signal: {no_signal_reason(frames)}"
    if verdict == IN_SYNC:
        if ms == 0:
            return "in sync"
        side = "early" if offset_ms > 0 else "late"
        return f"in sync: {ms:.0f} ms {side} is below what viewers notice"
    if verdict == AUDIO_EARLY:
        return f"audio is {ms:.0f} ms early: delay it by {ms:.0f} ms"
    if verdict == AUDIO_LATE:
        return f"audio is {ms:.0f} ms late: advance it by {ms:.0f} ms"
    raise ValueError(f"not a verdict: {verdict!r}")  # a bug, not user input


def describe_result(result: SyncResult, tolerance: Tolerance = DEFAULT_TOLERANCE) -> str:
    return describe(verdict_of(result, tolerance), result.calibrated_offset_ms, len(result.window_dists))


def no_signal_reason(frames: int | None = None) -> str:
    """Why there is no sync signal over `frames` frames (None: length not known, or long enough)."""
    return TOO_SHORT if frames is not None and frames < SURE_S * FPS else NOT_FOLLOWING


def fix_frames(verdict: str, offset_ms: float) -> float | None:
    """How far (frames, + = delay) a corrected copy shifts the audio: the said offset when the audio is out of sync;
    0 when it is in sync (the copy leaves the audio where it is); None for no signal (no offset to trust)."""
    if verdict == NO_SIGNAL:
        return None
    if verdict == IN_SYNC:
        return 0.0
    return said_ms(offset_ms) / MS_PER_FRAME
