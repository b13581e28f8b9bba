"""The engine registry: unknown names are refused, unavailable engines are reported, not dropped."""
import pytest

from syncnet import engines
from syncnet.engines import EngineUnavailable, Skipped, load_engines
from syncnet.errors import SyncNetError


def test_unknown_engine_is_refused():
    with pytest.raises(SyncNetError, match="unknown engine 'nope'"):
        load_engines(["nope"])


def test_unavailable_engine_is_listed_as_skipped(monkeypatch):
    def factory():
        raise EngineUnavailable("weights unavailable: no network")

    monkeypatch.setitem(engines.ENGINE_FACTORIES, "broken", "tests.test_engines:_unavailable")
    monkeypatch.setattr("tests.test_engines._unavailable", factory, raising=False)
    loaded, skipped = load_engines(["broken"])
    assert loaded == []
    assert skipped == [Skipped("broken", "weights unavailable: no network")]
