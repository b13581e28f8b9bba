"""The command line: ``python -m syncnet detect VIDEO``, ``python -m syncnet stream HLS_URL`` and
``python -m syncnet score INPUT... --out RESULTS.csv``.

JSON (``--json``) or plain lines go to stdout, progress to stderr. Exit codes: 0 done, 2 bad input or arguments
(one line on stderr, no traceback), 3 an internal error (a bug: its traceback goes to stderr), 130 a batch stopped
by Ctrl-C (its finished rows kept).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tqdm import tqdm

from syncnet.constants import CROP_PROTOCOLS, DEFAULT_WINDOW_S, MIN_TRACK_S
from syncnet.engines import ENGINE_NAMES
from syncnet.errors import BadArgument, SyncNetError
from syncnet.verdict import TOLERANCE_HELP, Tolerance, parse_tolerance

if TYPE_CHECKING:
    from syncnet.report import Report

MAX_DURATION_S = 4 * 3600.0  # default --max-duration (the library's default too)
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_OUTPUT_CLOSED = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

log = logging.getLogger("syncnet")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, as for any other bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="syncnet", description="Is the sound in sync with the lips? By how much? Fix it.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    detect = commands.add_parser("detect", help="measure the audio-video offset of a video file")
    detect.add_argument("video", help="video file with a talking face and sound")
    _add_common(detect)
    detect.add_argument(
        "--crop",
        choices=CROP_PROTOCOLS,
        default="track",
        help="scoring protocol: track (syncnet_python's tracked face crops, the default) or full-frame (Wav2Lip's LRS "
        "protocol: no face detection, each frame resized to 224x224; for videos that are already face crops)",
    )
    detect.add_argument("--fix", metavar="OUT.mp4", help="write a copy with the audio shifted back into sync")
    detect.add_argument("--window", type=float, default=None, metavar="S",
                        help="also give results per window of S seconds, and the drift (ms per minute)")
    detect.add_argument("--max-duration", type=float, default=MAX_DURATION_S, metavar="S",
                        help=f"refuse files longer than S seconds (default {MAX_DURATION_S:.0f})")

    stream = commands.add_parser("stream", help="follow an HLS stream window by window")
    stream.add_argument("url", metavar="HLS_URL", help="http(s) URL of an HLS playlist (.m3u8)")
    _add_common(stream)
    stream.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S", help="window length, seconds")
    stream.add_argument("--max-seconds", type=float, default=None, metavar="S", help="stop after S seconds of stream")
    stream.add_argument(
        "--allow-private-hosts",
        action="store_true",
        help="allow loopback/private addresses, for local testing (or SYNCNET_ALLOW_PRIVATE_HOSTS=1)",
    )
    _add_score_parser(commands)
    return parser


def add_tolerance_option(parser: argparse.ArgumentParser) -> None:
    """``--tolerance``: what counts as in sync (a preset or EARLY_MS,LATE_MS), parsed into ``args.tolerance``."""
    parser.add_argument(
        "--tolerance", type=_tolerance, default=parse_tolerance(None), metavar="PRESET|EARLY_MS,LATE_MS",
        help=TOLERANCE_HELP,
    )


def _tolerance(text: str) -> Tolerance:
    try:
        return parse_tolerance(text)
    except BadArgument as error:  # argparse words it as "argument --tolerance: ...", one line, exit 2
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_score_parser(commands) -> None:
    from syncnet.constants import CROP_PROTOCOLS

    score = commands.add_parser(
        "score", help="score many videos into one results file (resumable, parallel, on Ray)",
        description="One row per (video, engine) scored and one error row per video that could not be, appended "
                    "as videos finish; a rerun skips the videos already in --out.",
    )
    score.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="a video file, a folder (searched recursively) or @list.txt (one path per line)")
    score.add_argument("--out", required=True, metavar="RESULTS", help="results file: .csv, .jsonl or .parquet")
    score.add_argument("--engine", choices=[*ENGINE_NAMES, "all"], default="all", help="engine to run (default all)")
    score.add_argument("--crop", choices=CROP_PROTOCOLS, default="track", help="scoring protocol (default track)")
    score.add_argument("--workers", type=int, metavar="N",
                       help="processes (local, default 1) or Ray actors (default one per CPU), each loading the "
                            "engines once")
    score.add_argument("--threads", type=int, metavar="T", help="threads per worker (default: the cores split)")
    score.add_argument("--backend", choices=["local", "ray"], default="local", help="where to run (default local)")
    score.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to use (default: a local Ray instance)")
    score.add_argument("--overwrite", action="store_true", help="start again instead of skipping finished videos")
    score.add_argument("--summary", metavar="FILE.json", help="also write the summary as JSON")
    score.add_argument("--min-confidence", type=float, metavar="C", help="curation: confidence at least C")
    score.add_argument("--max-offset", type=int, metavar="K", help="curation: offset at most K frames either way")
    score.add_argument("--passed", metavar="FILE.txt",
                       help="where to list the videos that pass (default: RESULTS.passed.txt beside --out)")
    score.add_argument("--fix-dir", metavar="DIR",
                       help="write corrected copies of the videos that pass but are out of sync into DIR")
    score.add_argument("--verbose", action="store_true", help="log warnings, and MediaPipe's native log, on stderr")
    add_tolerance_option(score)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=[*ENGINE_NAMES, "all"], default="all", help="engine to run (default all)")
    add_tolerance_option(parser)
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--verbose", action="store_true", help="log warnings, and MediaPipe's native log, on stderr")


def run() -> NoReturn:
    """The ``syncnet`` command: `main`, then exit. Objects alive at that point are frozen (`gc.freeze`) first, so the
    interpreter's exit does not sweep them all once more (with torch loaded, that last pass is a visible wait)."""
    code = main()
    gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    if not args.verbose:
        _silence_native_stderr()
    try:
        if args.command == "detect":
            return detect(args)
        if args.command == "score":
            return score(args)
        return stream(args)
    except BrokenPipeError:  # the reader of stdout went away (e.g. `| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OUTPUT_CLOSED
    except (SyncNetError, OSError) as error:  # bad input: MediaError, NoFaceError, HlsError, missing file...
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"syncnet: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as bug:  # anything else is a bug, never "bad input"
        traceback.print_exc(file=sys.stderr)
        print(f"syncnet: internal error (a bug, please report it with the traceback above): "
              f"{type(bug).__name__}: {bug}", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


# The commands import the pipeline (torch, MediaPipe) only when they run: argument errors stay instant.
def detect(args: argparse.Namespace) -> int:
    if args.fix and Path(args.fix).resolve() == Path(args.video).resolve():
        raise BadArgument("--fix must name a new file, not the input video")
    if args.window is not None and not args.window >= MIN_TRACK_S:
        raise BadArgument(f"--window must be at least {MIN_TRACK_S:.0f} s")
    if not args.max_duration > 0:
        raise BadArgument("--max-duration must be positive")
    from syncnet.api import analyze
    from syncnet.report import summary_lines, track_lines

    with _ProgressBar() as bar:
        report = analyze(args.video, args.engine, progress=bar.update, crop=args.crop, tolerance=args.tolerance,
                         max_duration_s=args.max_duration, window_s=args.window)
    if args.json:
        print(report.to_json())
    else:
        print(f"{report.input}: {report.frames} frames, {report.duration_s:.2f} s")
        print("\n".join(summary_lines(report) + track_lines(report) + _weights_lines(args.engine)))
    if args.fix:
        _write_fix(args.video, args.fix, report)
    return EXIT_OK


def _weights_lines(choice: str) -> list[str]:
    """Which weights the loaded engines used (one line per file: syncnet and fcn share theirs), and how each of them
    computes (fcn's precision and device)."""
    from syncnet.pipeline import get_engines

    engines, _ = get_engines(choice)
    sources = dict.fromkeys(source for e in engines if (source := getattr(e, "source", "")))
    arithmetic = [f"{e.name} {e.arithmetic}" for e in engines if getattr(e, "arithmetic", "")]
    return [f"  weights: {source}" for source in sources] + (
        [f"  arithmetic: {', '.join(arithmetic)}"] if arithmetic else []
    )


def _write_fix(video: str, out: str, report: Report) -> None:
    from syncnet.remux import write_corrected
    from syncnet.report import describe_fix

    offset = report.fix_offset_frames()  # 0 when in sync: the copy keeps the audio where it is
    if offset is None:
        raise BadArgument(f"no corrected video: {report.no_fix_reason()}")
    write_corrected(video, out, offset)
    print(f"syncnet: wrote {out}: {describe_fix(offset)}", file=sys.stderr)


def stream(args: argparse.Namespace) -> int:
    if args.window <= 0 or (args.max_seconds is not None and args.max_seconds <= 0):
        raise BadArgument("--window and --max-seconds must be positive")
    from syncnet.netguard import check_url

    check_url(args.url, allow_private=args.allow_private_hosts)  # a refused URL fails before anything heavy loads
    from syncnet.api import analyze_stream
    from syncnet.report import describe_failed_window, summary_lines, window_to_dict

    windows = analyze_stream(
        args.url, args.engine, window_s=args.window, max_seconds=args.max_seconds,
        allow_private=args.allow_private_hosts, tolerance=args.tolerance,
    )
    try:
        for window in windows:
            if args.json:
                line = window_to_dict(window.t_start, window.t_end, window.report, window.error, silent=window.silent)
                print(json.dumps(line), flush=True)
            else:
                lines = ([describe_failed_window(window.error, window.silent)] if window.report is None
                         else summary_lines(window.report))
                print(f"[{window.t_start:7.2f} - {window.t_end:7.2f} s]", *lines, sep="\n  ", flush=True)
    except KeyboardInterrupt:
        print("syncnet: stopped", file=sys.stderr)
    finally:
        windows.close()
    return EXIT_OK


def score(args: argparse.Namespace) -> int:
    """Score many videos; the summary goes to stderr (and --summary), a progress bar with rate and ETA too."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from syncnet.batch import score as score_videos

    try:
        with _BatchBar() as bar, logging_redirect_tqdm():
            summary = score_videos(
                args.inputs, args.out, args.engine, crop=args.crop, tolerance=args.tolerance, workers=args.workers,
                threads=args.threads,
                backend=args.backend, ray_address=args.ray_address, overwrite=args.overwrite,
                min_confidence=args.min_confidence, max_offset=args.max_offset, passed_list=args.passed,
                fix_dir=args.fix_dir, summary_path=args.summary, progress=bar.update,
            )
    except KeyboardInterrupt:  # before scoring began or while curating: nothing half-written to lose
        print("syncnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("\n".join(f"syncnet: {line}" for line in summary.lines()), file=sys.stderr)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


class _BatchBar:
    """A tqdm bar on stderr counting videos, with rate and ETA, fed by the batch's (done, total) callback."""

    def __enter__(self) -> _BatchBar:
        self._bar: tqdm | None = None
        return self

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, unit="video", desc="scoring", file=sys.stderr, disable=None, leave=False)
        self._bar.update(done - self._bar.n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()


def _silence_native_stderr() -> None:
    """Point file descriptor 2 at /dev/null, keeping Python's sys.stderr on the real one.

    MediaPipe's C++ code logs warnings straight to descriptor 2; this keeps stderr to our progress bar and the one
    line that says what went wrong.
    """
    sys.stderr.flush()
    real = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


class _ProgressBar:
    """A tqdm bar on stderr fed by the pipeline's (fraction, stage) progress callback."""

    def __enter__(self) -> _ProgressBar:
        self._bar = tqdm(  # on a terminal only, and erased when done
            total=100, file=sys.stderr, disable=None, leave=False, bar_format="{desc:<22}{percentage:3.0f}%|{bar}|"
        )
        return self

    def update(self, fraction: float, what: str) -> None:
        self._bar.set_description_str(what, refresh=False)
        self._bar.update(round(100 * fraction) - self._bar.n)

    def __exit__(self, *exc) -> None:
        self._bar.close()
