"""Find, verify and load the original SyncNet weights (``syncnet_v2.model``).

Where from: ``SYNCNET_WEIGHTS`` (a local file) overrides everything. Otherwise the card's sources
(``syncnet/assets/card.json``, ``"weights"``) are tried in order, first in the Hugging Face cache, then by
``hf_hub_download``; a source that is missing, unreachable or fails a check falls through to the next, and when
all fail one :class:`WeightsError` lists each source's reason. Every file from a source must have the card's sha256
(checked on every load, after every download), and its exact keys and shapes: the caller passes the expected
layout, so this module knows nothing of the network or of engines. Settings: ``SYNCNET_WEIGHTS_REPO``,
``SYNCNET_WEIGHTS_REVISION`` and ``SYNCNET_WEIGHTS_FILENAME`` replace the sources with one (the card's first for
what is not set); ``SYNCNET_WEIGHTS_SHA256`` pins another digest. Files are read with
``torch.load(weights_only=True)``: no code in the pickle runs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from syncnet.card import CARD_PATH, load_card
from syncnet.errors import WeightsError

log = logging.getLogger(__name__)

ENV_PATH = "SYNCNET_WEIGHTS"
ENV_REPO = "SYNCNET_WEIGHTS_REPO"
ENV_REVISION = "SYNCNET_WEIGHTS_REVISION"
ENV_FILENAME = "SYNCNET_WEIGHTS_FILENAME"
ENV_SHA256 = "SYNCNET_WEIGHTS_SHA256"
OVERRIDE_HINT = (f"to use another file set {ENV_PATH}=PATH, or {ENV_REPO}, {ENV_REVISION}, {ENV_FILENAME} "
                 f"and {ENV_SHA256}")
OPTIONAL_KEYS_SUFFIX = "num_batches_tracked"  # BatchNorm counters: unused in eval, absent in very old files
CONNECT_TIMEOUT_S = 3.0  # quick reachability probe before hf_hub_download (which retries for ~30 s)
FAILURE_MEMORY_S = 60.0  # engines loaded together share one failed attempt instead of each retrying

Layout = Mapping[str, tuple[int, ...]]  # state-dict key -> tensor shape


class WeightsUnavailable(WeightsError):
    """No weights file could be found or downloaded."""


class WeightsTruncated(WeightsError):
    """The file is shorter than the card says (an interrupted download)."""


class WeightsCorrupt(WeightsError):
    """The file is not a readable PyTorch state dict."""


class WeightsMismatch(WeightsError):
    """The state dict does not have the expected keys and shapes."""


class WeightsChecksumError(WeightsError):
    """The file's sha256 differs from the pinned one."""


