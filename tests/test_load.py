"""Load: concurrent /detect requests through gradio_client to one app: correct results, the concurrency and queue
limits hold (which is what bounds memory), and the server stays within a memory bound."""
from __future__ import annotations

import copy
import threading
import time

import pytest
from gradio_client import Client, handle_file

from syncnet import pipeline
from tests.media_tools import ffmpeg
from tests.paths import CLIPS

pytestmark = pytest.mark.slow

SOURCE = CLIPS / "pcavs_posesrc_00067.mp4"
ENGINES = ["landmarks"]  # the engine that runs offline; the queue does not care which
MEMORY_BOUND_MB = 1500  # growth of this process (app + clients) while the jobs run


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("load") / "clip.mp4"
    ffmpeg("-i", str(SOURCE), "-t", "2.5", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path),
           timeout=60)
    return path


@pytest.fixture(scope="module")
def app_url():
    from tests.app_server import running_app

    with pytest.MonkeyPatch.context() as env:
        env.delenv("SYNCNET_WEIGHTS", raising=False)
        env.setenv("HF_HUB_OFFLINE", "1")
        with running_app() as url:
            yield url


@pytest.fixture
def counted(monkeypatch):
    """Count analyses running at once; optionally hold them at a gate, and answer with a stored report."""
    state = {"running": 0, "peak": 0, "calls": 0, "gate": None, "canned": None}
    lock = threading.Lock()
    real = pipeline.analyze_file

    def analyze_file(*args, **kwargs):
        with lock:
            state["running"] += 1
            state["calls"] += 1
            state["peak"] = max(state["peak"], state["running"])
        try:
            if state["gate"] is not None:
                state["gate"].wait(120)
            if state["canned"] is not None:
                return copy.deepcopy(state["canned"])
            return real(*args, **kwargs)
        finally:
            with lock:
                state["running"] -= 1

    monkeypatch.setattr(pipeline, "analyze_file", analyze_file)
    return state


def offsets(report: dict) -> list[tuple[str, int]]:
    return [(r["engine"], r["offset_frames"]) for r in report["results"]]


def test_concurrent_users_get_correct_results(app_url, clip, counted):
    import app

    reference = Client(app_url, verbose=False).predict(handle_file(str(clip)), ENGINES, api_name="/detect")
    assert reference["results"]
    users = 6
    baseline, peak_rss = rss_mb(), [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_rss[0] = max(peak_rss[0], rss_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [Client(app_url, verbose=False) for _ in range(users)]
    jobs = [c.submit(handle_file(str(clip)), ENGINES, api_name="/detect") for c in clients]
    reports = [job.result(timeout=600) for job in jobs]
    done.set()
    sampler.join()
    for report in reports:
        assert offsets(report) == offsets(reference)
        assert [r["dists"] for r in report["results"]] == [r["dists"] for r in reference["results"]]
    assert counted["calls"] == users + 1
    assert counted["peak"] <= app.CONCURRENCY_LIMIT
    assert peak_rss[0] - baseline < MEMORY_BOUND_MB, (baseline, peak_rss[0])


def test_queue_limit_turns_extra_requests_away(app_url, clip, counted):
    """With every worker busy, QUEUE_SIZE requests wait and the rest are refused at once; the waiting ones finish.

    The held requests answer with one stored report: this test is about the queue, the one above about results."""
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError, Status

    import app

    counted["canned"] = pipeline.analyze_file(clip, ENGINES)
    counted["gate"] = gate = threading.Event()
    client = Client(app_url, verbose=False)
    extra = 3
    total = app.CONCURRENCY_LIMIT + app.QUEUE_SIZE + extra
    jobs = []
    try:
        for _ in range(total):
            jobs.append(client.submit(handle_file(str(clip)), ENGINES, api_name="/detect"))
            time.sleep(0.05)  # in order: the first ones take the workers, then the queue fills
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:  # 2 running, QUEUE_SIZE waiting, the extra ones already answered
            codes = [job.status().code for job in jobs]
            state = (counted["running"], codes.count(Status.IN_QUEUE), sum(job.done() for job in jobs))
            if state == (app.CONCURRENCY_LIMIT, app.QUEUE_SIZE, extra):
                break
            time.sleep(0.2)
        assert state == (app.CONCURRENCY_LIMIT, app.QUEUE_SIZE, extra)
    finally:
        gate.set()
    refused, results = 0, []
    for job in jobs:
        try:
            results.append(job.result(timeout=600))
        except (QueueError, AppError) as error:
            assert "queue is full" in str(error).lower()
            refused += 1
    assert refused == extra
    assert len(results) == app.CONCURRENCY_LIMIT + app.QUEUE_SIZE
    assert all(offsets(r) == offsets(results[0]) and r["results"] for r in results)
    assert counted["peak"] <= app.CONCURRENCY_LIMIT
