"""`syncnet score`: inputs, rows, each results format, resuming (after Ctrl-C and after a kill), broken files, both
backends (worker processes and a local Ray instance), curation, the library call and the app's Batch tab."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import syncnet
from syncnet import batch, pipeline
from syncnet.batch_files import COLUMNS, ResultsFile
from syncnet.errors import BadArgument
from syncnet.remux import write_corrected
from tests.paths import CLIPS
from tests.synthetic_weights import write_weights

ROOT = Path(__file__).resolve().parents[1]
CLIP = CLIPS / "pcavs_posesrc_00067.mp4"  # 4.6 s; landmarks: offset 0
SECOND = CLIPS / "lipnet_grid_sbwe5n.mpg"  # 3 s
THIRD = CLIPS / "pcavs_audiosrc_00086.mp4"  # 5.2 s
NUMBERS = ("offset_frames", "offset_ms", "calibrated_offset_frames", "confidence", "min_dist")
POLL_S = 0.1


@pytest.fixture(scope="module")
def landmarks_only():
    """Only the landmarks engine, as the default offline setting gives (no SyncNet weights needed)."""
    pipeline.get_engines(["landmarks"])
    yield


@pytest.fixture
def broken(tmp_path) -> dict[str, Path]:
    """Files that cannot be scored: text named .mp4, an empty file, a truncated clip, a clip with its sound removed."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "text.mp4").write_text("not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "truncated.mp4").write_bytes(CLIP.read_bytes()[:3000])
    return {p.name: p for p in folder.iterdir()}


def run_cli(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SYNCNET_WEIGHTS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "syncnet", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env, **popen)