@dataclass(frozen=True)
class WeightsSource:
    """One place on the Hugging Face Hub that holds the file."""

    repo: str
    revision: str
    filename: str

    def __str__(self) -> str:
        return f"{self.repo}/{self.filename}@{self.revision}"


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights may come from (tried in order) and what every copy must be."""

    sources: tuple[WeightsSource, ...]
    sha256: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, torch.Tensor]
    path: Path
    origin: str  # "SYNCNET_WEIGHTS", "cache" or "download"
    source: WeightsSource | None  # None for SYNCNET_WEIGHTS
    sha256: str
    pinned: bool  # the digest was checked against a pinned one

    def describe(self) -> str:
        """Which file, from where, and its digest (the app's engines panel and the CLI show this)."""
        digest = f"sha256 {self.sha256[:12]}, {'as pinned' if self.pinned else 'not pinned'}"
        if self.source is None:
            return f"{ENV_PATH}={self.path}, {digest}"
        where = "from the Hugging Face cache" if self.origin == "cache" else "downloaded"
        return f"{self.source}, {where}, {digest}"


def load_spec(path: Path = CARD_PATH) -> WeightsSpec:
    """The card's sources and digest, with the ``SYNCNET_WEIGHTS_*`` settings applied."""
    card = load_card(path)["weights"]
    sources = tuple(WeightsSource(s["repo"], s["revision"], s["filename"]) for s in card["sources"])
    settings = {key: os.environ[env] for key, env in (("repo", ENV_REPO), ("revision", ENV_REVISION),
                                                       ("filename", ENV_FILENAME)) if os.environ.get(env)}
    if settings:
        first = sources[0]
        sources = (WeightsSource(settings.get("repo", first.repo), settings.get("revision", first.revision),
                                 settings.get("filename", first.filename)),)
    sha256 = os.environ.get(ENV_SHA256, "").lower() or card["sha256"]
    size = card.get("size_bytes") if sha256 == card["sha256"] else None  # the card's size is its own file's
    return WeightsSpec(sources, sha256, size)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_layout(state: object, layout: Layout) -> dict[str, torch.Tensor]:
    """The state dict if it has exactly ``layout``'s keys and shapes (BatchNorm counters may be missing)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatch(f"expected a state dict of tensors, got {type(state).__name__}")
    expected = {k: tuple(shape) for k, shape in layout.items()}
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


def read_weights(
    path: Path, layout: Layout, sha256: str | None = None, size_bytes: int | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """Check ``path`` (size and sha256 when given, then keys and shapes); its state dict and sha256.

    Messages do not name the file: the caller says which source it came from.
    """
    size = path.stat().st_size
    if size_bytes is not None and size != size_bytes:
        kind = WeightsTruncated if size < size_bytes else WeightsCorrupt
        raise kind(f"{size:,} bytes, the card expects {size_bytes:,}"
                   f"{' (truncated: an interrupted download?)' if size < size_bytes else ''}")
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise WeightsChecksumError(f"sha256 {digest} is not the pinned {sha256.lower()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and EOF errors all mean the same to the user
        raise WeightsCorrupt(f"not a readable PyTorch weights file (truncated or corrupt): "
                             f"{type(error).__name__}: {error}") from error
    return check_layout(state, layout), digest


def load_weights(spec: WeightsSpec, layout: Layout, cache_dir: str | Path | None = None) -> LoadedWeights:
    """``SYNCNET_WEIGHTS``, else the first source whose file checks out; a :class:`WeightsError` saying why not."""
    local = os.environ.get(ENV_PATH)
    if local:
        return _load_local(Path(local).expanduser(), spec, layout)
    failures: dict[WeightsSource, WeightsError] = {}
    not_cached = []
    for source in spec.sources:  # every cached copy before any download
        path = _cached(source, cache_dir)
        if path is None:
            not_cached.append(source)
            continue
        try:
            return _load_source(path, source, "cache", spec, layout)
        except WeightsError as error:
            failures[source] = _fell_through(source, error)
    blocker = _download_blocker() if not_cached else None
    for source in not_cached:
        try:
            if blocker:
                raise WeightsUnavailable(blocker)
            path = _download(source, cache_dir)
            return _load_source(path, source, "download", spec, layout)
        except WeightsError as error:
            failures[source] = _fell_through(source, error)
    raise _all_failed([(source, failures[source]) for source in spec.sources])


def _load_local(path: Path, spec: WeightsSpec, layout: Layout) -> LoadedWeights:
    """The user's own file: keys and shapes checked, its digest only when ``SYNCNET_WEIGHTS_SHA256`` pins one."""
    if not path.is_file():
        raise WeightsUnavailable(f"{ENV_PATH}={path}: no such file")
    pinned = os.environ.get(ENV_SHA256, "").lower() or None
    try:
        state, digest = read_weights(path, layout, pinned)
    except WeightsError as error:
        hint = f"; {OVERRIDE_HINT}" if isinstance(error, WeightsChecksumError) else ""
        raise type(error)(f"{ENV_PATH}={path}: {error}{hint}") from error
    if not pinned:
        original = "the original syncnet_v2.model" if digest == spec.sha256 else f"not the card's {spec.sha256}"
        log.warning("SyncNet weights from %s=%s: sha256 %s (%s; not checked: %s is not set)",
                    ENV_PATH, path, digest, original, ENV_SHA256)
    return LoadedWeights(state, path, ENV_PATH, None, digest, pinned is not None)


def _load_source(path: Path, source: WeightsSource, origin: str, spec: WeightsSpec, layout: Layout) -> LoadedWeights:
    state, digest = read_weights(path, layout, spec.sha256, spec.size_bytes)
    log.info("SyncNet weights from %s (%s): %s, sha256 %s as pinned", source, origin, path, digest)
    return LoadedWeights(state, path, origin, source, digest, True)


def _cached(source: WeightsSource, cache_dir: str | Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source.repo, source.filename, cache_dir=cache_dir, revision=source.revision)
    return Path(found) if isinstance(found, str) else None


def _download_blocker() -> str | None:
    """Why no download can be tried (offline, or the Hub unreachable), checked once for all sources."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return "not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        return f"not cached and {host} cannot be reached: {error}"
    return None


def _download(source: WeightsSource, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import hf_hub_download

    log.info("downloading SyncNet weights %s", source)
    try:
        return Path(hf_hub_download(source.repo, source.filename, revision=source.revision, cache_dir=cache_dir))
    except Exception as error:  # network, auth, missing repo/file: all mean "cannot be had here"
        raise WeightsUnavailable(f"cannot download: {type(error).__name__}: {error}") from error


def _fell_through(source: WeightsSource, error: WeightsError) -> WeightsError:
    """Log why ``source`` was passed over: a warning for a bad file, information for one that is not there."""
    level = logging.INFO if isinstance(error, WeightsUnavailable) else logging.WARNING
    log.log(level, "SyncNet weights: %s: %s", source, error)
    return error


def _all_failed(failures: list[tuple[WeightsSource, WeightsError]]) -> WeightsError:
    """One error listing each source's reason (sources with the same reason together).

    Its class is the failures' class when they agree (all offline, all the wrong digest...), else
    :class:`WeightsUnavailable`.
    """
    by_reason: dict[str, list[str]] = {}
    for source, error in failures:
        by_reason.setdefault(str(error), []).append(str(source))
    message = "; ".join(f"{', '.join(sources)}: {reason}" for reason, sources in by_reason.items())
    if any(isinstance(error, WeightsChecksumError) for _, error in failures):
        message += f"; {OVERRIDE_HINT}"
    kinds = {type(error) for _, error in failures}
    kind = kinds.pop() if len(kinds) == 1 else WeightsUnavailable
    return kind(message if len(failures) == 1 else f"none of the {len(failures)} sources could be used: {message}")


_cache: dict[tuple, tuple[float, LoadedWeights | WeightsError]] = {}
_cache_lock = threading.Lock()


def shared_weights(layout: Layout, spec: WeightsSpec | None = None) -> LoadedWeights:
    """:func:`load_weights`, once per process for both SyncNet engines (a failure is remembered for a minute)."""
    spec = spec or load_spec()
    key = (spec, frozenset(layout.items()), os.environ.get(ENV_PATH), os.environ.get(ENV_SHA256))
    with _cache_lock:
        when, outcome = _cache.get(key, (0.0, None))
        if outcome is None or (isinstance(outcome, WeightsError) and time.monotonic() - when > FAILURE_MEMORY_S):
            try:
                outcome = load_weights(spec, layout)
            except WeightsError as error:
                outcome = error
            _cache[key] = (time.monotonic(), outcome)
    if isinstance(outcome, WeightsError):
        raise outcome
    return outcome
