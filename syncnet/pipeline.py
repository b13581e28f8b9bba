"""The one call everything goes through: chunks of a clip -> face tracks -> crops, lips -> MFCC -> each engine.

Files, webcam clips and HLS windows all go through `_analyze`: a thread decodes chunks, a thread follows the faces
in them and cuts pieces of tracks (5 s each), and the calling thread runs the engines on each piece as it comes, so
the stages overlap and memory is bounded by the chunks and pieces in flight, not by the length of the video. Every
face track of at least 1 s is scored on its own. Where faces share the screen, each piece is judged: the face whose
lips follow the sound best speaks, and the SyncNet engines score only it (the landmarks engine, which costs next to
nothing, scores every face). The top-level results pool the distance rows of the speaking faces (the distances
averaged over all their windows, so a stretch weighs by its length).

The landmarks engine gets lip shapes without MediaPipe's blendshapes: with them it was no better on the validation
folds (1 s / 2 s excerpts 66.4 / 90.7% against 67.7 / 92.7%) and lost two fit clips' whole-clip offsets
(`benchmarks/RESULTS_landmarks_variants.md`, `RESULTS_accuracy.md`).

Engines are loaded once per process, in the background of the first analysis, and shared by every later call
(the app, the CLI, the HLS monitor).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import numpy as np

from syncnet import engines as registry
from syncnet.audio import mfcc
from syncnet.constants import CROP_PROTOCOLS, CROP_SIZE, FPS, MIN_TRACK_S, SAMPLES_PER_FRAME
from syncnet.engines import ENGINE_NAMES, Engine, EngineInput, Skipped
from syncnet.errors import BadArgument, SilentAudioError, SyncNetError
from syncnet.faces import PIECE_CONTEXT, PIECE_FRAMES, FaceTracker, Piece
from syncnet.gpu import gpu_task
from syncnet.hls import stream_windows
from syncnet.landmarker import LANDMARKERS
from syncnet.media import Media, MediaChunk, media_chunks, open_media
from syncnet.netguard import check_url
from syncnet.plots import sample_frames
from syncnet.protocols import full_frame_crops
from syncnet.report import Drift, Report, TrackReport, WindowResult, drift_ms_per_minute
from syncnet.scoring import OFFSETS, SyncResult, summarize
from syncnet.verdict import has_signal

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)
T = TypeVar("T")
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
    """(name, loaded, where its weights come from and how it computes, or why it is off) for each engine."""
    engines, skipped = get_engines(choice)
    status = {e.name: (e.name, True, "; ".join(filter(None, (getattr(e, key, "") for key in ("source", "arithmetic")))))
              for e in engines}
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
    window_s: float | None = None,
) -> Report:
    """Decode a file chunk by chunk (within the size and duration limits, the media module's defaults if None) and
    score every face track in it; ``window_s`` adds results per window of that many seconds and the drift."""
    _check_options(crop, window_s)
    _report(progress, 0.0, "decoding")
    limits = {k: v for k, v in (("max_duration_s", max_duration_s), ("max_bytes", max_bytes)) if v is not None}
    stream = open_media(path, **limits)
    expected = stream.info.duration_s * FPS if stream.info.duration_s else None
    try:
        return _analyze(stream, stream.info.path, engine_names, progress, expected, crop=crop, window_s=window_s)
    finally:
        stream.close()  # the file is closed at once, also when the analysis stopped early


def analyze_media(
    media: Media,
    engine_names: str | Sequence[str] | None = None,
    progress: Progress | None = None,
    *,
    crop: str = "track",
    window_s: float | None = None,
) -> Report:
    """The same analysis on a clip already decoded (an HLS window)."""
    _check_options(crop, window_s)
    return _analyze(media_chunks(media), media.source, engine_names, progress, media.num_frames, crop=crop,
                    window_s=window_s)


def _check_options(crop: str, window_s: float | None) -> None:
    if crop not in CROP_PROTOCOLS:
        raise BadArgument(f"unknown crop protocol {crop!r}; choose from {', '.join(CROP_PROTOCOLS)}")
    if window_s is not None and not window_s >= MIN_TRACK_S:
        raise BadArgument(f"the window must be at least {MIN_TRACK_S:.0f} s long")


def _analyze(
    chunks: Iterable[MediaChunk],
    source: str,
    engine_names: str | Sequence[str] | None,
    progress: Progress | None,
    expected_frames: float | None,
    *,
    crop: str,
    window_s: float | None,
) -> Report:
    """Decode, faces and engines overlapped: a decoding thread and a face thread feed the engines in this one,
    while a fourth thread loads the engines (they are first needed when the first piece of a track is cut)."""
    names = resolve_engines(engine_names)
    loading = _load_in_background(names)
    started = time.perf_counter()
    timing = _Timing()
    needs_crops = any(name in CROP_ENGINES for name in names)
    full_frame = crop == "full-frame"
    scorer = _Scorer(loading, timing, full_frame)
    sound = _SoundCheck()
    stride, landmarkers = (1, 1) if LANDMARKS_ENGINE in names else (FACE_STRIDE, LANDMARKERS)
    with (  # decoding starts while the landmarkers load
        _in_background(timing.timed("decode", chunks), CHUNK_QUEUE, "decode") as decoded,
        FaceTracker(
            crops=needs_crops and not full_frame, stride=stride, landmarkers=landmarkers  # no blendshapes: see top
        ) as tracker,
    ):
        work = _face_pieces(decoded, tracker, timing, sound, full_frame and needs_crops)
        with _in_background(work, PIECE_QUEUE, "faces", counts=lambda entry: entry[1] is not None) as pieces:
            for done, piece in pieces:
                if piece is not None:
                    scorer.score(piece)
                elif expected_frames:
                    what = f"faces and engines: {done / FPS:.0f} s of {expected_frames / FPS:.0f} s"
                    _report(progress, min(0.99, done / expected_frames), what)
    timing.seconds["total"] = time.perf_counter() - started
    _report(progress, 1.0, "done")
    return _build_report(source, tracker, scorer, timing, scorer.skipped, crop, window_s)


def _load_in_background(names: list[str]) -> Future[tuple[list[Engine], list[Skipped]]]:
    """`get_engines(names)` in a thread of its own: its result (or error) comes from the future."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="syncnet-load")
    try:
        return pool.submit(get_engines, names)
    finally:
        pool.shutdown(wait=False)  # the thread ends when the engines are loaded


CHUNK_QUEUE = 2  # decoded chunks waiting for the face stage (1 s each)
PIECE_QUEUE = 2  # pieces waiting for the engines (5 s each at most; progress ticks do not count)
CROP_ENGINES = ("syncnet", "fcn")  # the engines that look at face crops
LANDMARKS_ENGINE = "landmarks"  # the engine that reads the lips' landmarks on every frame
# Without the landmarks engine, faces are looked for on every FACE_STRIDE-th frame (by LANDMARKERS landmarkers taking
# turns) and interpolated between: against one landmarker on every frame, the SyncNet crop boxes (median-filtered
# over 13 frames) move by 0.24% of their side in the median clip (benchmarks/face_stride.py --stride 3
# --landmarkers 2, on the 52 clips of ../shared/clips).
FACE_STRIDE = 3
MIN_ROWS = int(MIN_TRACK_S * FPS) // 2  # fewer distance rows than this (0.5 s) give no result
# Engines that standardise over their whole input (landmarks) see consecutive pieces of a track joined up to this
# many kept frames (the crop engines look at each window on its own and get the pieces as they come).
JOINED_PIECE_FRAMES = int(20 * FPS)


class _Timing:
    """Seconds spent per stage, summed over the threads' work (the stages overlap in time)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed(self, stage: str, items: Iterable[T]) -> Iterator[T]:
        iterator = iter(items)
        try:
            while True:
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - started)
                yield item
        finally:
            if hasattr(iterator, "close"):
                iterator.close()


class _SoundCheck:
    """Whether any sample so far reaches SILENT_PEAK."""

    def __init__(self):
        self.heard = False

    def listen(self, audio: np.ndarray) -> None:
        self.heard = self.heard or bool((np.abs(audio) >= SILENT_PEAK).any())


def _face_pieces(
    chunks: Generator[MediaChunk, None, None], tracker: FaceTracker, timing: _Timing, sound: _SoundCheck,
    full_frame: bool
) -> Iterator[tuple[int, Piece | None]]:
    """(frames done, a piece ready for the engines, or None for progress only), chunk by chunk; `chunks` is closed
    as soon as this stops reading it, however it stops (its decoding thread then ends)."""
    frames = _FullFrameTrack() if full_frame else None
    done = 0
    with closing(chunks):
        for chunk in chunks:
            started = time.perf_counter()
            sound.listen(chunk.audio)
            ready = tracker.add(chunk)
            if frames is not None:
                ready += frames.add(chunk)
            timing.add("faces", time.perf_counter() - started)
            done = chunk.stop
            yield done, None
            for piece in ready:
                yield done, piece
    if not sound.heard:
        raise SilentAudioError("the soundtrack is silent: there is no sound to sync the lips with")
    started = time.perf_counter()
    ready = tracker.finish() + (frames.finish() if frames is not None else [])
    timing.add("faces", time.perf_counter() - started)
    for piece in ready:
        yield done, piece


class _FullFrameTrack:
    """Wav2Lip's LRS protocol: every frame resized to 224x224 (no face detection), scored in pieces as a track."""

    def __init__(self):
        self.crops: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.base = 0  # frame of crops[0]
        self.keep_start = 0  # first kept frame of the next piece
        self.count = 0

    def add(self, chunk: MediaChunk) -> list[Piece]:
        self.crops += list(full_frame_crops(np.stack(chunk.frames)))
        self.audio += np.split(chunk.audio, len(chunk.frames))
        self.count = chunk.stop
        ready = []
        while self.keep_start + PIECE_FRAMES + PIECE_CONTEXT <= self.count:
            ready.append(self._piece(self.keep_start + PIECE_FRAMES))
        return ready

    def finish(self) -> list[Piece]:
        if self.keep_start >= self.count:
            return []
        piece = self._piece(self.count)
        piece.last = True
        return [piece]

    def _piece(self, keep_stop: int) -> Piece:
        start, stop = max(0, self.keep_start - PIECE_CONTEXT), min(self.count, keep_stop + PIECE_CONTEXT)
        lo, hi = start - self.base, stop - self.base
        piece = Piece(FULL_FRAME_TRACK, start, stop, (self.keep_start, keep_stop), np.concatenate(self.audio[lo:hi]),
                      np.zeros((stop - start, 0), np.float32), np.stack(self.crops[lo:hi]), None)
        self.keep_start = keep_stop
        drop = max(0, keep_stop - PIECE_CONTEXT) - self.base
        del self.crops[:drop], self.audio[:drop]
        self.base += drop
        return piece


FULL_FRAME_TRACK = -1  # the track number of the full-frame "track"


def join_pieces(pieces: Sequence[Piece]) -> Piece:
    """Consecutive pieces of one track as one piece: frames from the first's start to the last's stop, kept from
    the first's kept start to the last's kept stop (each later piece adds the frames after its predecessor's)."""
    first = pieces[0]
    skips = [0] + [before.stop - after.start for before, after in pairwise(pieces)]

    def joined(field: str, per_frame: int = 1) -> np.ndarray | None:
        parts = [getattr(p, field) for p in pieces]
        if any(part is None for part in parts):
            return None
        return np.concatenate([part[skip * per_frame :] for part, skip in zip(parts, skips, strict=True)])

    return Piece(
        track=first.track,
        start=first.start,
        stop=pieces[-1].stop,
        keep=(first.keep[0], pieces[-1].keep[1]),
        audio=joined("audio", SAMPLES_PER_FRAME),
        lips=joined("lips"),
        crops=joined("crops"),
        blendshapes=joined("blendshapes"),
        last=pieces[-1].last,
    )


class _Scorer:
    """Runs the engines on each piece and keeps, per (track, engine), the distance rows of the frames it keeps.

    The crop engines get every piece as it comes, asked for the rows of its kept frames only, unless another face
    on screen with it speaks (`Piece.speaking`); the other engines get all of a track's pieces, joined (see
    JOINED_PIECE_FRAMES)."""

    def __init__(self, loading: Future[tuple[list[Engine], list[Skipped]]], timing: _Timing, full_frame: bool):
        self.loading = loading
        self.timing = timing
        self.full_frame = full_frame
        self.rows: dict[tuple[int, str], list[tuple[np.ndarray, np.ndarray]]] = {}  # (frames, dists) per piece
        self.pending: dict[int, list[Piece]] = {}  # per track: pieces (without crops) not yet joined
        self.judged: dict[int, list[tuple[int, int, bool]]] = {}  # per track: (first, stop, speaking) of pieces
        self.speaking_rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per engine, in frame order (`settle`)

    @property
    def engines(self) -> list[Engine]:
        return self.loading.result()[0]

    @property
    def skipped(self) -> list[Skipped]:
        return self.loading.result()[1]

    def engines_for(self, piece: Piece) -> list[Engine]:
        """Full-frame protocol: the crop engines see the full frames, the landmarks engine the face tracks."""
        if not self.full_frame:
            return self.engines
        wanted = piece.track == FULL_FRAME_TRACK
        return [e for e in self.engines if (e.name in CROP_ENGINES) == wanted]

    def score(self, piece: Piece) -> None:
        engines = self.engines_for(piece)
        crop_engines = [e for e in engines if e.name in CROP_ENGINES]
        if piece.speaking is not None:
            self.judged.setdefault(piece.track, []).append((*piece.keep, piece.speaking))
        if crop_engines and piece.speaking is not False and self._crop_rows_kept(piece):
            self._run(piece, crop_engines)  # (a piece where another face on screen speaks is left to that face)
        others = [e for e in engines if e.name not in CROP_ENGINES]
        if others and (joined := self._join(piece)) is not None:
            self._run(joined, others)

    @staticmethod
    def _crop_rows_kept(piece: Piece) -> bool:
        """Whether a SyncNet engine has a row for a kept frame (a track's last frames are in no window of their
        own)."""
        return piece.keep[0] - piece.start < registry.n_windows(piece.stop - piece.start, len(piece.audio))

    def _join(self, piece: Piece) -> Piece | None:
        """The track's pending pieces joined, once they keep JOINED_PIECE_FRAMES frames or the track has ended."""
        pending = self.pending.setdefault(piece.track, [])
        pending.append(replace(piece, crops=None))
        if not piece.last and pending[-1].keep[1] - pending[0].keep[0] < JOINED_PIECE_FRAMES:
            return None
        del self.pending[piece.track]
        return join_pieces(pending)

    def _run(self, piece: Piece, engines: list[Engine]) -> None:
        started = time.perf_counter()
        features = mfcc(piece.audio) if any(e.name in CROP_ENGINES for e in engines) else np.zeros((13, 0))
        self.timing.add("mfcc", time.perf_counter() - started)
        crops = piece.crops if piece.crops is not None else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        first_row = piece.keep[0] - piece.start
        inputs = EngineInput(crops=crops, audio=piece.audio, mfcc=features, lips=piece.lips,
                             blendshapes=piece.blendshapes, rows=(first_row, piece.keep[1] - piece.start))
        for engine in engines:
            started = time.perf_counter()
            dists = engine.run(inputs).window_dists
            self.timing.add(engine.name, time.perf_counter() - started)
            frames = piece.start + first_row + np.arange(len(dists))
            kept = (frames >= piece.keep[0]) & (frames < piece.keep[1])
            self.rows.setdefault((piece.track, engine.name), []).append((frames[kept], dists[kept]))

    def settle(self, track_speaks: dict[int, bool]) -> None:
        """Gather each engine's rows of the speaking faces, once all pieces are scored: the frames of pieces judged
        speaking, and of pieces not judged whose track speaks over its whole length (`track_speaks`; tracks not in
        it, such as the full-frame one, speak)."""
        for engine in self.engines:
            parts = []
            for (track, name), pieces in self.rows.items():
                if name == engine.name:
                    speaks = self._speaks(track, track_speaks.get(track, True))
                    for frames, dists in pieces:
                        mask = speaks(frames)
                        parts.append((frames[mask], dists[mask]))
            self.speaking_rows[engine.name] = _in_frame_order(parts)

    def _speaks(self, track: int, whole_track: bool) -> Callable[[np.ndarray], np.ndarray]:
        """Whether the track's face speaks at each of some frames: its pieces' judgement, else `whole_track`."""
        spans = np.array(self.judged.get(track, []), dtype=int).reshape(-1, 3)  # first, stop, speaking (in order)
        starts, stops, flags = spans.T

        def speaks(frames: np.ndarray) -> np.ndarray:
            out = np.full(len(frames), whole_track)
            at = np.searchsorted(stops, frames, side="right")  # the first judged piece ending after each frame
            inside = at < len(spans)
            inside[inside] &= starts[at[inside]] <= frames[inside]
            out[inside] = flags[at[inside]] == 1
            return out

        return speaks

    def result(
        self, engine: Engine, tracks: Sequence[int], span: tuple[int, int] | None = None, min_rows: int = MIN_ROWS
    ) -> Scored | None:
        """The engine's result over the rows of these tracks (within frames [span) if given) and the frame of each
        row; None without enough rows."""
        rows = _in_frame_order([part for t in tracks for part in self.rows.get((t, engine.name), [])])
        return self._summarize(engine, rows, span, min_rows)

    def results(self, tracks: Sequence[int], span: tuple[int, int] | None = None, min_rows: int = MIN_ROWS
                ) -> list[Scored]:
        return [scored for e in self.engines if (scored := self.result(e, tracks, span, min_rows)) is not None]

    def speaking_results(self, span: tuple[int, int] | None = None, min_rows: int = MIN_ROWS) -> list[Scored]:
        """Results over the rows of the speaking faces (see `settle`, called first) within frames [span)."""
        return [scored for e in self.engines
                if (scored := self._summarize(e, self.speaking_rows[e.name], span, min_rows)) is not None]

    def _summarize(self, engine: Engine, rows: tuple[np.ndarray, np.ndarray], span: tuple[int, int] | None,
                   min_rows: int) -> Scored | None:
        """The result over rows in frame order (those within frames [span) if given); None without enough."""
        frames, dists = rows
        if span is not None:
            lo, hi = np.searchsorted(frames, span)
            frames, dists = frames[lo:hi], dists[lo:hi]
        if len(frames) < min_rows:
            return None
        result = summarize(engine.name, dists, engine.calibration, self.timing.seconds.get(engine.name, 0.0))
        return result, frames


def _in_frame_order(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(frames, dists) rows of several parts as one, sorted by frame (rows of one frame keep their order)."""
    frames = np.concatenate([f for f, _ in parts]) if parts else np.zeros(0, int)
    dists = np.concatenate([d for _, d in parts]) if parts else np.zeros((0, len(OFFSETS)))
    order = np.argsort(frames, kind="stable")
    return frames[order], dists[order]


Scored = tuple[SyncResult, np.ndarray]  # a result and the frame of each of its distance rows


def _build_report(
    source: str, tracker: FaceTracker, scorer: _Scorer, timing: _Timing, skipped: list[Skipped], crop: str,
    window_s: float | None,
) -> Report:
    num_frames = tracker.frames_seen
    tracks = [
        TrackReport(t.start, t.stop, [r for r, _ in scorer.results([t.number])], t.speaking, t.where())
        for t in tracker.tracks
    ]
    scorer.settle({t.number: t.speaking for t in tracker.tracks})
    whole = [r for r, _ in scorer.results([FULL_FRAME_TRACK])]
    if whole:  # the full-frame protocol with a crop engine
        tracks.insert(0, TrackReport(0, num_frames, whole, True, "full frame"))
    combined = scorer.speaking_results()
    results = [r for r, _ in combined]
    shown = max((t for t in tracker.tracks if t.speaking), key=lambda t: t.num_frames)
    report = Report(
        input=source,
        duration_s=num_frames / FPS,
        frames=num_frames,
        results=results,
        timing_s=timing.seconds,
        skipped=skipped,
        segment=(shown.start, shown.stop),
        face_summary=_describe(tracker),
        crops=sample_frames(shown.crops),
        mouths=sample_frames(shown.mouths),
        protocol=crop,
        tracks=tracks,
        result_frames={r.engine: frames for r, frames in combined},
    )
    if window_s is not None:
        report.windows, report.drift = _windows(scorer, num_frames, window_s)
    return report


def _windows(scorer: _Scorer, num_frames: int, window_s: float) -> tuple[list[WindowResult], list[Drift]]:
    """Results per window of `window_s` seconds (over the speaking faces), and each engine's drift over them.

    A window where the speaking faces give fewer distance rows than half the window has no results. The drift is
    fitted over the windows where that engine finds a sync signal (a no_signal window's offset is chance)."""
    step = max(1, int(round(window_s * FPS)))
    windows = []
    for start in range(0, num_frames, step):
        stop = min(num_frames, start + step)
        results = [r for r, _ in scorer.speaking_results((start, stop), max(MIN_ROWS, step // 2))]
        windows.append(WindowResult(start / FPS, stop / FPS, results))
    drift = []
    for engine in scorer.engines:
        points = [((w.t_start + w.t_end) / 2, r.calibrated_offset_ms) for w in windows for r in w.results
                  if r.engine == engine.name and has_signal(r)]
        if len(points) >= MIN_DRIFT_WINDOWS:
            times, offsets = zip(*points, strict=True)
            drift.append(Drift(engine.name, drift_ms_per_minute(times, offsets), len(points)))
    return windows, drift


MIN_DRIFT_WINDOWS = 3  # windows with a sync signal needed before a drift is given


def _describe(tracker: FaceTracker) -> str:
    """Which faces were followed, in one sentence for reports."""
    tracks = tracker.tracks
    speaking = [t for t in tracks if t.speaking]
    seen = "one face" if tracker.num_faces == 1 else f"{tracker.num_faces} faces at once"
    spans = ", ".join(f"{t.start / FPS:.1f}-{t.stop / FPS:.1f} s {t.where()}" for t in speaking)
    return f"{seen} seen; {len(tracks)} face track(s) of at least 1 s, {len(speaking)} speaking ({spans})"


@contextmanager
def _in_background(
    items: Iterable[T], maxsize: int, name: str, counts: Callable[[T], bool] | None = None
) -> Iterator[Generator[T, None, None]]:
    """Iterate `items` in a thread of its own, started at once, `maxsize` items ahead at most: the generator given
    yields them and raises their errors.

    `counts(item)` False: the item does not take one of the `maxsize` places (e.g. a progress tick, so that the
    thread is not held back by ticks its consumer has not read yet).

    However the block ends (an error, Ctrl-C, even during the thread's start), and as soon as the generator given
    is closed, the thread is told to stop and, if it ever ran, has closed `items` before that is done: a decoder
    it was reading is free to close."""
    results: queue.Queue = queue.Queue()
    places = threading.Semaphore(maxsize)
    stop, done = threading.Event(), threading.Event()

    def takes_place(entry: tuple[str, object]) -> bool:
        return entry[0] == "item" and (counts is None or counts(entry[1]))

    def put(entry: tuple[str, object]) -> bool:
        if takes_place(entry):
            while not places.acquire(timeout=0.1):
                if stop.is_set():
                    return False
        if stop.is_set():
            return False
        results.put(entry)
        return True

    def run() -> None:
        try:
            if not stop.is_set():  # (set already if Ctrl-C cut `start` short before this thread ran)
                _feed(iter(items), put)
        finally:
            done.set()

    thread = threading.Thread(target=run, name=f"syncnet-{name}", daemon=True)

    def stop_thread() -> None:
        stop.set()
        if thread.ident is not None:  # it runs or ran: wait until it has let go of `items`
            done.wait()

    def consume() -> Generator[T, None, None]:
        try:
            while True:
                entry = results.get()
                kind, value = entry
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                if takes_place(entry):
                    places.release()
                yield value
        finally:
            stop_thread()

    try:
        thread.start()
        yield consume()
    finally:
        stop_thread()


def _feed(iterator: Iterator[T], put: Callable[[tuple[str, object]], bool]) -> None:
    """Hand each item on, then the end (or the error); stop when `put` refuses; close the iterator in any case."""
    try:
        for item in iterator:
            if not put(("item", item)):
                return
        put(("end", None))
    except BaseException as error:  # handed to the consumer, which raises it
        put(("error", error))
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


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
    Each window is one :func:`syncnet.gpu.gpu_task` call: on a ZeroGPU Space it holds the GPU for that window only,
    not while the stream is being waited for.
    """
    check_url(url, allow_private=allow_private)
    get_engines(engine_names)  # loaded before the first window arrives; unknown names refused
    analyze_window = gpu_task(analyze_media)
    windows = stream_windows(url, window_s=window_s, max_seconds=max_seconds, allow_private=allow_private, stop=stop)
    try:
        for window in windows:
            try:
                yield WindowReport(window.t_start, window.t_end, analyze_window(window.media, engine_names))
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
