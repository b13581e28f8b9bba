"""Find, verify and load the original SyncNet weights (``syncnet_v2.model``).

Order: ``SYNCNET_WEIGHTS`` (a local file) -> the Hugging Face cache -> ``hf_hub_download`` (with a progress bar)
-> :class:`WeightsUnavailable`. The Hub repo, revision, filename, expected size and sha256 come from
``syncnet/assets/card.json``; ``SYNCNET_WEIGHTS_REPO``, ``SYNCNET_WEIGHTS_REVISION`` and
``SYNCNET_WEIGHTS_FILENAME`` override them (the card's size and sha256 then no longer apply) and
``SYNCNET_WEIGHTS_SHA256`` pins a digest. Every file is read with ``torch.load(weights_only=True)`` and must have
the exact ``syncnet_v2.model`` keys and shapes; its sha256 is logged so that it can be pinned in the card.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import torch

from syncnet.card import CARD_PATH as CARD_CONFIG
from syncnet.errors import WeightsError
from syncnet.model import SyncNet
from syncnet.scoring import Calibration

log = logging.getLogger(__name__)

ENV_PATH = "SYNCNET_WEIGHTS"
ENV_REPO = "SYNCNET_WEIGHTS_REPO"
ENV_REVISION = "SYNCNET_WEIGHTS_REVISION"
ENV_FILENAME = "SYNCNET_WEIGHTS_FILENAME"
ENV_SHA256 = "SYNCNET_WEIGHTS_SHA256"
OPTIONAL_KEYS_SUFFIX = "num_batches_tracked"  # BatchNorm counters: unused in eval, absent in very old files
CONNECT_TIMEOUT_S = 3.0  # quick reachability probe before hf_hub_download (which retries for ~30 s)
FAILURE_MEMORY_S = 60.0  # engines loaded together share one failed attempt instead of each retrying


class WeightsUnavailable(WeightsError):
    """No weights file could be found or downloaded."""


class WeightsTruncated(WeightsError):
    """The file is shorter than the card says (an interrupted download)."""


class WeightsCorrupt(WeightsError):
    """The file is not a readable PyTorch state dict."""


class WeightsMismatch(WeightsError):
    """The state dict does not have the ``syncnet_v2.model`` keys and shapes."""


class WeightsChecksumError(WeightsError):
    """The file's sha256 differs from the pinned one."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights come from and what they must look like (``syncnet/assets/card.json``)."""

    repo: str
    revision: str
    filename: str
    size_bytes: int | None = None
    sha256: str | None = None
    calibration: dict[str, Calibration] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    path: Path
    source: str  # "SYNCNET_WEIGHTS", "cache" or "download"
    sha256: str

    def describe(self) -> str:
        return f"weights from {self.source}: {self.path}, sha256 {self.sha256[:12]}"


def load_spec(config: Path = CARD_CONFIG) -> WeightsSpec:
    """The card's spec, with the ``SYNCNET_WEIGHTS_*`` settings applied."""
    card = json.loads(config.read_text())
    spec = WeightsSpec(
        repo=card["hub_repo"],
        revision=card["revision"],
        filename=card["filename"],
        size_bytes=card.get("size_bytes"),
        sha256=card.get("sha256"),
        calibration={name: Calibration(**c) for name, c in card.get("calibration", {}).items()},
    )
    repo = os.environ.get(ENV_REPO, spec.repo)
    filename = os.environ.get(ENV_FILENAME, spec.filename)
    if (repo, filename) != (spec.repo, spec.filename):
        spec = replace(spec, repo=repo, filename=filename, size_bytes=None, sha256=None)
    spec = replace(spec, revision=os.environ.get(ENV_REVISION, spec.revision))
    if os.environ.get(ENV_SHA256):
        spec = replace(spec, sha256=os.environ[ENV_SHA256].lower())
    return spec


def calibration(engine: str, spec: WeightsSpec | None = None) -> Calibration:
    """The calibration the card stores for ``engine`` (identity when none is fitted)."""
    spec = spec or load_spec()
    return spec.calibration.get(engine, Calibration())


