"""What the SyncNet engine benchmarks share: the weights they run and the empty lip series those engines take.

Light on purpose (no PyAV, no MediaPipe): `benchmarks/gpu.py run` imports it on machines that have neither.
"""
from __future__ import annotations

import os

import numpy as np

NO_LIPS = np.zeros((0, 1), np.float32)  # the SyncNet engines do not look at lip shapes


def load_state() -> tuple[dict, str]:
    """The weights (a state dict) and where they come from: ``SYNCNET_WEIGHTS`` if set, else the tests' synthetic
    ones."""
    if os.environ.get("SYNCNET_WEIGHTS"):
        from syncnet.model import weights_layout
        from syncnet.weights import load_spec, load_weights

        return load_weights(load_spec(), weights_layout()).state_dict, "SYNCNET_WEIGHTS"
    from tests.synthetic_weights import synthetic_state_dict

    return synthetic_state_dict(), "synthetic (test fixture recipe; the real syncnet_v2.model is not available here)"
