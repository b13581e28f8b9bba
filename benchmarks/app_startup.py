"""How long `python app.py` takes, offline, from process start until the page answers; and its first /detect.

    .venv/bin/python benchmarks/app_startup.py [--runs 3] [--clip examples/pcavs_posesrc_00067.mp4]

Prints a markdown table (machine, command, date in the header). The app is started with an empty Hugging Face
cache and, unless --network-attempt, HF_HUB_OFFLINE=1; with --network-attempt the weights download is tried and
must fail on its own (no network), as on a machine that does not know it is offline.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_once(clip: Path, offline_flag: bool) -> tuple[float, float]:
    """Seconds until GET / answers 200, and seconds for one /detect call after that."""
    from gradio_client import Client, handle_file

    port = free_port()
    with tempfile.TemporaryDirectory() as hf_home:
        env = {**os.environ, "HF_HOME": hf_home, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("SYNCNET_WEIGHTS", None)
        env.pop("HF_HUB_OFFLINE", None)
        if offline_flag:
            env["HF_HUB_OFFLINE"] = "1"
        started = time.perf_counter()
        server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.perf_counter() - started > START_TIMEOUT_S or server.poll() is not None:
                    raise RuntimeError("the app did not start")
                time.sleep(0.1)
            startup = time.perf_counter() - started
            client = Client(url, verbose=False)
            began = time.perf_counter()
            client.predict(handle_file(str(clip)), api_name="/detect")
            return startup, time.perf_counter() - began
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=ROOT / "examples" / "pcavs_posesrc_00067.mp4")
    parser.add_argument("--network-attempt", action="store_true", help="do not set HF_HUB_OFFLINE=1")
    args = parser.parse_args()
    rows = [start_once(args.clip, not args.network_attempt) for _ in range(args.runs)]
    mode = "download attempted (no network)" if args.network_attempt else "HF_HUB_OFFLINE=1"
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    print(f"# app start-up, offline, {mode} ({machine})")
    print(f"# command: {' '.join(sys.argv)}; date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# clip for /detect: {args.clip.name}")
    print("| run | start-up to first page (s) | first /detect (s) |")
    print("| --- | --- | --- |")
    for i, (startup, detect) in enumerate(rows, 1):
        print(f"| {i} | {startup:.1f} | {detect:.1f} |")


if __name__ == "__main__":
    main()
