"""Finding and verifying the weights, offline: SYNCNET_WEIGHTS, Hugging Face caches made here holding the synthetic
weights (with a digest set for them), the sources tried in turn, and each kind of bad file."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from syncnet import weights
from syncnet.card import load_card
from syncnet.errors import WeightsError
from syncnet.fcn import ARITHMETIC, default_precision
from syncnet.gpu import device, where
from syncnet.weights import (
    WeightsChecksumError,
    WeightsCorrupt,
    WeightsMismatch,
    WeightsSource,
    WeightsSpec,
    WeightsTruncated,
    WeightsUnavailable,
    load_spec,
    load_weights,
    sha256_of,
)
from tests.synthetic_weights import key_shapes, synthetic_state_dict, write_weights

REAL_SHA256 = "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442"
CARD_SOURCES = [
    ("lithiumice/models_hub", "6_SyncNet/syncnet_v2.model"),
    ("saracen9/syncnet-v2", "syncnet_v2.model"),
    ("Hyathi/Preprocess", "syncnet_v2.model"),
    ("julia527/omnihuman_benchmark", "models/syncnet_v2.model"),
]
SOURCES = tuple(WeightsSource(repo, "main", filename) for repo, filename in CARD_SOURCES)
FIRST = SOURCES[0]
COMMIT = "e7fcdee0" * 5  # any 40-hex commit: the cache layout only needs refs/<revision> to name a snapshot
LAYOUT = key_shapes()
ROOT = Path(__file__).resolve().parent.parent
ENV = ("SYNCNET_WEIGHTS", "SYNCNET_WEIGHTS_REPO", "SYNCNET_WEIGHTS_REVISION", "SYNCNET_WEIGHTS_FILENAME",
       "SYNCNET_WEIGHTS_SHA256")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights") / "syncnet_v2.model")


@pytest.fixture(scope="module")
def other_file(tmp_path_factory):
    """A valid state dict with another digest (one value changed)."""
    state = synthetic_state_dict()
    state["netfclip.3.bias"][0] += 1
    path = tmp_path_factory.mktemp("other") / "syncnet_v2.model"
    torch.save(state, path)
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    """The Hub looks reachable (the quick probe passes); hf_hub_download is replaced by each test."""

    class Reachable:
        def close(self):
            pass

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights.socket, "create_connection", lambda *a, **k: Reachable())


def add_to_hf_cache(root: Path, source: WeightsSource, payload: bytes) -> Path:
    """huggingface_hub's cache layout: blobs/<hash>, snapshots/<commit>/<filename> -> blob, refs/<revision>."""
    repo_dir = root / ("models--" + source.repo.replace("/", "--"))
    blob = repo_dir / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(payload)
    link = repo_dir / "snapshots" / COMMIT / source.filename
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / source.revision).write_text(COMMIT)
    return root


def spec_for(path: Path, sources=(FIRST,), **changes) -> WeightsSpec:
    """The spec the card gives, with the digest and size of ``path`` (the synthetic weights) instead."""
    return replace(WeightsSpec(tuple(sources), sha256_of(path), path.stat().st_size), **changes)


def test_card_pins_the_real_digest_and_lists_the_sources_in_order():
    card = load_card()["weights"]
    assert card["sha256"] == REAL_SHA256 and card["size_bytes"] == 54573114
    assert [(s["repo"], s["filename"]) for s in card["sources"]] == CARD_SOURCES
    spec = load_spec()
    assert spec == WeightsSpec(SOURCES, REAL_SHA256, 54573114)
    model_card = (ROOT / "weights_card" / "README.md").read_text()
    assert REAL_SHA256 in model_card and all(f"`{repo}`" in model_card for repo, _ in CARD_SOURCES)


def test_settings_replace_the_sources(monkeypatch):
    monkeypatch.setenv("SYNCNET_WEIGHTS_REVISION", "abc")
    assert load_spec() == WeightsSpec((replace(FIRST, revision="abc"),), REAL_SHA256, 54573114)
    monkeypatch.setenv("SYNCNET_WEIGHTS_REPO", "someone/else")
    monkeypatch.setenv("SYNCNET_WEIGHTS_FILENAME", "w.model")
    spec = load_spec()
    assert spec.sources == (WeightsSource("someone/else", "abc", "w.model"),)
    assert spec.sha256 == REAL_SHA256  # another repo must still hold the original file...
    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", "AB" * 32)
    assert (load_spec().sha256, load_spec().size_bytes) == ("ab" * 32, None)  # ...unless another digest is pinned


