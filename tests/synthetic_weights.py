"""The fixture's deterministic synthetic SyncNet weights (recipe of tests/data/syncnet_ref/README.md).

The real ``syncnet_v2.model`` is not available here; these weights have its exact layout, so the original code's
outputs on them (``expected*.npz``) pin down every computation.
"""
import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from tests.paths import SYNCNET_REF as DATA

SEED = 20261124
DIGEST = "1e399506da04a3b58aeaf4574a2e4a3b124609e4da8012457c713e063f87e0c4"


def key_shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((DATA / "keys.json").read_text()).items()}


@functools.lru_cache(maxsize=1)
def synthetic_arrays() -> dict[str, np.ndarray]:
    """One default_rng(SEED) consumed in sorted key order, drawn in float64, cast to float32."""
    rng = np.random.default_rng(SEED)
    out = {}
    for key, shape in sorted(key_shapes().items()):
        if key.endswith("num_batches_tracked"):
            out[key] = np.zeros((), dtype=np.int64)
            continue
        if key.endswith("running_mean"):
            v = 0.1 * rng.standard_normal(shape)
        elif key.endswith("running_var"):
            v = 1 + 0.25 * np.abs(rng.standard_normal(shape))
        elif key.endswith("bias"):
            v = 0.1 * rng.standard_normal(shape)
        elif key.endswith("weight") and len(shape) >= 2:
            v = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith("weight"):
            v = 1 + 0.1 * rng.standard_normal(shape)
        else:
            raise KeyError(key)
        out[key] = v.astype(np.float32)
    return out


def digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def synthetic_state_dict() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.copy()) for k, v in synthetic_arrays().items()}


def write_weights(path: Path) -> Path:
    """Save the synthetic weights as the real file is saved: ``torch.save(dict_of_tensors)``."""
    torch.save(synthetic_state_dict(), path)
    return path
