"""FCN-SyncNet web app: Gradio Blocks wired to syncnet's library calls (UI and named API endpoints).

Endpoints: /detect (video -> DESIGN.md's CLI JSON), /analyze (the same with per-window detail, plots, crops and the
corrected video), /stream (HLS URL -> a new result per window until the stream ends, the time is up, or it is stopped),
/batch (several videos -> a row per video and engine, the summary and the CSV of `syncnet score`).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import gradio as gr

from syncnet import api, pipeline, plots
from syncnet.constants import CROP_PROTOCOLS, DEFAULT_WINDOW_S
from syncnet.engines import ENGINE_NAMES
from syncnet.errors import SyncNetError
from syncnet.gpu import gpu_task
from syncnet.remux import write_corrected
from syncnet.report import (
    RESULT_COLUMNS,
    TRACK_COLUMNS,
    Report,
    describe_failed_window,
    describe_fix,
    describe_offset,
    describe_verdict,
    result_rows,
    timing_rows,
    track_rows,
    window_to_dict,
)
from syncnet.verdict import DEFAULT_TOLERANCE, PRESET_LABELS, PRESETS, Tolerance, parse_tolerance

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # refused by Gradio before anything is decoded
MAX_DURATION_S = float(os.environ.get("SYNCNET_MAX_UPLOAD_S", "60"))  # refused before frames are decoded
OFFSET_WINDOW_S = DEFAULT_WINDOW_S  # windows of the offset-over-time plot
CONCURRENCY_LIMIT = 2  # analyses running at once; the rest wait in the queue
QUEUE_SIZE = 16  # requests waiting at most; more are turned away
STREAM_WINDOW_S = DEFAULT_WINDOW_S
STREAM_MAX_SECONDS = 600.0  # a monitor holds a worker: it stops after this much stream at most
CACHE_TTL_S = 900  # Gradio's copies of uploads and results are removed this long after they were made
EXAMPLES_DIR = Path(__file__).parent / "examples"
EXAMPLE_SUFFIXES = (".mp4", ".webm", ".mov")
STREAM_COLUMNS = ["from (s)", "to (s)", "engine", "verdict", "offset (frames)", "confidence"]
BATCH_MAX_FILES = 10  # videos per batch, each within the upload limits; more would hold a worker too long
BATCH_COLUMNS = ["video", "status", "engine", "offset (frames)", "verdict", "confidence", "min dist", "error"]
TOLERANCE_CHOICES = [
    (f"{PRESET_LABELS[name]} (+{t.early_ms:g} / -{t.late_ms:g} ms)", name) for name, t in PRESETS.items()
]
# The results tables span the page; their headers and cells wrap between words, never inside one (Gradio's default
# breaks anywhere: headers went letter by letter). Below TABLE_MIN_WIDTH the table scrolls sideways instead of
# squeezing: at that width each column still holds its longest word ("(frames)", "confidence", "landmarks"). File
# names, one long word each, break anywhere.
TABLE_MIN_WIDTH = "960px"
RESULT_WIDTHS = ["12%", "26%", "9%", "9%", "12%", "11%", "10%", "11%"]  # RESULT_COLUMNS' share of the width
STREAM_WIDTHS = ["10%", "10%", "14%", "40%", "13%", "13%"]
TRACK_WIDTHS = ["8%", "7%", "11%", "9%", "10%", "25%", "10%", "9%", "11%"]  # TRACK_COLUMNS'
BATCH_WIDTHS = ["24%", "7%", "10%", "9%", "14%", "11%", "10%", "15%"]  # BATCH_COLUMNS'
CSS = f"""
.table-scroll {{ overflow-x: auto; }}
.table-scroll > .results-table, .table-scroll .results-table .table-container {{
  min-width: {TABLE_MIN_WIDTH} !important; }}
.results-table th span, .results-table .body-cell span {{ white-space: normal !important;
  word-break: normal !important; overflow-wrap: normal !important; hyphens: none !important; }}
