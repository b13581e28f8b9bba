"""The package as a library: its dependencies, its public names, its error root, and an installed copy."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import gradio as gr
import pytest

import syncnet
from syncnet import cli, pipeline
from syncnet.errors import MediaError, SyncNetError
from syncnet.hls import StreamWindow
from tests.paths import CLIPS

ROOT = Path(__file__).resolve().parents[1]
CLIP = CLIPS / "syncnet_example.avi"


def _requirement_names(lines: list[str]) -> dict[str, str]:
    pins = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {re.split(r"[=<>\[ ]", pin)[0].lower().replace("_", "-"): pin for pin in pins}


def _python_prints(code: str) -> str:
    """What a fresh interpreter, started in the checkout, prints when it runs ``code``."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_pyproject_lists_the_same_dependencies_as_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    space = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert _requirement_names(project["dependencies"]) == space


@pytest.mark.slow
def test_public_names_resolve_and_import_stays_light():
    code = (
        "import sys, syncnet\n"
        "heavy = [m for m in ('torch', 'av', 'mediapipe', 'gradio') if m in sys.modules]\n"
        "names = {n: type(getattr(syncnet, n)).__name__ for n in syncnet.__all__}\n"
        "print(heavy, names)\n"
    )
    heavy, names = _python_prints(code).split(" ", 1)
    assert heavy == "[]"
    for name in ("analyze", "analyze_stream", "load_engines", "Report", "SyncNetError", "__version__"):
        assert f"'{name}'" in names


def test_torch_threads_wait_passively_unless_the_user_chose(monkeypatch):
    """Spinning OpenMP threads would take the cores that decoding and the face stage need (README, "Whole pipeline")."""
    code = "import os, syncnet\nprint(os.environ['OMP_WAIT_POLICY'])\n"
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _python_prints(code).strip() == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _python_prints(code).strip() == "ACTIVE"


def test_landmarks_engine_loads_without_torch_or_pyav():
    code = (
        "import sys\n"
        "from syncnet.engines import load_engine\n"
        "engine = load_engine('landmarks')\n"
        "print(engine.name, 'torch' in sys.modules, 'av' in sys.modules)\n"
    )
    assert _python_prints(code).split() == ["landmarks", "False", "False"]


def test_a_missing_file_is_a_syncnet_error():
    with pytest.raises(SyncNetError, match="no such file"):
        syncnet.analyze(ROOT / "no-such-video.mp4", engines=["landmarks"])


def test_errors_a_user_causes_are_not_value_errors():
    assert not issubclass(SyncNetError, ValueError)  # a numpy or torch ValueError is a bug, not bad input
    assert str(MediaError("too\n  short")) == "too short"  # one line, whatever the message was built from


def _broken_pipeline(*args, **kwargs):
    raise ZeroDivisionError("a bug in the pipeline")


def test_cli_reports_a_bug_as_an_internal_error(monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "analyze_file", _broken_pipeline)
    code = cli.main(["detect", str(CLIP), "--engine", "landmarks", "--verbose"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INTERNAL_ERROR != cli.EXIT_BAD_INPUT
    assert "internal error" in err and "ZeroDivisionError: a bug in the pipeline" in err
    assert "Traceback" in err


def test_cli_reports_bad_input_as_bad_input(capsys):
    code = cli.main(["detect", str(ROOT / "no-such-video.mp4"), "--engine", "landmarks", "--verbose"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_BAD_INPUT
    assert err[-1].startswith("syncnet: error: no such file")


def test_app_reports_a_bug_as_an_internal_error_and_bad_input_as_its_message(caplog):
    import app

    with pytest.raises(gr.Error, match="Internal error while testing .*ZeroDivisionError"):
        with app.user_errors("testing"):
            _broken_pipeline()
    assert "a bug in the pipeline" in caplog.text  # logged with its traceback on the server
    with pytest.raises(gr.Error) as shown:
        with app.user_errors("testing"):
            raise MediaError("no face here")
    assert shown.value.message == "no face here"


def test_stream_loop_reports_a_bug_per_window_and_goes_on(monkeypatch):
    windows = [StreamWindow(t_start=5.0 * i, t_end=5.0 * (i + 1), media=None) for i in range(2)]  # type: ignore[arg-type]
    monkeypatch.setattr(pipeline, "check_url", lambda url, allow_private=False: None)
    monkeypatch.setattr(pipeline, "get_engines", lambda names=None: ([], []))
    monkeypatch.setattr(pipeline, "stream_windows", lambda *a, **k: (w for w in windows))
    monkeypatch.setattr(pipeline, "analyze_media", _broken_pipeline)
    reports = list(pipeline.analyze_stream("https://example.com/live.m3u8", ["landmarks"], window_s=5.0))
    assert [r.t_start for r in reports] == [0.0, 5.0]
    assert all(r.report is None and r.error.startswith("internal error") for r in reports)


@pytest.mark.slow
def test_pip_install_into_a_fresh_environment_runs_from_another_folder(tmp_path):
    """`pip install .` in a new virtual environment; the CLI, the library and the error root work from elsewhere.

    The dependencies are the test environment's own (a .pth file), so that only this package is installed.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "test_dependencies.pth").write_text(ours + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True, timeout=600)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    detect = subprocess.run([str(venv / "bin" / "syncnet"), "detect", str(CLIP), "--engine", "landmarks", "--json"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert detect.returncode == 0, detect.stderr
    assert json.loads(detect.stdout)["results"][0]["engine"] == "landmarks"
    code = (
        "import syncnet\n"
        f"print(syncnet.__file__)\n"
        f"print(syncnet.analyze({str(CLIP)!r}, engines=['landmarks']).to_dict()['results'][0]['offset_frames'])\n"
        "try:\n"
        "    syncnet.analyze('missing.mp4')\n"
        "except syncnet.SyncNetError as error:\n"
        "    print('SyncNetError:', error)\n"
    )
    library = subprocess.run([str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                             timeout=300)
    assert library.returncode == 0, library.stderr
    where, offset, caught = library.stdout.strip().splitlines()
    assert where.startswith(site)  # the installed copy, not the checkout
    assert offset == str(json.loads(detect.stdout)["results"][0]["offset_frames"])
    assert caught == "SyncNetError: no such file: missing.mp4"
