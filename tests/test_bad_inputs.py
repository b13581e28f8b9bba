"""A corpus of bad and odd inputs, generated here, sent through the CLI (subprocess) and the API (gradio_client).

Each input gets either a result or a specific one-line message, within a bounded time; nothing crashes the
server and nothing is left in the temporary folders. Inputs whose picture and sound stay in sync (another frame
rate, sample rate, channel layout, rotation or size) must give the same offset as the clip they were made from.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.media_tools import ffmpeg
from tests.paths import CLIPS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCE = CLIPS / "pcavs_posesrc_00067.mp4"  # a real talking face, 224x224, 4.6 s
CALL_LIMIT_S = 120.0  # every input is answered within this (CLI: including the start-up of Python and the engines)
SAME_OFFSET_ENGINES = ("landmarks",)  # engines whose offset is meaningful here (SyncNet weights are synthetic)
ENC = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


@dataclass
class Case:
    name: str  # file name, with the extension the user's file has
    make: list[str] | None  # ffmpeg arguments after the inputs ("{base}" is the 3 s base clip), or None: see below
    expect: str  # "result", "same" (a result with the base clip's offset), or a regex for the message
    also_result: bool = False  # a result is acceptable too (e.g. two faces, a face that leaves)


CASES = [
    Case("base.mp4", None, "result"),
    Case("zero_bytes.mp4", None, r"empty file"),
    Case("truncated.mp4", None, r"unreadable or corrupt media file"),
    Case("truncated_faststart.mp4", None, r"too short|corrupt|face", also_result=True),
    Case("random_bytes.mp4", None, r"unreadable or corrupt media file"),
    Case("notes.mp4", None, r"unreadable or corrupt media file"),
    Case("playlist.m3u8", None, r"unreadable or corrupt media file"),  # reads another file if ffmpeg is let
    Case("concat_list.mp4", None, r"unreadable or corrupt media file"),
    Case("audio_only.mp4", ["-i", "{base}", "-vn", "-c:a", "copy"], r"no video stream"),
    Case("video_only.mp4", ["-i", "{base}", "-an", "-c:v", "copy"], r"no audio stream"),
    Case("colour_bars.mp4", ["-f", "lavfi", "-i", "smptebars=s=160x120:r=25:d=3", "-f", "lavfi", "-i",
                             "sine=frequency=440:sample_rate=16000:duration=3", *ENC, "-c:a", "aac", "-shortest"],
         r"no face"),
    Case("two_faces.mp4", ["-i", "{base}", "-i", "{base}", "-filter_complex", "[0:v][1:v]hstack", "-map", "1:a",
                           *ENC, "-c:a", "copy"], r"face", also_result=True),
    Case("face_leaves.mp4", ["-i", "{base}", "-filter_complex",
                             "color=black:s=448x224:r=25:d=3[bg];[bg][0:v]overlay=x='if(lt(t,1.5),0,(t-1.5)*400)':shortest=1",
                             "-map", "0:a", *ENC, "-c:a", "copy"], r"face|too short", also_result=True),
    Case("one_frame.mp4", ["-i", "{base}", "-frames:v", "1", "-t", "0.04", *ENC, "-c:a", "aac"], r"too short"),
    Case("half_second.mp4", ["-i", "{base}", "-t", "0.5", *ENC, "-c:a", "aac"], r"too short"),
    Case("huge_resolution.mp4", ["-i", "{base}", "-t", "1.6", "-vf", "scale=7680:4320", *ENC, "-c:a", "aac"],
         r"too short|face", also_result=True),
    Case("too_long.mp4", ["-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=75", "-f", "lavfi", "-i",
                          "sine=sample_rate=8000:duration=75", *ENC, "-c:a", "aac", "-b:a", "16k"],
         r"video too long: 75"),
    # the fps filter, not the output option -r, which here shows each picture ~3 frames late at 12 fps
    Case("fps_12.mp4", ["-i", "{base}", "-vf", "fps=12", *ENC, "-c:a", "copy"], "same"),
    Case("fps_29.97.mp4", ["-i", "{base}", "-vf", "fps=30000/1001", *ENC, "-c:a", "copy"], "same"),
    Case("fps_60.mp4", ["-i", "{base}", "-vf", "fps=60", *ENC, "-c:a", "copy"], "same"),
    Case("fps_variable.mp4", ["-i", "{base}", "-vf", r"select='lt(mod(n\,5)\,3)'", "-fps_mode", "vfr", *ENC,
                              "-c:a", "copy"], "same"),
    # stored turned a quarter to the left, with a display matrix turning it back (ffmpeg's angle: anticlockwise)
    Case("rotated_phone.mp4", ["-display_rotation", "-90", "-i", "{base_rotated}", "-c", "copy"], "same"),
    Case("silent.mp4", ["-i", "{base}", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-map", "0:v", "-map", "1:a",
                        "-c:v", "copy", "-c:a", "aac", "-shortest"], r"the soundtrack is silent"),
    Case("audio_8khz.mp4", ["-i", "{base}", "-ar", "8000", "-c:v", "copy", "-c:a", "aac"], "same"),
    Case("audio_48khz.mp4", ["-i", "{base}", "-ar", "48000", "-c:v", "copy", "-c:a", "aac"], "same"),
    Case("audio_5.1.mp4", ["-i", "{base}", "-af", "pan=5.1|FL=c0|FR=c0|FC=c0|LFE=c0|BL=c0|BR=c0", "-c:v", "copy",
                           "-c:a", "aac"], "same"),
]


def make_corpus(folder: Path) -> dict[str, Path]:
    """Every case's input file, generated from SOURCE and ffmpeg's lavfi sources."""
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.mp4"
    ffmpeg("-i", str(SOURCE), "-t", "3", *ENC, "-c:a", "aac", str(base))
    base_rotated = folder / "base_rotated_src.mp4"  # the picture turned a quarter to the left, as a phone stores it
    ffmpeg("-i", str(base), "-vf", "transpose=2,crop=224:176", *ENC, "-c:a", "copy", str(base_rotated))
    faststart = folder / "faststart_src.mp4"
    ffmpeg("-i", str(base), "-c", "copy", "-movflags", "+faststart", str(faststart))
    rng = np.random.default_rng(5)
    paths = {}
    for case in CASES:
        path = paths[case.name] = folder / case.name
        if case.make is not None:
            args = [a.format(base=base, base_rotated=base_rotated) for a in case.make]
            ffmpeg(*args, str(path))
    (folder / "zero_bytes.mp4").write_bytes(b"")
    data = base.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 2 // 5])  # the index (moov) is at the end: lost
    data = faststart.read_bytes()
    (folder / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])  # index first, half the samples
    (folder / "random_bytes.mp4").write_bytes(rng.bytes(300_000))
    (folder / "notes.mp4").write_text("Meeting notes\n" * 200)
    (folder / "playlist.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:3.0,\nfile://{base}\n#EXT-X-ENDLIST\n")
    (folder / "concat_list.mp4").write_text("ffconcat version 1.0\nfile base.mp4\n")
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def check_outcome(case: Case, outcome: dict | None, message: str | None, base: dict | None) -> None:
    """`outcome` is the report (a result) or None with `message` (a specific one-line reason)."""
    import re

    if outcome is None:
        assert message and "\n" not in message.strip() and "Traceback" not in message, message
        assert case.expect not in ("result", "same"), f"{case.name}: expected a result, got: {message}"
        assert re.search(case.expect, message, re.IGNORECASE), f"{case.name}: {message}"
        return
    assert case.expect in ("result", "same") or case.also_result, f"{case.name}: expected /{case.expect}/, got a result"
    assert outcome["results"], f"{case.name}: no engine ran: {outcome['skipped']}"
    for result in outcome["results"]:
        assert len(result["dists"]) == 31 and np.isfinite(result["dists"]).all(), case.name
        assert -15 <= result["offset_frames"] <= 15 and np.isfinite(result["confidence"]), case.name
    if case.expect == "same":
        ours = {r["engine"]: r["offset_frames"] for r in outcome["results"]}
        theirs = {r["engine"]: r["offset_frames"] for r in base["results"]}
        for engine in set(SAME_OFFSET_ENGINES) & set(ours) & set(theirs):
            assert abs(ours[engine] - theirs[engine]) <= 1, (case.name, engine, ours[engine], theirs[engine])


# --- the command line ---------------------------------------------------------------------------------------------

# Through the CLI: every input refused with a message (cheap: it fails before the engines load, or at the face
# stage) and a few that must give results; each CLI run loads Python, torch and MediaPipe anew (~8 s CPU).
CLI_CASES = [c for c in CASES if c.expect not in ("result", "same") and not c.also_result]
CLI_CASES += [c for c in CASES if c.name in ("rotated_phone.mp4", "fps_variable.mp4")]


def run_cli(path: Path, weights: Path, tmp: Path) -> tuple[dict | None, str | None]:
    """`python -m syncnet detect PATH --json` with its own empty TMPDIR, which must stay empty.

    `--max-duration 60` (the app's limit; the CLI's default is 4 hours) so that the 75 s case is refused here too.
    """
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SYNCNET_ALLOW_PRIVATE_HOSTS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), SYNCNET_WEIGHTS=str(weights), TMPDIR=str(tmp))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "syncnet", "detect", str(path), "--json", "--max-duration", "60"],
                          capture_output=True, text=True, timeout=CALL_LIMIT_S, cwd=ROOT, env=env)
    assert time.monotonic() - t0 < CALL_LIMIT_S
    assert list(tmp.iterdir()) == [], f"{path.name}: left {list(tmp.iterdir())}"
    if done.returncode == 0:
        return json.loads(done.stdout), None
    assert done.returncode == 2, f"{path.name}: exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout == "" and done.stderr.startswith("syncnet: error: "), done.stderr[-2000:]
    return None, done.stderr.strip()


@pytest.fixture(scope="module")
def cli_base(corpus, synthetic_weights, tmp_path_factory):
    outcome, message = run_cli(corpus["base.mp4"], synthetic_weights, tmp_path_factory.mktemp("cli") / "tmp")
    assert outcome is not None, message
    return outcome


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.name for c in CLI_CASES])
def test_cli(case, corpus, synthetic_weights, cli_base, tmp_path):
    outcome, message = run_cli(corpus[case.name], synthetic_weights, tmp_path / "tmp")
    check_outcome(case, outcome, message, cli_base)


# --- the API --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def app_temp(tmp_path_factory) -> Path:
    """The app's process-wide temp folder for this module (Gradio's upload cache is elsewhere: GRADIO_TEMP_DIR)."""
    return tmp_path_factory.mktemp("app-tmp")


@pytest.fixture(scope="module")
def app_client(synthetic_weights, app_temp, tmp_path_factory):
    from gradio_client import Client

    from tests.app_server import running_app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("SYNCNET_WEIGHTS", str(synthetic_weights))
        env.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio-cache")))
        env.delenv("SYNCNET_ALLOW_PRIVATE_HOSTS", raising=False)
        env.setattr(tempfile, "tempdir", str(app_temp))
        with running_app() as url:
            yield Client(url, verbose=False)


def call_detect(client, path: Path) -> tuple[dict | None, str | None]:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    t0 = time.monotonic()
    try:
        outcome, message = client.predict(handle_file(str(path)), api_name="/detect"), None
    except AppError as error:
        outcome, message = None, str(error)
    assert time.monotonic() - t0 < CALL_LIMIT_S
    return outcome, message


def test_api(corpus, app_client, app_temp):
    """All cases through one app, in one session: each answered, the server alive after each, no files left."""
    import app

    base, _ = call_detect(app_client, corpus["base.mp4"])
    assert base is not None
    before = set(app_temp.rglob("*"))
    outputs_before = set(app.output_root().rglob("*"))
    failures = []
    for case in CASES:
        outcome, message = call_detect(app_client, corpus[case.name])
        try:
            check_outcome(case, outcome, message, base)
        except AssertionError as error:
            failures.append(str(error))
    assert failures == []
    again, _ = call_detect(app_client, corpus["base.mp4"])  # still serving, same answer
    assert [(r["engine"], r["offset_frames"]) for r in again["results"]] == \
        [(r["engine"], r["offset_frames"]) for r in base["results"]]
    assert set(app_temp.rglob("*")) == before, "files left in the temp folder"
    assert set(app.output_root().rglob("*")) == outputs_before, "/detect wrote files"


def test_upload_limits_before_decoding(app_client, tmp_path, monkeypatch, corpus):
    """Too large: refused by the upload itself; too long: refused from the container header, nothing decoded."""
    from gradio_client import handle_file

    import syncnet.media

    decoded = []
    real = syncnet.media._decode
    monkeypatch.setattr(syncnet.media, "_decode", lambda *a, **k: decoded.append(a) or real(*a, **k))
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.write(corpus["base.mp4"].read_bytes())
        f.truncate(51 * 2**20)
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        app_client.predict(handle_file(str(big)), api_name="/detect")
    outcome, message = call_detect(app_client, corpus["too_long.mp4"])
    assert outcome is None and "video too long: 75.0 s (limit 60 s)" in message
    assert decoded == [] and time.monotonic() - t0 < 30
