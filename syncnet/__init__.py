"""FCN-SyncNet: is the sound in sync with the lips, by how many frames, and how sure are we?

```python
import syncnet

report = syncnet.analyze("clip.mp4", engines=["landmarks"])
print(report.to_dict())  # the JSON of `syncnet detect --json`
```
Every error a user can cause is a :class:`SyncNetError` with a one-line message (tree in :mod:`syncnet.errors`).
The heavy parts (torch, MediaPipe, PyAV) load on first use, so ``import syncnet`` stays quick.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from syncnet.errors import SyncNetError

# torch's OpenMP threads otherwise spin between parallel regions and take the cores that decoding and the face stage
# run on at the same time (README, "Whole pipeline").
# Read when torch loads, so it applies where syncnet is imported first; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"

__all__ = [
    "Report",
    "SyncNetError",
    "__version__",
    "analyze",
    "analyze_stream",
    "load_engines",
    "score",
]

# public name -> the module that defines it, imported on first access
_LAZY = {
    "analyze": "syncnet.api",
    "analyze_stream": "syncnet.api",
    "load_engines": "syncnet.api",
    "score": "syncnet.api",
    "Report": "syncnet.report",
}

if TYPE_CHECKING:
    from syncnet.api import analyze, analyze_stream, load_engines, score
    from syncnet.report import Report


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'syncnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
