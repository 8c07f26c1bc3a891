"""Registration by decorator, by entry point, and the plugins listing."""

from importlib import metadata

import pytest

from benchmarks.errors import ConfigError, UnknownNameError
from benchmarks.registry import METHODS, Registry


class _EP:
    def __init__(self, name, obj):
        self.name, self.value, self._obj = name, f"fake:{name}", obj

    def load(self):
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


def test_builtin_methods_are_found_without_listing_them():
    assert {"mostpop", "mf", "sasrec"} <= set(METHODS.names())
    assert METHODS.origin("sasrec") == "baselines.sasrec"


def test_entry_points_register_classes_and_survive_broken_plugins(monkeypatch):
    class Third:
        family = "traditional"

    def fake_entry_points(group):
        assert group == "genrec_bench.test"
        return [_EP("third-party", Third), _EP("broken", ImportError("missing dependency"))]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    reg = Registry("method", "genrec_bench.test", ())
    assert reg.names() == ["third-party"]
    assert reg.get("third-party") is Third and Third.name == "third-party"
    with pytest.raises(UnknownNameError, match="known: third-party"):
        reg.get("broken")


def test_double_registration_is_an_error():
    reg = Registry("method", "genrec_bench.none", ())

    @reg.register("x")
    class A:
        pass

    with pytest.raises(ConfigError, match="registered twice"):
        @reg.register("x")
        class B:
            pass