def test_layout_is_the_networks():
    from syncnet.model import weights_layout

    assert weights_layout() == LAYOUT


@pytest.mark.slow
def test_weights_module_imports_neither_model_nor_engines_and_card_no_torch():
    code = (
        "import sys, syncnet.card; torch_for_card = 'torch' in sys.modules\n"
        "import syncnet.weights\n"
        "print(torch_for_card, 'syncnet.model' in sys.modules, 'syncnet.engines' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_weights_errors_share_the_root():
    for kind in (WeightsUnavailable, WeightsTruncated, WeightsCorrupt, WeightsMismatch, WeightsChecksumError):
        assert issubclass(kind, WeightsError)


def test_local_override(monkeypatch, weights_file, caplog):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    with caplog.at_level("WARNING", logger="syncnet.weights"):
        loaded = load_weights(load_spec(), LAYOUT)  # the card's digest is not applied to the user's own file
    assert (loaded.origin, loaded.source, loaded.pinned) == ("SYNCNET_WEIGHTS", None, False)
    assert loaded.sha256 == sha256_of(weights_file) and loaded.sha256 in caplog.text
    assert f"not the card's {REAL_SHA256}" in caplog.text
    assert loaded.describe() == f"SYNCNET_WEIGHTS={weights_file}, sha256 {loaded.sha256[:12]}, not pinned"
    for key, value in synthetic_state_dict().items():
        assert torch.equal(loaded.state_dict[key], value)


def test_local_override_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "nope.model"))
    with pytest.raises(WeightsUnavailable, match="no such file"):
        load_weights(load_spec(), LAYOUT)


def test_local_override_with_pinned_sha(monkeypatch, weights_file):
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", "1" * 64)
    with pytest.raises(WeightsChecksumError, match=f"sha256 {sha256_of(weights_file)} is not the pinned 1111"):
        load_weights(load_spec(), LAYOUT)
    monkeypatch.setenv("SYNCNET_WEIGHTS_SHA256", sha256_of(weights_file))
    assert load_weights(load_spec(), LAYOUT).pinned


@pytest.mark.slow
def test_loads_from_hf_cache_offline(tmp_path, weights_file):
    """A fresh interpreter with HF_HUB_OFFLINE=1 finds the file in a hub-layout cache and verifies size and sha."""
    cache = add_to_hf_cache(tmp_path / "hub", FIRST, weights_file.read_bytes())
    code = (
        "from syncnet.weights import load_weights, WeightsSource, WeightsSpec\n"
        "from tests.synthetic_weights import key_shapes\n"
        f"spec = WeightsSpec((WeightsSource{tuple(vars(FIRST).values())!r},), {sha256_of(weights_file)!r}, "
        f"{weights_file.stat().st_size})\n"
        "w = load_weights(spec, key_shapes())\n"
        "print(w.origin, w.sha256, len(w.state_dict))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    env.pop("SYNCNET_WEIGHTS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cache", sha256_of(weights_file), "102"]


def test_wrong_digest_in_the_first_source_falls_through_to_the_next(tmp_path, weights_file, other_file, offline,
                                                                     caplog):
    add_to_hf_cache(tmp_path, SOURCES[0], other_file.read_bytes())
    add_to_hf_cache(tmp_path, SOURCES[1], weights_file.read_bytes())
    with caplog.at_level("WARNING", logger="syncnet.weights"):
        loaded = load_weights(spec_for(weights_file, SOURCES), LAYOUT, cache_dir=tmp_path)
    assert (loaded.source, loaded.origin, loaded.pinned) == (SOURCES[1], "cache", True)
    assert f"{SOURCES[0]}: sha256 {sha256_of(other_file)} is not the pinned" in caplog.text
    assert loaded.describe() == (f"saracen9/syncnet-v2/syncnet_v2.model@main, from the Hugging Face cache, "
                                 f"sha256 {sha256_of(weights_file)[:12]}, as pinned")


def test_a_cached_mirror_is_used_before_any_download(tmp_path, weights_file, online, monkeypatch):
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: pytest.fail("no download expected"))
    add_to_hf_cache(tmp_path, SOURCES[3], weights_file.read_bytes())
    loaded = load_weights(spec_for(weights_file, SOURCES), LAYOUT, cache_dir=tmp_path)
    assert (loaded.source, loaded.origin) == (SOURCES[3], "cache")


