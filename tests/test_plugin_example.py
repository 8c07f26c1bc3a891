"""The README's plugin example (examples/kmeans_tree_plugin): discovered through its entry
point, passes the identifier contract, and runs in a matrix on the toy data."""

import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.data.toy import toy_dataset, write_toy_recbole
from benchmarks.features import FeatureStore
from benchmarks.matrix import parse_matrix
from benchmarks.registry import IDENTIFIERS
from benchmarks.runner import run_matrix
from identifiers.base import load_or_build

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kmeans_tree_plugin"


@pytest.fixture
def plugin(monkeypatch):
    """Make the example importable and declare its entry point (as `pip install` would)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    ep = metadata.EntryPoint("kmeans-tree", "kmeans_tree.scheme:KMeansTreeID", "genrec_bench.identifiers")
    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == "genrec_bench.identifiers" else real(group=group, **kw))
    # a fresh registry view: built-ins plus entry points
    monkeypatch.setattr(IDENTIFIERS, "_loaded", False)
    yield
    IDENTIFIERS._classes.pop("kmeans-tree", None)
    IDENTIFIERS._origin.pop("kmeans-tree", None)
    sys.modules.pop("kmeans_tree.scheme", None)
    sys.modules.pop("kmeans_tree", None)


def test_example_is_found_and_keeps_the_identifier_contract(plugin, tmp_path):
    assert "kmeans-tree" in IDENTIFIERS.names()
    assert IDENTIFIERS.origin("kmeans-tree").startswith("entry point")
    cls = IDENTIFIERS.get("kmeans-tree")
    ds = toy_dataset()
    cfg = cls.Config(**cls.smoke_config)
    a = load_or_build("kmeans-tree", cfg, ds, FeatureStore(ds, tmp_path), 0, None, progress=False)
    b = load_or_build("kmeans-tree", cfg, ds, FeatureStore(ds, tmp_path), 0, None, progress=False)
    assert a.tokens == b.tokens                       # deterministic (uniqueness checked by load_or_build)
    assert len(a.tokens) == ds.n_items and a.levels is not None


def test_example_runs_in_a_matrix(plugin, tmp_path):
    entry = write_toy_recbole(tmp_path / "data")
    m = parse_matrix({"name": "plugin", "datasets": [entry], "seeds": [0], "methods": [
        {"name": "generative", "label": "kmeans-tree-t5",
         "config": {"identifier": "kmeans-tree", "identifier_config": {"branching": 3, "depth": 2},
                    "epochs": 1, "beams": 10,
                    "backbone_config": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_kv": 8, "d_ff": 32}}}]},
        "plugin.yaml")
    out = tmp_path / "run"
    assert not run_matrix(m, out, progress=False)["failed"]
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"kmeans-tree-t5"} and set(df["family"]) == {"codebook"}