#batch-scores .body-cell[data-col="0"] span {{ overflow-wrap: anywhere !important; }}
#verdict h3 {{ margin-top: 0; }}
"""

log = logging.getLogger("syncnet.app")


@lru_cache(maxsize=1)
def output_root() -> Path:
    """The app's own temp folder (corrected videos until Gradio has copied them, batch results): made on first use,
    so that importing the app leaves nothing behind, and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="syncnet-app-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _require_video(video: str | None) -> str:
    if not video:
        raise gr.Error("Upload or record a video first.")
    return video


@contextlib.contextmanager
def user_errors(what: str):
    """Bad input becomes its one-line message; anything else is a bug: logged with its traceback, shown as such."""
    try:
        yield
    except (SyncNetError, OSError) as error:
        raise gr.Error(str(error) or type(error).__name__) from None
    except gr.Error:
        raise
    except Exception as bug:
        log.exception("internal error while %s", what)
        raise gr.Error(f"Internal error while {what} (a bug, logged on the server): {type(bug).__name__}") from None


def _tolerance(choice: str | None) -> Tolerance:
    with user_errors("reading the tolerance"):
        return parse_tolerance(choice or None)


@gpu_task  # on a ZeroGPU Space the analysis holds a GPU; elsewhere a no-op
def _run(
    video: str | None,
    engines: list[str],
    tolerance: str | None,
    crop: str | None,
    progress: gr.Progress,
    window_s: float | None = None,
) -> Report:
    """The pipeline on an uploaded file, with bad input turned into a message for the user."""
    with user_errors("analysing the video"):  # a bad tolerance is refused before anything is decoded
        report = api.analyze(
            _require_video(video),
            engines,
            progress=lambda fraction, what: progress(fraction, desc=what),
            max_duration_s=MAX_DURATION_S,
            max_bytes=MAX_UPLOAD_BYTES,
            crop=crop or "track",
            tolerance=tolerance or None,
            window_s=window_s,
        )
    report.input = Path(video).name  # the upload's name, not where the server keeps it
    return report


def detect(
    video: str | None, engines: list[str], tolerance: str | None = None, crop: str = "track", progress=gr.Progress()
) -> dict:
    """Verdicts, offsets, confidences and distances per engine, as `python -m syncnet detect --json` prints them."""
    return _run(video, engines, tolerance, crop, progress).to_dict()