def start_cli(*args: str) -> subprocess.Popen:
    """The CLI in its own process group (so that a kill takes its worker processes too), with Ctrl-C (SIGINT) handled
    as at a terminal even where the tests were started in the background (`cmd &` starts them with SIGINT ignored,
    which the CLI would inherit)."""
    env = {k: v for k, v in os.environ.items() if k != "SYNCNET_WEIGHTS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "syncnet", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_rows(path: Path) -> list[dict]:
    results = ResultsFile(path)
    results.close()
    return results.rows


def by_path(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(Path(row["path"]).name, []).append(row)
    return out


def wait_for_rows(path: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll a CSV or JSON Lines file until it has ``count`` rows (the run must still be going)."""
    header = 1 if path.suffix == ".csv" else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if path.exists() and len(path.read_text().splitlines()) - header >= count:
            return
        time.sleep(POLL_S)
    pytest.fail(f"no {count} rows in {path} after {timeout} s")


# ---- inputs -------------------------------------------------------------------------------------------------------

def test_inputs_folders_lists_and_the_same_file_twice(tmp_path):
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.MOV", "a/notes.txt", "three.avi", "a/b/four.webm"):
        (data / name).write_bytes(b"x")
    listed = tmp_path / "lists" / "clips.txt"
    listed.parent.mkdir()
    listed.write_text("# my clips\n../data/three.avi\n\n" + str(data / "a" / "one.mp4") + "\nmissing.mp4\n")

    paths = batch.expand_inputs([data / "a", f"@{listed}", data / "three.avi", data / "a" / "one.mp4"])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in paths] == [
        "data/a/one.mp4", "data/a/b/four.webm", "data/a/b/two.MOV", "data/three.avi", "lists/missing.mp4",
    ]  # folders sorted and recursive, video extensions only; each file once; a listed path need not exist
    assert batch.expand_inputs([data], exclude=[data / "a"]) == [str(data / "three.avi")]


@pytest.mark.parametrize(
    "name, words",
    [("missing", "no such file or folder"), ("@missing.txt", "cannot read the list"), ("empty", "no video files")],
)
def test_inputs_that_name_nothing_are_bad_arguments(tmp_path, name, words):
    (tmp_path / "empty").mkdir()
    given = f"@{tmp_path / name[1:]}" if name.startswith("@") else tmp_path / name
    with pytest.raises(BadArgument, match=words):
        batch.expand_inputs([given])


# ---- results files ------------------------------------------------------------------------------------------------

ROWS = [
    {"path": "a.mp4", "status": "ok", "error": "", "duration_s": 4.5, "frames": 113, "engine": "landmarks",
     "offset_frames": 3, "offset_ms": 120.0, "calibrated_offset_frames": 3.2, "confidence": 0.59, "min_dist": 0.41,
     "verdict": "audio_early", "time_s": 0.01, "protocol": "track"},
    {"path": "b, \"odd\".mp4", "status": "error", "error": "no face: none seen", "protocol": "track"},
]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_each_format_keeps_rows_and_columns_across_runs(tmp_path, suffix):
    out = tmp_path / f"results{suffix}"
    first = ResultsFile(out)
    first.append(ROWS[:1])
    first.close()
    second = ResultsFile(out)  # a later run appends
    assert second.rows == [{c: ROWS[0].get(c) for c in COLUMNS}]
    second.append(ROWS[1:])
    second.close()
    rows = read_rows(out)
    assert [r["path"] for r in rows] == ["a.mp4", 'b, "odd".mp4']
    assert rows[0]["frames"] == 113 and rows[0]["confidence"] == 0.59 and rows[0]["verdict"] == "audio_early"
    assert rows[1]["frames"] is None and rows[1]["confidence"] is None and rows[1]["error"] == "no face: none seen"
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        assert pq.read_table(out).column_names == list(COLUMNS)
        assert not out.with_name(out.name + ".partial.jsonl").exists()
    elif suffix == ".csv":
        assert out.read_text().splitlines()[0] == ",".join(COLUMNS)


def test_a_line_cut_by_a_kill_is_dropped_and_a_parquet_journal_taken_in(tmp_path):
    out = tmp_path / "results.csv"
    results = ResultsFile(out)
    results.append(ROWS[:1])
    results.close()
    with open(out, "a") as f:
        f.write("c.mp4,ok,,4.5,11")  # killed in the middle of a row
    assert [r["path"] for r in ResultsFile(out).rows] == ["a.mp4"]

    parquet = tmp_path / "results.parquet"
    killed = ResultsFile(parquet)
    killed.append(ROWS[:1])  # never closed: the run was killed, its rows are in the journal only
    assert not parquet.exists()
    resumed = ResultsFile(parquet)
    assert [r["path"] for r in resumed.rows] == ["a.mp4"]
    resumed.append(ROWS[1:])
    resumed.close()
    assert [r["path"] for r in read_rows(parquet)] == ["a.mp4", 'b, "odd".mp4']


def test_a_file_of_other_columns_is_not_appended_to(tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("name,score\nx,1\n")
    with pytest.raises(BadArgument, match="other columns"):
        ResultsFile(out)
    assert [r["path"] for r in ResultsFile(out, overwrite=True).rows] == []


# ---- summary and curation on known rows ---------------------------------------------------------------------------

def row(path, engine, confidence, offset, verdict="", min_dist=0.5):
    return {"path": path, "status": "ok", "engine": engine, "confidence": confidence, "min_dist": min_dist,
            "offset_frames": round(offset), "calibrated_offset_frames": offset, "verdict": verdict}


def test_summary_counts_videos_and_averages_lse_per_engine():
    rows = [row("a", "landmarks", 0.2, 0, min_dist=0.4), row("b", "landmarks", 0.6, 1, min_dist=0.6),
            row("c", "landmarks", 1.0, 2, min_dist=0.9), row("a", "fcn", 5.0, 0),
            {"path": "d", "status": "error", "engine": "", "error": "no face"}]
    summary = batch.summarize(rows, out="r.csv", skipped=0, run=4, left=0, elapsed_s=1.0, skipped_engines={})
    assert (summary.scored, summary.failed) == (3, 1)
    assert list(summary.engines) == ["fcn", "landmarks"]  # most trusted first
    lm = summary.engines["landmarks"]
    assert lm["videos"] == 3 and lm["lse_c_mean"] == pytest.approx(0.6) and lm["lse_c_median"] == 0.6
    assert lm["lse_d_mean"] == pytest.approx(0.6333333) and lm["lse_d_median"] == 0.6
    assert summary.to_dict()["videos_per_min"] == 240.0


def test_curation_lists_passing_videos_by_the_most_trusted_engine(tmp_path):
    rows = [
        row("sure_in_sync", "landmarks", 0.9, 0.2, "in_sync"), row("sure_in_sync", "fcn", 4.0, 0.1, "in_sync"),
        row("sure_early", "landmarks", 0.2, 2.8), row("sure_early", "fcn", 3.5, 3.4, "audio_early"),
        row("unsure", "fcn", 1.0, 0.0, "no_signal"),
        row("far_off", "fcn", 6.0, -9.0, "audio_late"),
        row("landmarks_only", "landmarks", 0.7, -2.0),
    ]
    listed = tmp_path / "passed.txt"
    curation = batch.curate(rows, None, 3.0, 6, listed, None)
    assert listed.read_text().split() == ["sure_in_sync", "sure_early"]  # fcn judges where it ran
    assert curation.passed == 2 and "confidence >= 3" in curation.engine_rule
    batch.curate(rows, ["landmarks"], 0.5, 6, listed, None)
    assert listed.read_text().split() == ["sure_in_sync", "landmarks_only"]  # landmarks chosen: it judges
    assert not batch.out_of_sync(row("x", "fcn", 4.0, 1.2, "in_sync"))  # the verdict decides: within tolerance
    assert batch.out_of_sync(row("x", "fcn", 4.0, 1.2, "audio_early"))
    assert batch.out_of_sync(row("x", "landmarks", 1.0, -1.6))  # no verdict: an offset to undo
    assert not batch.out_of_sync(row("x", "landmarks", 1.0, 0.4))


# ---- scoring real clips (landmarks) -------------------------------------------------------------------------------

@pytest.mark.slow
def test_score_gives_a_row_per_video_and_engine_and_error_rows(tmp_path, landmarks_only, broken):
    out = tmp_path / "results.csv"
    listed = tmp_path / "list.txt"
    listed.write_text(f"{CLIP}\n{tmp_path / 'gone.mp4'}\n")
    summary = syncnet.score([CLIP, SECOND, tmp_path / "broken", f"@{listed}", CLIP], out, "landmarks",
                            summary_path=tmp_path / "summary.json")
    rows = by_path(read_rows(out))
    assert set(rows) == {CLIP.name, SECOND.name, "text.mp4", "empty.mp4", "truncated.mp4", "gone.mp4"}
    assert all(len(r) == 1 for r in rows.values())  # the same file three times is scored once
    for clip in (CLIP, SECOND):
        ours = rows[clip.name][0]
        direct = syncnet.analyze(clip, "landmarks").to_dict()
        assert ours["status"] == "ok" and ours["error"] == "" and ours["engine"] == "landmarks"
        assert ours["protocol"] == "track" and ours["frames"] == direct["frames"]
        for key in NUMBERS:
            assert ours[key] == pytest.approx(direct["results"][0][key]), key
        assert ours["verdict"] == direct["results"][0].get("verdict", "")
    errors = {name: r[0]["error"] for name, r in rows.items() if r[0]["status"] == "error"}
    assert set(errors) == {"text.mp4", "empty.mp4", "truncated.mp4", "gone.mp4"}
    assert all(e and "\n" not in e for e in errors.values())
    assert "empty" in errors["empty.mp4"] and "gone.mp4" in errors["gone.mp4"]
    assert all(rows[name][0]["engine"] == "" and rows[name][0]["confidence"] is None for name in errors)

    assert (summary.scored, summary.failed, summary.run, summary.skipped) == (2, 4, 6, 0)
    written = json.loads((tmp_path / "summary.json").read_text())
    confidences = [rows[c.name][0]["confidence"] for c in (CLIP, SECOND)]
    assert written["engines"]["landmarks"]["lse_c_mean"] == pytest.approx(sum(confidences) / 2)

    before = out.read_text()
    again = syncnet.score([CLIP, SECOND, tmp_path / "broken", f"@{listed}"], out, "landmarks")
    assert (again.run, again.skipped, again.scored, again.failed) == (0, 6, 2, 4)  # a rerun skips all of them
    assert out.read_text() == before
    fresh = syncnet.score([CLIP], out, "landmarks", overwrite=True)
    assert fresh.run == 1 and [r["path"] for r in read_rows(out)] == [str(CLIP)]


@pytest.mark.slow
def test_a_bug_becomes_an_internal_error_row_and_the_batch_goes_on(tmp_path, landmarks_only, monkeypatch, caplog):
    real = syncnet.api.analyze

    def buggy(path, *args, **kwargs):
        if Path(path) == SECOND:
            raise ZeroDivisionError("division by zero")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(syncnet.api, "analyze", buggy)
    summary = syncnet.score([SECOND, CLIP], tmp_path / "r.jsonl", "landmarks")
    rows = by_path(read_rows(tmp_path / "r.jsonl"))
    assert rows[SECOND.name][0]["error"] == (
        "internal error (a bug, logged with its details): ZeroDivisionError: division by zero"
    )
    assert rows[CLIP.name][0]["status"] == "ok" and summary.scored == 1
    assert "Traceback" in caplog.text and "buggy" in caplog.text  # the traceback is logged


@pytest.mark.slow
def test_curation_writes_the_list_and_corrected_copies(tmp_path, landmarks_only):
    early = tmp_path / "clips" / "early.mp4"
    early.parent.mkdir()
    write_corrected(CLIP, early, -5)  # audio advanced by 5 frames: now 200 ms early
    fixed = tmp_path / "clips" / "fixed"  # inside the input folder: not scored itself
    summary = syncnet.score([early.parent, CLIP], tmp_path / "r.csv", "landmarks", min_confidence=0.3, max_offset=6,
                            fix_dir=fixed)
    rows = by_path(read_rows(tmp_path / "r.csv"))
    assert rows["early.mp4"][0]["offset_frames"] == 5 and rows[CLIP.name][0]["offset_frames"] == 0
    assert (tmp_path / "r.passed.txt").read_text().split() == [str(early), str(CLIP)]
    assert sorted(p.name for p in fixed.iterdir()) == ["early_synced.mp4"]  # only the one out of sync
    assert summary.curation.passed == 2 and summary.curation.fixed == 1
    assert syncnet.analyze(fixed / "early_synced.mp4", "landmarks").results[0].offset_frames == 0

    strict = syncnet.score([early.parent, CLIP], tmp_path / "r.csv", "landmarks", max_offset=2, fix_dir=fixed,
                           passed_list=tmp_path / "strict.txt")  # a rerun: only the curation changes
    assert strict.run == 0 and (tmp_path / "strict.txt").read_text().split() == [str(CLIP)]
    assert (strict.curation.passed, strict.curation.fixed) == (1, 0)


# ---- the command line ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, words",
    [
        (["score", "x.mp4"], ["--out"]),
        (["score", str(CLIP), "--out", "r.txt"], ["--out", ".csv"]),
        (["score", str(CLIP), "--out", "r.csv", "--workers", "0"], ["--workers"]),
        (["score", str(CLIP), "--out", "r.csv", "--ray-address", "auto"], ["--backend ray"]),
        (["score", "no/such/folder", "--out", "r.csv"], ["no/such/folder"]),
    ],
)
@pytest.mark.slow
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, words):
    done = run_cli(*[str(tmp_path / a) if a.startswith("r.") else a for a in args])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_rows_and_a_rerun_goes_on(tmp_path):
    out = tmp_path / "r.parquet"
    inputs = [str(c) for c in (SECOND, CLIP, THIRD, CLIPS / "syncnet_example.avi")]
    run = start_cli("score", *inputs, "--out", str(out), "--engine", "landmarks")
    wait_for_rows(out.with_name(out.name + ".partial.jsonl"), 1, run)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    first = read_rows(out)  # the Parquet file was written from the finished rows
    assert 1 <= len(first) < 4 and not out.with_name(out.name + ".partial.jsonl").exists()

    done = run_cli("score", *inputs, "--out", str(out), "--engine", "landmarks")
    assert done.returncode == 0, done.stderr
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == sorted(inputs) and rows[: len(first)] == first
    assert f"{len(first)} already done" in done.stderr


@pytest.mark.slow
def test_a_killed_run_with_two_workers_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "r.csv"
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in (SECOND, CLIP, THIRD):  # three clips, three copies each: nine videos
        for copy in range(3):
            shutil.copy(clip, folder / f"{copy}_{clip.name}")
    run = start_cli("score", str(folder), "--out", str(out), "--engine", "landmarks", "--workers", "2")
    wait_for_rows(out, 2, run)
    os.killpg(run.pid, signal.SIGKILL)  # the CLI and its worker processes, at once
    run.communicate(timeout=60)
    first = read_rows(out)
    assert 2 <= len(first) < 9

    done = run_cli("score", str(folder), "--out", str(out), "--engine", "landmarks", "--workers", "2")
    assert done.returncode == 0, done.stderr
    rows = by_path(read_rows(out))
    assert len(rows) == 9 and all(len(r) == 1 for r in rows.values())  # each video once, none lost or repeated
    assert f"{len(first)} already done" in done.stderr and "9 videos scored, 0 failed" in done.stderr
    for name, (r,) in rows.items():  # copies of a clip give its numbers, whichever process scored them
        twin = rows[f"0_{name.split('_', 1)[1]}"][0]
        assert all(r[key] == pytest.approx(twin[key]) for key in NUMBERS)


# ---- backends -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_processes_and_ray_give_the_same_rows_as_one_process(tmp_path, landmarks_only, broken):
    inputs = [CLIP, SECOND, THIRD, broken["text.mp4"]]
    local = syncnet.score(inputs, tmp_path / "one.csv", "landmarks")
    pool = syncnet.score(inputs, tmp_path / "two.csv", "landmarks", workers=2)

    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        on_ray = syncnet.score(inputs, tmp_path / "ray.jsonl", "landmarks", backend="ray", workers=2)
    finally:
        ray.shutdown()
    expected = by_path(read_rows(tmp_path / "one.csv"))
    for name in ("two.csv", "ray.jsonl"):
        got = by_path(read_rows(tmp_path / name))
        assert set(got) == set(expected)
        for video, (r,) in got.items():
            assert r["status"] == expected[video][0]["status"] and r["error"] == expected[video][0]["error"]
            for key in NUMBERS:
                assert r[key] == pytest.approx(expected[video][0][key]), (name, video, key)
    for other in (pool, on_ray):
        assert (other.scored, other.failed) == (local.scored, local.failed) == (3, 1)
        for key in ("lse_c_mean", "lse_c_median", "lse_d_mean", "lse_d_median"):
            assert other.engines["landmarks"][key] == pytest.approx(local.engines["landmarks"][key])


@pytest.mark.slow
def test_syncnet_engines_with_synthetic_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(write_weights(tmp_path / "syncnet_v2.model")))
    pipeline.unload_engines()
    try:
        summary = syncnet.score([SECOND], tmp_path / "r.jsonl", ["fcn", "landmarks"])
        direct = syncnet.analyze(SECOND, ["fcn", "landmarks"]).to_dict()
    finally:
        pipeline.unload_engines()
    rows = {r["engine"]: r for r in read_rows(tmp_path / "r.jsonl")}
    assert list(rows) == ["fcn", "landmarks"] and summary.skipped_engines == {}
    for result in direct["results"]:
        for key in NUMBERS:
            assert rows[result["engine"]][key] == pytest.approx(result[key])
    assert list(summary.engines) == ["fcn", "landmarks"]


@pytest.mark.slow
def test_engines_that_cannot_run_are_reported_once_and_no_engine_is_an_error_row(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "missing.model"))
    pipeline.unload_engines()
    try:
        summary = syncnet.score([SECOND], tmp_path / "all.csv", "all")
        none = syncnet.score([SECOND], tmp_path / "fcn.csv", "fcn")
    finally:
        pipeline.unload_engines()
    assert [r["engine"] for r in read_rows(tmp_path / "all.csv")] == ["landmarks"]
    assert set(summary.skipped_engines) == {"syncnet", "fcn"} and "missing.model" in summary.skipped_engines["fcn"]
    assert any(line.startswith("fcn: skipped:") for line in summary.lines())
    (only,) = read_rows(tmp_path / "fcn.csv")
    assert only["status"] == "error" and only["error"].startswith("no engine could run (fcn: ")
    assert none.failed == 1


# ---- the app ------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_app_batch_tab_gives_the_table_summary_and_csv(landmarks_only, broken):
    import app

    job = app.batch([str(CLIP), str(broken["text.mp4"])], ["landmarks"])  # yields once, as for Gradio to copy
    table, summary, download = next(job)
    assert [r[:3] for r in table] == [[CLIP.name, "ok", "landmarks"], ["text.mp4", "error", "-"]]
    assert "1 videos scored, 1 could not be" in summary and "| landmarks | 1 |" in summary
    with open(download, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [CLIP.name, "text.mp4"]  # upload names, not the server's paths
    assert float(rows[0]["confidence"]) == pytest.approx(table[0][5], abs=1e-3)
    job.close()
    assert not Path(download).exists()  # the app's own copy is removed once Gradio has its own
    with pytest.raises(Exception, match="Upload one or more videos"):
        next(app.batch([], ["landmarks"]))