def test_downloads_are_tried_in_order_and_verified(tmp_path, weights_file, other_file, online, monkeypatch):
    """The first repository is gone, the second serves another file, the third serves the right one."""
    tried = []

    def download(repo, filename, revision, cache_dir):
        tried.append(repo)
        if repo == SOURCES[0].repo:
            raise OSError("404 Client Error: Repository Not Found")
        return str(other_file if repo == SOURCES[1].repo else weights_file)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    loaded = load_weights(spec_for(weights_file, SOURCES), LAYOUT, cache_dir=tmp_path)
    assert tried == [s.repo for s in SOURCES[:3]]
    assert (loaded.source, loaded.origin, loaded.sha256) == (SOURCES[2], "download", sha256_of(weights_file))


def test_all_sources_failing_give_one_message_listing_each(tmp_path, weights_file, other_file, online, monkeypatch):
    add_to_hf_cache(tmp_path, SOURCES[0], other_file.read_bytes())  # wrong digest
    add_to_hf_cache(tmp_path, SOURCES[1], weights_file.read_bytes()[:1_000_000])  # truncated

    def download(repo, filename, revision, cache_dir):
        raise OSError(f"{repo} not found")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", download)
    with pytest.raises(WeightsUnavailable) as caught:
        load_weights(spec_for(weights_file, SOURCES), LAYOUT, cache_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("none of the 4 sources could be used: ")
    assert "\n" not in message
    parts = [
        f"{SOURCES[0]}: sha256 {sha256_of(other_file)} is not the pinned {sha256_of(weights_file)}",
        f"{SOURCES[1]}: 1,000,000 bytes, the card expects {weights_file.stat().st_size:,} (truncated",
        f"{SOURCES[2]}: cannot download: OSError: {SOURCES[2].repo} not found",
        f"{SOURCES[3]}: cannot download: OSError: {SOURCES[3].repo} not found",
        "to use another file set SYNCNET_WEIGHTS=PATH, or SYNCNET_WEIGHTS_REPO, SYNCNET_WEIGHTS_REVISION, "
        "SYNCNET_WEIGHTS_FILENAME and SYNCNET_WEIGHTS_SHA256",
    ]
    positions = [message.index(part) for part in parts]
    assert positions == sorted(positions)  # in the card's order


def test_offline_and_not_cached_is_unavailable(tmp_path, offline):
    with pytest.raises(WeightsUnavailable) as caught:
        load_weights(load_spec(), LAYOUT, cache_dir=tmp_path)
    assert str(caught.value) == (f"none of the 4 sources could be used: {', '.join(map(str, SOURCES))}: "
                                 "not in the Hugging Face cache and HF_HUB_OFFLINE is set")


def test_unreachable_hub_fails_fast_with_one_probe(tmp_path, monkeypatch):
    probes = []

    def refuse(*args, **kwargs):
        probes.append(args)
        raise OSError("Name or service not known")

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(weights.socket, "create_connection", refuse)
    with pytest.raises(WeightsUnavailable, match="not cached and huggingface.co cannot be reached"):
        load_weights(load_spec(), LAYOUT, cache_dir=tmp_path)
    assert len(probes) == 1


def test_download_failure_is_unavailable(tmp_path, online, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", refuse)
    monkeypatch.setenv("SYNCNET_WEIGHTS_REVISION", "main")  # one source
    with pytest.raises(WeightsUnavailable, match=f"^{FIRST}: cannot download: OSError: network unreachable$"):
        load_weights(load_spec(), LAYOUT, cache_dir=tmp_path)


def test_wrong_sha256_names_both_digests_and_the_override(tmp_path, weights_file, offline):
    cache = add_to_hf_cache(tmp_path, FIRST, weights_file.read_bytes())
    with pytest.raises(WeightsChecksumError) as caught:
        load_weights(spec_for(weights_file, sha256="f" * 64), LAYOUT, cache_dir=cache)
    assert str(caught.value) == (f"{FIRST}: sha256 {sha256_of(weights_file)} is not the pinned {'f' * 64}; "
                                 f"{weights.OVERRIDE_HINT}")


def test_real_digest_refuses_the_synthetic_weights(tmp_path, weights_file, offline):
    cache = add_to_hf_cache(tmp_path, FIRST, weights_file.read_bytes())
    with pytest.raises(WeightsChecksumError, match=f"is not the pinned {REAL_SHA256}"):
        load_weights(WeightsSpec((FIRST,), REAL_SHA256), LAYOUT, cache_dir=cache)


def test_truncated_file(tmp_path, weights_file, offline):
    cache = add_to_hf_cache(tmp_path, FIRST, weights_file.read_bytes()[:1_000_000])
    with pytest.raises(WeightsTruncated, match="truncated"):
        load_weights(spec_for(weights_file), LAYOUT, cache_dir=cache)


def test_corrupt_file(tmp_path, monkeypatch):
    path = tmp_path / "garbage.model"
    path.write_bytes(b"this is not a pytorch file" * 100)
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(path))
    with pytest.raises(WeightsCorrupt, match="not a readable PyTorch weights file"):
        load_weights(load_spec(), LAYOUT)


def test_pickled_code_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "evil.model"
    torch.save({"x": torch.zeros(1), "f": print}, path)
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(path))
    with pytest.raises(WeightsCorrupt):
        load_weights(load_spec(), LAYOUT)


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
        load_weights(load_spec(), LAYOUT)


