"""The one call everything goes through: clip -> face track -> crops, lips -> MFCC -> each engine, timed.

Engines are loaded once per process and shared by every later call (the app, the CLI, the HLS monitor).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from syncnet import engines as registry
from syncnet.audio import mfcc
from syncnet.engines import ENGINE_NAMES, Engine, EngineInput, Skipped
from syncnet.faces import crop_faces, lip_shapes, mouth_crops, track_face
from syncnet.hls import stream_windows
from syncnet.constants import CROP_PROTOCOLS, SAMPLES_PER_FRAME
from syncnet.errors import BadArgument, SilentAudioError, SyncNetError
from syncnet.media import Media, load_media
from syncnet.netguard import check_url
from syncnet.plots import sample_frames
from syncnet.report import Report

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)

FACES_DONE = 0.45  # progress fraction reached when the face stage ends; engines share the rest
SILENT_PEAK = 1e-4  # a soundtrack whose samples all stay below this (-80 dBFS) is silent: no offset to measure

SKIPPED_RETRY_S = 60.0  # an engine that could not load (e.g. the Hub unreachable) is tried again after this long
INTERNAL_ERROR = "internal error (a bug, logged with its details): {kind}"

_lock = threading.Lock()
_loaded: dict[str, tuple[float, Engine | Skipped]] = {}


def resolve_engines(choice: str | Sequence[str] | None) -> list[str]:
    """Engine names from a CLI/UI choice: None or "all" means every engine; unknown names are refused."""
    if choice is None or choice == "all":
        return list(ENGINE_NAMES)
    names = [choice] if isinstance(choice, str) else list(choice)
    if not names:
        raise BadArgument("choose at least one engine")
    for name in names:
        if name not in ENGINE_NAMES:
            raise BadArgument(f"unknown engine {name!r}; choose from {', '.join(ENGINE_NAMES)} or all")
    return list(dict.fromkeys(names))


def get_engines(choice: str | Sequence[str] | None = None) -> tuple[list[Engine], list[Skipped]]:
    """The chosen engines, loaded on first use and cached; those that cannot run come back as Skipped."""
    names = resolve_engines(choice)
    with _lock:
        for name in names:
            when, outcome = _loaded.get(name, (0.0, None))
            if outcome is None or (isinstance(outcome, Skipped) and time.monotonic() - when > SKIPPED_RETRY_S):
                _loaded[name] = (time.monotonic(), _load(name))
        outcomes = [_loaded[n][1] for n in names]
    engines = [o for o in outcomes if not isinstance(o, Skipped)]
    skipped = [o for o in outcomes if isinstance(o, Skipped)]
    return engines, skipped


def unload_engines() -> None:
    """Forget the loaded engines: the next call loads them again (e.g. after SYNCNET_WEIGHTS changed)."""
    with _lock:
        _loaded.clear()


def _load(name: str) -> Engine | Skipped:
    try:
        loaded, skipped = registry.load_engines([name])
    except ImportError as error:  # an engine whose module or dependency is not installed
        log.warning("engine %s skipped: %s", name, error)
        return Skipped(name, f"not installed: {error}")
    return loaded[0] if loaded else skipped[0]


def engine_status(choice: str | Sequence[str] | None = None) -> list[tuple[str, bool, str]]:
    """(name, loaded, where its weights come from or why it is off) for each engine."""
    engines, skipped = get_engines(choice)
    status = {e.name: (e.name, True, getattr(e, "source", "") or "") for e in engines}
    status.update({s.engine: (s.engine, False, s.reason) for s in skipped})
    return [status[n] for n in resolve_engines(choice)]


def analyze_file(
    path: str | Path,
    engine_names: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    max_duration_s: float | None = None,
    max_bytes: int | None = None,
    crop: str = "track",
) -> Report:
    """Decode a file (within the size and duration limits, the media module's defaults if None) and analyse it."""
    if crop not in CROP_PROTOCOLS:
        raise BadArgument(f"unknown crop protocol {crop!r}; choose from {', '.join(CROP_PROTOCOLS)}")
    if crop != "track":  # wired in by the streaming pipeline (issue 11) with syncnet.protocols (issue 14)
        raise BadArgument(f"the {crop} protocol is not available yet")
    _report(progress, 0.0, "decoding")
    limits = {k: v for k, v in (("max_duration_s", max_duration_s), ("max_bytes", max_bytes)) if v is not None}
    started = time.perf_counter()
    media = load_media(path, **limits)
    return analyze_media(media, engine_names, progress, decode_s=time.perf_counter() - started)


def analyze_media(
    media: Media,
    engine_names: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    decode_s: float = 0.0,
) -> Report:
    """Run the face stage once and every chosen engine on the speaking face's segment."""
    if not (abs(media.audio) >= SILENT_PEAK).any():
        raise SilentAudioError("the soundtrack is silent: there is no sound to sync the lips with")
    engines, skipped = get_engines(engine_names)
    timing = {"decode": decode_s}

    _report(progress, 0.05, "finding the face")
    started = time.perf_counter()
    track = track_face(media.frames, media.audio)
    crops = crop_faces(media.frames, track)
    mouths = mouth_crops(media.frames, track)
    lips = lip_shapes(track)
    timing["faces"] = time.perf_counter() - started

    _report(progress, FACES_DONE, "audio features")
    started = time.perf_counter()
    audio = media.audio[track.start * SAMPLES_PER_FRAME : track.stop * SAMPLES_PER_FRAME]
    inputs = EngineInput(crops=crops, audio=audio, mfcc=mfcc(audio), lips=lips)
    timing["mfcc"] = time.perf_counter() - started

    results = []
    for i, engine in enumerate(engines):
        _report(progress, FACES_DONE + (1 - FACES_DONE) * i / len(engines), f"engine {engine.name}")
        started = time.perf_counter()
        result = engine.run(inputs)
        result.time_s = time.perf_counter() - started
        timing[engine.name] = result.time_s
        results.append(result)
    _report(progress, 1.0, "done")

    return Report(
        input=media.source,
        duration_s=media.duration_s,
        frames=len(media.frames),
        results=results,
        timing_s=timing,
        skipped=skipped,
        segment=(track.start, track.stop),
        face_summary=track.describe(),
        crops=sample_frames(crops),
        mouths=sample_frames(mouths),
    )


@dataclass
class WindowReport:
    """One window of a stream: its report, or the one-line reason it has none (e.g. no face in it)."""

    t_start: float
    t_end: float
    report: Report | None
    error: str | None = None
    silent: bool = False  # the window had no sound at all: its verdict is no_signal


def analyze_stream(
    url: str,
    engine_names: str | Sequence[str] | None = None,
    *,
    window_s: float,
    max_seconds: float | None = None,
    allow_private: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[WindowReport]:
    """Follow an HLS stream window by window; a window that cannot be analysed does not end the stream.

    A refused URL fails before the engines load; an unreadable playlist or a limit ends it with an HlsError.
    """
    check_url(url, allow_private=allow_private)
    get_engines(engine_names)  # loaded before the first window arrives; unknown names refused
    windows = stream_windows(url, window_s=window_s, max_seconds=max_seconds, allow_private=allow_private, stop=stop)
    try:
        for window in windows:
            try:
                yield WindowReport(window.t_start, window.t_end, analyze_media(window.media, engine_names))
            except SilentAudioError as silence:  # a pause in the programme: no speech, no sync signal
                yield WindowReport(window.t_start, window.t_end, None, str(silence), silent=True)
            except SyncNetError as failure:
                yield WindowReport(window.t_start, window.t_end, None, str(failure))
            except Exception as bug:  # a bug must not end the monitor: say so, log it, go on with the next window
                log.exception("internal error in the stream window %.2f-%.2f s", window.t_start, window.t_end)
                yield WindowReport(window.t_start, window.t_end, None, INTERNAL_ERROR.format(kind=type(bug).__name__))
    finally:
        windows.close()  # closes the stream's connections


def _report(progress: Progress | None, fraction: float, what: str) -> None:
    if progress is not None:
        progress(fraction, what)
