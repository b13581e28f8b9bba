"""Finding and verifying the weights, offline: SYNCNET_WEIGHTS, a Hugging Face cache, and each kind of bad file."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from syncnet import weights
from syncnet.scoring import Calibration
from syncnet.weights import (
    CARD_CONFIG,
    WeightsChecksumError,
    WeightsCorrupt,
    WeightsMismatch,
    WeightsSpec,
    WeightsTruncated,
    WeightsUnavailable,
    load_spec,
    load_weights,
    sha256_of,
)
from tests.synthetic_weights import synthetic_state_dict, write_weights

REPO, FILENAME = "lithiumice/models_hub", "6_SyncNet/syncnet_v2.model"
COMMIT = "e7fcdee0" * 5  # any 40-hex commit: the cache layout only needs refs/<revision> to name a snapshot
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights") / "syncnet_v2.model")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("SYNCNET_WEIGHTS", "SYNCNET_WEIGHTS_REPO", "SYNCNET_WEIGHTS_REVISION",
                 "SYNCNET_WEIGHTS_FILENAME", "SYNCNET_WEIGHTS_SHA256"):
        monkeypatch.delenv(name, raising=False)


def make_hf_cache(root: Path, payload: bytes) -> Path:
    """huggingface_hub's cache layout: blobs/<hash>, snapshots/<commit>/<filename> -> blob, refs/main."""
    repo_dir = root / ("models--" + REPO.replace("/", "--"))
    blob = repo_dir / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload)
    link = repo_dir / "snapshots" / COMMIT / FILENAME
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return root


def spec_for(path: Path, **changes) -> WeightsSpec:
    spec = WeightsSpec(REPO, "main", FILENAME, size_bytes=path.stat().st_size, sha256=sha256_of(path))
    return replace(spec, **changes)


def test_card_config_is_complete():
    card = json.loads(CARD_CONFIG.read_text())
    assert card["hub_repo"] == REPO and card["filename"] == FILENAME and card["revision"]
    assert card["size_bytes"] == 54573114
    assert card["sha256"] is None and "cannot be read" in card["sha256_note"]
    spec = load_spec()
    assert spec.calibration["syncnet"] == Calibration(1.0, 0.0) and spec.calibration["fcn"] == Calibration(1.0, 0.0)
    assert weights.calibration("landmarks", spec).scale == 1.0  # its bias is fitted by benchmarks/calibrate_landmarks
    assert weights.calibration("unknown", spec) == Calibration()


def test_settings_override_the_card(monkeypatch):
    monkeypatch.setenv("SYNCNET_WEIGHTS_REVISION", "abc")
    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", "AB" * 32)
    spec = load_spec()
    assert (spec.revision, spec.sha256, spec.size_bytes) == ("abc", "ab" * 32, 54573114)
    monkeypatch.setenv("SYNCNET_WEIGHTS_REPO", "someone/else")
    spec = load_spec()
    assert spec.repo == "someone/else" and spec.size_bytes is None  # the card's size is for its own file


def test_local_override(monkeypatch, weights_file, caplog):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    with caplog.at_level("WARNING", logger="syncnet.weights"):
        loaded = load_weights(spec_for(weights_file, size_bytes=1, sha256="0" * 64))  # card checks not applied
    assert loaded.source == "SYNCNET_WEIGHTS"
    assert loaded.sha256 == sha256_of(weights_file) and loaded.sha256 in caplog.text and "not pinned" in caplog.text
    for key, value in synthetic_state_dict().items():
        assert torch.equal(loaded.state_dict[key], value)


def test_local_override_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "nope.model"))
    with pytest.raises(WeightsUnavailable, match="no such file"):
        load_weights(load_spec())


def test_local_override_with_pinned_sha(monkeypatch, weights_file):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", "1" * 64)
    with pytest.raises(WeightsChecksumError, match="does not match"):
        load_weights(load_spec())


def test_loads_from_hf_cache_offline(tmp_path, weights_file):
    """A fresh interpreter with HF_HUB_OFFLINE=1 finds the file in a hub-layout cache and verifies size and sha."""
    cache = make_hf_cache(tmp_path / "hub", weights_file.read_bytes())
    code = (
        "import sys; from syncnet.weights import load_weights, WeightsSpec\n"
        f"w = load_weights(WeightsSpec({REPO!r}, 'main', {FILENAME!r}, {weights_file.stat().st_size}, "
        f"{sha256_of(weights_file)!r}))\n"
        "print(w.source, w.sha256, len(w.state_dict))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("SYNCNET_WEIGHTS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cache", sha256_of(weights_file), "102"]


def test_offline_and_not_cached_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailable, match="not in the Hugging Face cache and HF_HUB_OFFLINE"):
        load_weights(load_spec(), cache_dir=tmp_path)