def test_not_a_state_dict(tmp_path, monkeypatch):
    torch.save([torch.zeros(1)], tmp_path / "w.model")
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "w.model"))
    with pytest.raises(WeightsMismatch, match="expected a state dict"):
        load_weights(load_spec(), LAYOUT)


def test_batchnorm_counters_may_be_absent(tmp_path, monkeypatch):
    state = {k: v for k, v in synthetic_state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "w.model")
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "w.model"))
    assert len(load_weights(load_spec(), LAYOUT).state_dict) == 102


def test_engines_share_one_load_and_one_failure(tmp_path, monkeypatch, weights_file):
    from syncnet.engines import EngineUnavailable, load_engines
    from syncnet.model import load_engine

    calls = []
    real = weights.load_weights
    monkeypatch.setattr(weights, "load_weights", lambda spec, layout: calls.append(1) or real(spec, layout))
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "missing.model"))
    loaded, skipped = load_engines(["syncnet", "fcn"])
    assert loaded == [] and [s.engine for s in skipped] == ["syncnet", "fcn"]
    assert all("SyncNet weights: SYNCNET_WEIGHTS=" in s.reason and "no such file" in s.reason for s in skipped)
    assert len(calls) == 1
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    loaded, skipped = load_engines(["syncnet", "fcn"])
    assert [e.name for e in loaded] == ["syncnet", "fcn"] and skipped == []
    assert all(e.source == f"SYNCNET_WEIGHTS={weights_file}, sha256 {sha256_of(weights_file)[:12]}, not pinned"
               for e in loaded)
    assert len(calls) == 2
    monkeypatch.setenv("SYNCNET_WEIGHTS", str(tmp_path / "other-missing.model"))
    with pytest.raises(EngineUnavailable):
        load_engine()


@pytest.mark.slow
def test_engines_say_which_source_they_used(tmp_path, monkeypatch, weights_file, offline):
    """Through the engine loader: the first source is truncated, the second missing; the engines name the third."""
    from syncnet.engines import load_engines

    add_to_hf_cache(tmp_path, SOURCES[0], weights_file.read_bytes()[:1_000_000])
    add_to_hf_cache(tmp_path, SOURCES[2], weights_file.read_bytes())
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "_cache", {})
    monkeypatch.setattr(weights, "load_spec", lambda: spec_for(weights_file, SOURCES))
    loaded, skipped = load_engines(["syncnet", "fcn"])
    assert skipped == [] and {e.source for e in loaded} == {
        f"{SOURCES[2]}, from the Hugging Face cache, sha256 {sha256_of(weights_file)[:12]}, as pinned"
    }


@pytest.mark.slow
def test_cli_text_names_the_weights_once_and_how_each_engine_computes(monkeypatch, weights_file):
    from syncnet import cli, pipeline

    monkeypatch.setenv("SYNCNET_WEIGHTS", str(weights_file))
    monkeypatch.setattr(weights, "_cache", {})
    pipeline.unload_engines()
    try:
        on = where(device())
        fcn_arithmetic = f"{ARITHMETIC[default_precision(device())]} on {on}"
        source = f"SYNCNET_WEIGHTS={weights_file}, sha256 {sha256_of(weights_file)[:12]}, not pinned"
        assert cli._weights_lines("all") == [
            f"  weights: {source}", f"  arithmetic: syncnet float32 on {on}, fcn {fcn_arithmetic}"
        ]
        assert cli._weights_lines("landmarks") == []
        status = {name: detail for name, _, detail in pipeline.engine_status("all")}
        assert status == {
            "syncnet": f"{source}; float32 on {on}", "fcn": f"{source}; {fcn_arithmetic}", "landmarks": ""
        }
    finally:
        pipeline.unload_engines()
