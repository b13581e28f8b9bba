"""How long `python app.py` takes, offline, from process start until the page answers; and its first /detect.

    .venv/bin/python benchmarks/app_startup.py [--runs 3] [--clip examples/pcavs_posesrc_00067.mp4]

Prints a markdown table (machine, command, date in the header). The app is started with HF_HUB_OFFLINE=1 and an
empty Hugging Face cache, as a Space without network would be.
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


def start_once(clip: Path) -> tuple[float, float]:
    """Seconds until GET / answers 200, and seconds for one /detect call after that."""
    from gradio_client import Client, handle_file

    port = free_port()
    with tempfile.TemporaryDirectory() as hf_home:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": hf_home, "GRADIO_SERVER_PORT": str(port),
               "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("SYNCNET_WEIGHTS", None)
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
    args = parser.parse_args()
    rows = [start_once(args.clip) for _ in range(args.runs)]
    print(f"# app start-up, offline ({platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()})")
    print(f"# command: {' '.join(sys.argv)}; date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# clip for /detect: {args.clip.name}")
    print("| run | start-up to first page (s) | first /detect (s) |")
    print("| --- | --- | --- |")
    for i, (startup, detect) in enumerate(rows, 1):
        print(f"| {i} | {startup:.1f} | {detect:.1f} |")


if __name__ == "__main__":
    main()