def test_download_failure_is_unavailable(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    class Reachable:
        def close(self):
            pass

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights.socket, "create_connection", lambda *a, **k: Reachable())
    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    with pytest.raises(WeightsUnavailable, match="cannot download .*network unreachable"):
        load_weights(load_spec(), cache_dir=tmp_path)


def test_wrong_sha256(tmp_path, weights_file):
    cache = make_hf_cache(tmp_path, weights_file.read_bytes())
    with pytest.raises(WeightsChecksumError, match="sha256 .* does not match the pinned"):
        load_weights(spec_for(weights_file, sha256="f" * 64), cache_dir=cache)


def test_truncated_file(tmp_path, weights_file):
    cache = make_hf_cache(tmp_path, weights_file.read_bytes()[:1_000_000])
    with pytest.raises(WeightsTruncated, match="truncated"):
        load_weights(spec_for(weights_file), cache_dir=cache)


def test_truncated_file_without_known_size_is_corrupt(tmp_path, weights_file):
    cache = make_hf_cache(tmp_path, weights_file.read_bytes()[:1_000_000])
    with pytest.raises(WeightsCorrupt, match="not a readable PyTorch weights file"):
        load_weights(spec_for(weights_file, size_bytes=None, sha256=None), cache_dir=cache)


def test_corrupt_file(tmp_path, monkeypatch):
    path = tmp_path / "garbage.model"
    path.write_bytes(b"this is not a pytorch file" * 100)
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(path))
    with pytest.raises(WeightsCorrupt, match="not a readable PyTorch weights file"):
        load_weights(load_spec())


def test_pickled_code_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "evil.model"
    torch.save({"x": torch.zeros(1), "f": print}, path)
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(path))
    with pytest.raises(WeightsCorrupt):
        load_weights(load_spec())


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.pop("netfclip.3.weight"), "missing keys: netfclip.3.weight"),
        (lambda s: s.update(extra=torch.zeros(1)), "unexpected keys: extra"),
        (lambda s: s.update({"netcnnaud.0.bias": torch.zeros(65)}), r"wrong shapes: netcnnaud.0.bias \(65,\)"),
    ],
)
def test_wrong_keys_or_shapes(tmp_path, monkeypatch, edit, match):
    state = synthetic_state_dict()
    edit(state)
    torch.save(state, tmp_path / "w.model")
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "w.model"))
    with pytest.raises(WeightsMismatch, match=match):
        load_weights(load_spec())


def test_not_a_state_dict(tmp_path, monkeypatch):
    torch.save([torch.zeros(1)], tmp_path / "w.model")
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "w.model"))
    with pytest.raises(WeightsMismatch, match="expected a state dict"):
        load_weights(load_spec())


def test_batchnorm_counters_may_be_absent(tmp_path, monkeypatch):
    state = {k: v for k, v in synthetic_state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.model")
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "w.model"))
    assert len(load_weights(load_spec()).state_dict) == 102


def test_engines_share_one_load_and_one_failure(tmp_path, monkeypatch, weights_file):
    from syncnet.engines import EngineUnavailable, load_engines

    calls = []
    real = weights.load_weights
    monkeypatch.setattr(weights, "load_weights", lambda spec=None: calls.append(1) or real(spec))
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "missing.model"))
    loaded, skipped = load_engines(["syncnet", "fcn"])
    assert loaded == [] and [s.engine for s in skipped] == ["syncnet", "fcn"]
    assert all("SyncNet weights: SYNCNET_WEIGHTS=" in s.reason and "no such file" in s.reason for s in skipped)
    assert len(calls) == 1
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    loaded, skipped = load_engines(["syncnet", "fcn"])
    assert [e.name for e in loaded] == ["syncnet", "fcn"] and skipped == []
    assert all("SYNCNET_WEIGHTS" in e.source and sha256_of(weights_file)[:12] in e.source for e in loaded)
    assert len(calls) == 2
    with pytest.raises(EngineUnavailable):
        monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "other-missing.model"))
        from syncnet.model import load_engine

        load_engine()


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights.socket, "create_connection", refuse)
    with pytest.raises(WeightsUnavailable, match="not cached and huggingface.co cannot be reached"):
        load_weights(load_spec(), cache_dir=tmp_path)