def locate(spec: WeightsSpec, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """Path of the weights file and where it was found; raises WeightsUnavailable with the reason."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    local = os.environ.get(ENV_PATH)
    if local:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{ENV_PATH}={local}: no such file")
        return path, ENV_PATH
    cached = try_to_load_from_cache(spec.repo, spec.filename, cache_dir=cache_dir, revision=spec.revision)
    if isinstance(cached, str):
        return Path(cached), "cache"
    where = f"{spec.repo}/{spec.filename}@{spec.revision}"
    if constants.is_offline_mode():
        raise WeightsUnavailable(f"{where} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise WeightsUnavailable(f"{where} is not cached and {host} cannot be reached: {error}") from error
    log.info("downloading SyncNet weights %s", where)
    try:
        return Path(hf_hub_download(spec.repo, spec.filename, revision=spec.revision, cache_dir=cache_dir)), "download"
    except Exception as error:  # network, auth, missing repo/file: all mean "cannot be had here"
        raise WeightsUnavailable(f"cannot download {where}: {type(error).__name__}: {error}") from error


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_layout(state: object) -> dict[str, torch.Tensor]:
    """The state dict if it has exactly SyncNet's keys and shapes (BatchNorm counters may be missing)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"expected a state dict of tensors, got {type(state).__name__}")
    expected = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items()}
    missing = sorted(k for k in expected.keys() - state.keys() if not k.endswith(OPTIONAL_KEYS_SUFFIX))
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(f"{k} {tuple(state[k].shape)} != {expected[k]}" for k in expected.keys() & state.keys()
                   if tuple(state[k].shape) != expected[k])
    problems = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("wrong shapes", wrong)) if items]
    if problems:
        raise WeightsMismatch("not a syncnet_v2.model state dict: " + "; ".join(problems))
    full = {k: torch.zeros((), dtype=torch.long) for k in expected if k.endswith(OPTIONAL_KEYS_SUFFIX)}
    full.update(state)
    return full


def read_weights(path: Path, spec: WeightsSpec | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """Verify ``path`` (size and sha256 when ``spec`` gives them, then keys and shapes); state dict and sha256."""
    size = path.stat().st_size
    if spec and spec.size_bytes is not None and size != spec.size_bytes:
        kind = WeightsTruncated if size < spec.size_bytes else WeightsCorrupt
        raise kind(f"{path}: {size:,} bytes, the card expects {spec.size_bytes:,}"
                   f"{' (truncated: an interrupted download?)' if size < spec.size_bytes else ''}")
    digest = sha256_of(path)
    if spec and spec.sha256 and digest != spec.sha256.lower():
        raise WeightsChecksumError(f"{path}: sha256 {digest} does not match the pinned {spec.sha256}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors all mean the same to the user
        raise WeightsCorrupt(f"{path}: not a readable PyTorch weights file (truncated or corrupt): "
                             f"{type(error).__name__}: {error}") from error
    return check_layout(state), digest


def load_weights(spec: WeightsSpec | None = None, cache_dir: str | Path | None = None) -> LoadedWeights:
    """Locate, verify and load the weights; raises a :class:`WeightsError` subclass saying what is wrong."""
    spec = spec or load_spec()
    path, source = locate(spec, cache_dir)
    # A local override is the user's own file: its layout is checked, size and digest only when pinned by env.
    checks = spec if source != ENV_PATH else replace(spec, size_bytes=None, sha256=os.environ.get(ENV_SHA256))
    state, digest = read_weights(path, checks)
    size = path.stat().st_size
    if checks.sha256:
        log.info("SyncNet weights from %s: %s (%d bytes, sha256 %s, as pinned)", source, path, size, digest)
    else:  # shown by default, so that the digest can be pinned
        log.warning("SyncNet weights from %s: %s (%d bytes, sha256 %s, not pinned: set it in syncnet/assets/card.json "
                    "or SYNCNET_WEIGHTS_SHA256)", source, path, size, digest)
    return LoadedWeights(state, path, source, digest)


_cache: dict[tuple, tuple[float, LoadedWeights | WeightsError]] = {}
_cache_lock = threading.Lock()


def shared_weights(spec: WeightsSpec | None = None) -> LoadedWeights:
    """:func:`load_weights`, once per process for both SyncNet engines (a failure is remembered for a minute)."""
    spec = spec or load_spec()
    key = (spec.repo, spec.revision, spec.filename, spec.size_bytes, spec.sha256, os.environ.get(ENV_PATH))
    with _cache_lock:
        when, outcome = _cache.get(key, (0.0, None))
        if outcome is None or (isinstance(outcome, WeightsError) and time.monotonic() - when > FAILURE_MEMORY_S):
            try:
                outcome = load_weights(spec)
            except WeightsError as error:
                outcome = error
            _cache[key] = (time.monotonic(), outcome)
    if isinstance(outcome, WeightsError):
        raise outcome
    return outcome


def engine_weights(engine: str) -> tuple[LoadedWeights, Calibration]:
    """The shared weights and ``engine``'s calibration; EngineUnavailable (with the reason) if they cannot be had."""
    from syncnet.engines import EngineUnavailable

    spec = load_spec()
    try:
        loaded = shared_weights(spec)
    except WeightsError as error:
        raise EngineUnavailable(f"SyncNet weights: {error}") from error
    return loaded, calibration(engine, spec)
