"""Throughput (videos per minute) and peak server memory for N concurrent users of one app's /detect endpoint.

    python benchmarks/load.py --users 1 2 4 8 --videos-per-user 3

Starts app.py (its production queue and limits) in a subprocess on 127.0.0.1, then for each N runs N threads, each
with its own gradio_client Client sending its videos one after another. Peak memory is the server process's
resident set, sampled every 0.1 s during that run. Writes the table to benchmarks/RESULTS_load.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # app.py, for its limits
DEFAULT_CLIP = ROOT / "tests" / "data" / "clips" / "pcavs_posesrc_00067.mp4"
RESULTS = ROOT / "benchmarks" / "RESULTS_load.md"
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def start_app(port: int) -> subprocess.Popen:
    code = f"import app; app.launch(server_name='127.0.0.1', server_port={port}, quiet=True)"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited: {server.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the app did not start in time")


def run_users(url: str, clip: Path, users: int, per_user: int, engines: list[str] | None, pid: int) -> dict:
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]
    errors: list[str] = []
    offsets: set[tuple] = set()
    peak = [rss_mb(pid)]
    done = threading.Event()

    def user(client: Client) -> None:
        for _ in range(per_user):
            try:
                args = (handle_file(str(clip)),) if engines is None else (handle_file(str(clip)), engines)
                report = client.predict(*args, api_name="/detect")
                offsets.add(tuple((r["engine"], r["offset_frames"]) for r in report["results"]))
            except Exception as error:  # noqa: BLE001 (counted and reported)
                errors.append(f"{type(error).__name__}: {error}")

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=user, args=(c,)) for c in clients]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    ok = users * per_user - len(errors)
    return {"users": users, "videos": users * per_user, "ok": ok, "wall_s": wall, "per_min": 60 * ok / wall,
            "peak_mb": peak[0], "errors": errors, "distinct_answers": len(offsets)}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:")) / 2**20
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {system}; load average at start {load}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--videos-per-user", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--engines", nargs="+", default=None, help="default: all the app loaded")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = parser.parse_args()

    port = free_port()
    header = machine()
    server = start_app(port)
    url = f"http://127.0.0.1:{port}/"
    try:
        from gradio_client import Client, handle_file

        warm = Client(url, verbose=False)  # waits for the engines; the first analysis is not timed
        first = warm.predict(handle_file(str(args.clip)), *([args.engines] if args.engines else []), api_name="/detect")
        engines = [r["engine"] for r in first["results"]]
        idle = rss_mb(server.pid)
        rows = [run_users(url, args.clip, n, args.videos_per_user, args.engines, server.pid) for n in args.users]
    finally:
        server.terminate()
        server.wait(timeout=30)

    import app

    weights = os.environ.get("SYNCNET_WEIGHTS")
    lines = [
        "" if args.append else "# Load: concurrent /detect users on one app\n",
        f"## {', '.join(engines)}" + (f" (SYNCNET_WEIGHTS={Path(weights).name})" if weights else ""),
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {header}",
        f"- Command: `python benchmarks/load.py {' '.join(sys.argv[1:])}`".replace("load.py `", "load.py`"),
        f"- Clip: `{args.clip.name}`; engines that ran: {', '.join(engines)}; app limits: "
        f"{app.CONCURRENCY_LIMIT} analyses at once, {app.QUEUE_SIZE} waiting",
        f"- Server memory after the warm-up request: {idle:.0f} MB",
        "",
        "| users | videos | ok | wall (s) | videos/min | peak server RSS (MB) | same answer for all |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['users']} | {r['videos']} | {r['ok']} | {r['wall_s']:.1f} | {r['per_min']:.1f} | "
                     f"{r['peak_mb']:.0f} | {'yes' if r['distinct_answers'] == 1 else 'NO'} |")
    errors = [e for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Errors:", *[f"- {e}" for e in errors]]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "a" if args.append else "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