def analyze(
    video: str | None, engines: list[str], tolerance: str | None = None, crop: str = "track", progress=gr.Progress()
):
    """Everything: the verdict, a table per engine, timings, plots, crops, the corrected video and detailed JSON.

    A generator that yields once: Gradio copies the corrected video to its cache before resuming it, and then our
    own copy is removed.
    """
    report = _run(video, engines, tolerance, crop, progress, window_s=OFFSET_WINDOW_S)
    folder = Path(tempfile.mkdtemp(dir=output_root()))
    try:
        verdict, corrected = _verdict(report), None
        offset = report.fix_offset_frames()
        if offset is None:
            verdict += f"\n\nNo corrected video: {report.no_fix_reason()}."
        elif offset == 0:  # in sync: nothing to correct, no copy to wait for
            verdict += "\n\nNo corrected video needed: the offset is below what viewers notice."
        else:
            corrected = folder / f"{Path(video).stem}_synced.mp4"
            try:
                write_corrected(video, corrected, offset)
                verdict += f"\n\nCorrected video below: {describe_fix(offset)}."
            except (SyncNetError, OSError) as error:
                verdict, corrected = verdict + f"\n\nThe corrected video could not be written: {error}", None
        yield (
            verdict,
            result_rows(report),
            timing_rows(report),
            plots.render(plots.plot_distances(report.results)),
            plots.render(plots.plot_confidence(report.results, row_frames=report.result_frames)),
            plots.crop_strip(report.crops, report.mouths),
            None if corrected is None else str(corrected),
            report.to_dict(detail=True),
            *_shot_outputs(report),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _shot_outputs(report: Report) -> tuple[list[list], object]:
    """The per-shot table (one row per face track and engine) and the offset-over-time plot."""
    return track_rows(report), plots.render(plots.plot_offsets(report))


def _shot_components() -> tuple[gr.Dataframe, gr.Image]:
    """Video tab: the face tracks (shots) each scored on its own, and the offset over time."""
    with gr.Column(elem_classes=["table-scroll"]):
        shots = gr.Dataframe(
            headers=TRACK_COLUMNS, label="Face tracks (shots), each scored on its own", interactive=False, wrap=True,
            column_widths=TRACK_WIDTHS, elem_classes=["results-table"], elem_id="tracks",
        )
    offsets = gr.Image(label="Offset over time", format="png", elem_id="offset-plot")
    return shots, offsets


def _verdict(report: Report) -> str:
    """The most trusted engine's verdict first, then every engine's, the tolerance and the face followed."""
    head = f"### {_capital(describe_verdict(report))}"
    if report.verdict is not None:
        head += f"\n\nVerdict `{report.verdict}`; tolerance {report.tolerance.describe()}."
    lines = [
        f"**{r.engine}**: {describe_offset(r, report.tolerance)} (confidence {r.confidence:.2f})"
        for r in report.results
    ]
    lines += [f"**{s.engine}** is off: {s.reason}" for s in report.skipped]
    lines.append(f"Face: {report.face_summary}.")
    return "\n\n".join([head, *lines])


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def monitor(url: str, engines: list[str], window_s: float, max_seconds: float, tolerance: str | None,
            request: gr.Request):
    """Follow an HLS stream: after each window, the table of all windows so far and the latest window's JSON."""
    if not url or not url.strip():
        raise gr.Error("Enter the http(s) URL of an HLS playlist (.m3u8).")
    chosen = _tolerance(tolerance)
    rows: list[list] = []
    stop = _start_monitor(request.session_hash)
    try:
        with user_errors("following the stream"):  # refused URL, unreadable playlist, limits; or a bug
            for window in pipeline.analyze_stream(
                url.strip(),
                engines,
                window_s=float(window_s or STREAM_WINDOW_S),
                max_seconds=min(float(max_seconds or STREAM_MAX_SECONDS), STREAM_MAX_SECONDS),
                stop=stop,  # private hosts only with SYNCNET_ALLOW_PRIVATE_HOSTS=1 in the server's environment
            ):
                span = [round(window.t_start, 2), round(window.t_end, 2)]
                if window.report is None:  # a silent window has no sync signal; any other failure says why
                    rows.append([*span, "-", describe_failed_window(window.error, window.silent), None, None])
                else:
                    window.report.tolerance = chosen
                for r in [] if window.report is None else window.report.results:
                    rows.append([*span, r.engine, describe_offset(r, chosen), r.offset_frames, round(r.confidence, 3)])
                line = window_to_dict(window.t_start, window.t_end, window.report, window.error, silent=window.silent)
                yield rows, line
    finally:
        _end_monitor(request.session_hash, stop)


def batch(files: list[str] | None, engines: list[str], progress=gr.Progress()):
    """Score several uploads as `syncnet score` does: a row per video and engine, the summary and the CSV."""
    from syncnet.batch import score
    from syncnet.batch_files import ResultsFile, typed

    if not files:
        raise gr.Error("Upload one or more videos first.")
    if len(files) > BATCH_MAX_FILES:
        raise gr.Error(f"At most {BATCH_MAX_FILES} videos per batch ({len(files)} given).")
    folder = Path(tempfile.mkdtemp(dir=output_root()))
    rows: list[dict] = []
    try:
        with user_errors("scoring the videos"):
            summary = score(
                files, folder / "scores.jsonl", engines, max_duration_s=MAX_DURATION_S, max_bytes=MAX_UPLOAD_BYTES,
                progress=lambda done, total: progress((done, total), desc="scoring", unit="videos"),
                on_scored=lambda scored: rows.extend(typed({**r, "path": Path(r["path"]).name}) for r in scored.rows),
            )
        download = ResultsFile(folder / "syncnet_scores.csv")  # the upload names, not the server's paths
        download.append(rows)
        download.close()
        table = [
            [r["path"], r["status"], r["engine"] or "-", r["offset_frames"],
             r["verdict"] or ("" if r["offset_frames"] is None else describe_offset(r["offset_frames"])),
             None if r["confidence"] is None else round(r["confidence"], 3),
             None if r["min_dist"] is None else round(r["min_dist"], 3), r["error"]]
            for r in rows
        ]
        yield table, _batch_summary(summary), str(download.path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _batch_summary(summary) -> str:
    lines = [f"**{summary.scored} videos scored, {summary.failed} could not be** ({summary.elapsed_s:.1f} s)", ""]
    if summary.engines:
        lines += ["| engine | videos | LSE-C mean | LSE-C median | LSE-D mean | LSE-D median |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {name} | {s['videos']} | {s['lse_c_mean']:.3f} | {s['lse_c_median']:.3f} | {s['lse_d_mean']:.3f} "
            f"| {s['lse_d_median']:.3f} |"
            for name, s in summary.engines.items()
        ]
    lines += [f"\n**{name}** is off: {reason}" for name, reason in summary.skipped_engines.items()]
    return "\n".join(lines)


_monitors: dict[str, threading.Event] = {}  # session -> the stop switch of its running stream monitor
_monitors_lock = threading.Lock()


def _start_monitor(session: str) -> threading.Event:
    """A stop switch for a new monitor; a session's earlier monitor is stopped (one per session)."""
    stop = threading.Event()
    with _monitors_lock:
        previous = _monitors.get(session)
        _monitors[session] = stop
    if previous is not None:
        previous.set()
    return stop


def _end_monitor(session: str, stop: threading.Event) -> None:
    stop.set()
    with _monitors_lock:
        if _monitors.get(session) is stop:
            del _monitors[session]


def stop_monitor(request: gr.Request) -> None:
    """Stop this session's stream monitor: the stream stops being read at once, not at the next window."""
    with _monitors_lock:
        stop = _monitors.pop(request.session_hash, None)
    if stop is not None:
        stop.set()


def engine_panel():
    """Which engines are loaded and from where, or why one is off; tick the loaded ones (waits for loading)."""
    status = pipeline.engine_status()
    lines = [
        f"- **{name}**: loaded" + (f" ({detail})" if detail else "") if loaded else f"- **{name}**: off: {detail}"
        for name, loaded, detail in status
    ]
    return "\n".join(lines), gr.CheckboxGroup(value=[name for name, loaded, _ in status if loaded])


def build_demo() -> gr.Blocks:
    examples = sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix in EXAMPLE_SUFFIXES)
    with gr.Blocks(title="FCN-SyncNet", delete_cache=(CACHE_TTL_S, CACHE_TTL_S)) as demo:
        gr.Markdown(
            "# FCN-SyncNet\nIs the sound in sync with the lips? By how much? Fix it. "
            "Offsets are in frames at 25 fps (40 ms): **+k = the audio is early** (delay it by k frames), "
            "-k = the audio is late (advance it)."
        )
        with gr.Accordion("Engines", open=True):
            status = gr.Markdown("Loading the engines...", elem_id="engine-status")
        with gr.Row():
            engines = gr.CheckboxGroup(list(ENGINE_NAMES), value=list(ENGINE_NAMES), label="Engines", min_width=300)
            tolerance = gr.Dropdown(
                TOLERANCE_CHOICES, value=DEFAULT_TOLERANCE.name, allow_custom_value=True,
                label="In sync when the audio is within (or type EARLY_MS,LATE_MS)", elem_id="tolerance", min_width=300,
            )
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column():
                    video = gr.Video(
                        sources=["upload", "webcam"], include_audio=True, label="Talking-face video (upload or record)"
                    )
                    crop = gr.Radio(
                        list(CROP_PROTOCOLS),
                        value="track",
                        label="Crop protocol",
                        info="track: find and follow the face (syncnet_python). full-frame: Wav2Lip's LRS protocol, "
                        "each whole frame resized to 224x224, for videos that are already face crops.",
                    )
                    with gr.Row():
                        analyze_button = gr.Button("Analyze", variant="primary")
                        detect_button = gr.Button("Offsets only (JSON)")
                    if examples:
                        gr.Examples(examples, inputs=[video])
                with gr.Column():
                    verdict = gr.Markdown(elem_id="verdict")
                    timing = gr.Dataframe(headers=["stage", "seconds"], label="Time per stage", interactive=False)
            with gr.Column(elem_classes=["table-scroll"]):  # the whole width: every column reads on one screen
                table = gr.Dataframe(
                    headers=RESULT_COLUMNS, label="Results per engine", interactive=False, wrap=True,
                    column_widths=RESULT_WIDTHS, elem_classes=["results-table"], elem_id="results",
                )
            with gr.Row():
                distance_plot = gr.Image(label="Distance against offset", format="png", elem_id="distance-plot")
                confidence_plot = gr.Image(label="Confidence over time", format="png")
            shots, offsets = _shot_components()
            strip = gr.Image(label="Face and mouth crops the engines saw", format="jpeg")
            corrected = gr.Video(label="Corrected video", interactive=False, height=360)
            with gr.Accordion("JSON", open=False) as json_box:
                details = gr.JSON(label="Report")
        with gr.Tab("HLS stream"):
            url = gr.Textbox(label="HLS playlist URL", placeholder="https://example.com/live/stream.m3u8")
            with gr.Row():
                window_s = gr.Number(STREAM_WINDOW_S, label="Window (s)", minimum=2, maximum=30)
                max_seconds = gr.Number(120, label="Stop after (s of stream)", minimum=1, maximum=STREAM_MAX_SECONDS)
                start_button = gr.Button("Start", variant="primary")
                stop_button = gr.Button("Stop")
            with gr.Column(elem_classes=["table-scroll"]):
                windows = gr.Dataframe(
                    headers=STREAM_COLUMNS, label="Windows", interactive=False, wrap=True, elem_id="stream-windows",
                    column_widths=STREAM_WIDTHS, elem_classes=["results-table"],
                )
            latest = gr.JSON(label="Latest window")

        with gr.Tab("Batch"):
            gr.Markdown(
                f"Score up to {BATCH_MAX_FILES} videos at once (each within the upload limits), as "
                "`python -m syncnet score` does: a row per video and engine, LSE-C (confidence) and LSE-D (minimum "
                "distance) summarised per engine, and the CSV."
            )
            batch_files = gr.File(file_count="multiple", file_types=["video"], label="Videos")
            batch_button = gr.Button("Score", variant="primary")
            batch_summary = gr.Markdown(elem_id="batch-summary")
            with gr.Column(elem_classes=["table-scroll"]):
                batch_table = gr.Dataframe(
                    headers=BATCH_COLUMNS, label="Scores", interactive=False, wrap=True, elem_id="batch-scores",
                    column_widths=BATCH_WIDTHS, elem_classes=["results-table"],
                )
            batch_csv = gr.File(label="Scores (CSV)", interactive=False)
        batch_button.click(batch, [batch_files, engines], [batch_table, batch_summary, batch_csv], api_name="batch")

        analyze_button.click(
            analyze,
            [video, engines, tolerance, crop],
            [verdict, table, timing, distance_plot, confidence_plot, strip, corrected, details, shots, offsets],
            api_name="analyze",
        )
        detect_button.click(detect, [video, engines, tolerance, crop], [details], api_name="detect").success(
            lambda: gr.Accordion(open=True), None, [json_box], api_visibility="private"
        )
        stream_event = start_button.click(
            monitor,
            [url, engines, window_s, max_seconds, tolerance],
            [windows, latest],
            api_name="stream",
            concurrency_limit=1,
            concurrency_id="stream",
        )
        stop_button.click(stop_monitor, None, None, cancels=[stream_event], api_name="stop_stream", queue=False)
        demo.load(engine_panel, None, [status, engines], api_name="engines", concurrency_limit=None)
    return demo


def launch(**kwargs) -> tuple:
    """Queue on with a concurrency limit, uploads capped, nothing served but the app's own temp folders."""
    threading.Thread(target=pipeline.get_engines, name="load-engines", daemon=True).start()  # page up first
    output_root()  # made now, so that a stopped app removes it whether or not it was used
    demo = build_demo()
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return demo, demo.launch(max_file_size=MAX_UPLOAD_BYTES, css=CSS, **kwargs)


if __name__ == "__main__":
    # Stopped with SIGTERM (kill, a Space restart): exit normally so that the atexit clean-up removes output_root().
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    launch()
