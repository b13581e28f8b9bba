"""Fixtures shared by the test modules: the synthetic SyncNet weights, and engines loaded with them.

The real app is launched by ``tests.app_server.running_app`` (a context manager, so that each module can set the
environment it needs first); test media are made with ``tests.media_tools.ffmpeg``; the test data live under
``tests/paths.py``'s folders.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from syncnet import pipeline
from tests.synthetic_weights import write_weights


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory) -> Path:
    """A ``syncnet_v2.model`` with the original layout and deterministic values, written once per test run."""
    return write_weights(tmp_path_factory.mktemp("weights") / "syncnet_v2.model")


@pytest.fixture
def synthetic_engines(monkeypatch, synthetic_weights) -> Path:
    """SYNCNET_WEIGHTS points at the synthetic weights; engines load afresh with them and are forgotten after."""
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
    pipeline.unload_engines()
    yield synthetic_weights
    pipeline.unload_engines()
