"""Published codes (LETTER's <Name>.index.json) read as identifiers."""

import json

import numpy as np
import pytest

from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError, DataFormatError
from identifiers.base import load_or_build
from identifiers.published import PublishedCodes, PublishedCodesConfig


def _write(path, ds, collide=(), drop=(), extra=0):
    rng = np.random.default_rng(0)
    data = {}
    for i, rid in enumerate(ds.item_ids):
        a, b = (int(x) for x in rng.integers(0, 40, 2))
        data[rid] = [f"<a_{a}>", f"<b_{b}>", f"<c_{i}>"]
    for x, y in collide:                       # item y gets item x's codes
        data[ds.item_ids[y]] = list(data[ds.item_ids[x]])
    for d in drop:
        data.pop(ds.item_ids[d])
    for k in range(extra):
        data[f"gone{k}"] = ["<a_1>", "<b_1>", "<c_1>"]
    path.write_text(json.dumps(data))
    return data


def _build(ds, path):
    return load_or_build("published-codes", PublishedCodesConfig(path=str(path)), ds, None, 0, cache_root=None,
                         progress=False)


def test_codes_are_read_as_published_with_a_disambiguating_token(tmp_path):
    ds = toy_dataset()
    data = _write(tmp_path / "codes.json", ds, collide=[(0, 5), (0, 9)], extra=2)
    ids = _build(ds, tmp_path / "codes.json")
    assert [t[:3] for t in ids.tokens] == [tuple(data[r]) for r in ds.item_ids]
    assert [t[3] for t in ids.tokens][:10] == ["<d_0>"] * 5 + ["<d_1>"] + ["<d_0>"] * 3 + ["<d_2>"]
    assert ids.n_semantic_levels == 3 and len(ids.levels) == 4
    st = ids.stats
    assert st["collisions_before"]["collided_items"] == 3 and st["collisions_after"]["collided_items"] == 0
    assert st["codes_not_in_dataset"] == 2
    codes = ids.code_matrix()
    assert codes[0, 2] == 0 and codes[1, 2] == 1          # <c_i> -> i: the published number
    assert len(ids.levels[0]) == max(int(v[0][3:-1]) for v in data.values()) + 1


def test_bad_files_are_refused_with_file_and_item(tmp_path):
    ds = toy_dataset()
    _write(tmp_path / "short.json", ds, drop=[3])
    with pytest.raises(DataFormatError, match=r"short.json: expected a code for every item of dataset 'toy', "
                                              r"got \"1 items without one, e\.g\. \['4'\]\""):
        _build(ds, tmp_path / "short.json")
    (tmp_path / "bad.json").write_text(json.dumps({ds.item_ids[0]: ["a_1"]}))
    with pytest.raises(DataFormatError, match="bad.json: expected a list of code tokens"):
        _build(ds, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="has no published codes file"):
        PublishedCodes(PublishedCodesConfig(), ds).build()


@pytest.mark.shared
def test_letter_released_beauty_codes(shared_datasets, monkeypatch):
    from benchmarks.data.catalog import load_dataset

    monkeypatch.setenv("GENREC_BENCH_DATA", str(shared_datasets))
    ds = load_dataset("beauty")
    ids = load_or_build("published-codes", PublishedCodesConfig(), ds, None, 0, cache_root=None, progress=False)
    published = json.loads((shared_datasets / "beauty" / "Beauty.index.json").read_text())
    assert ids.n_items == 12101 and all(t[:4] == tuple(published[r]) for r, t in zip(ds.item_ids, ids.tokens))
    # the released codes are not collision-free: 12,101 items, 12,088 distinct 4-code tuples
    assert ids.stats["collisions_before"]["distinct"] == 12088
    assert ids.stats["collisions_after"]["collided_items"] == 0


def test_tiger_runs_on_published_codes_in_a_matrix(tmp_path):
    """TIGER's recommender on released codes: a matrix entry, nothing else."""
    import pandas as pd

    from benchmarks.data.toy import write_toy_recbole
    from benchmarks.matrix import parse_matrix
    from benchmarks.runner import run_matrix

    entry = write_toy_recbole(tmp_path / "data")
    from benchmarks.data.catalog import load_dataset
    ds = load_dataset(entry)
    _write(tmp_path / "codes.json", ds, collide=[(0, 5)])
    cfg = {"identifier": "published-codes", "identifier_config": {"path": str(tmp_path / "codes.json")},
           "epochs": 1, "beams": 10, "train_last_n": 2, "user_tokens": 4,
           "backbone_config": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_kv": 8, "d_ff": 32}}
    m = parse_matrix({"name": "pub", "datasets": [entry], "evaluation": {"ks": [5, 10]},
                      "methods": [{"name": "tiger", "label": "tiger-published", "config": cfg}]}, "pub.yaml")
    out = tmp_path / "run"
    assert not run_matrix(m, out, progress=False)["failed"]
    df = pd.read_csv(out / "results.csv")
    assert set(df["family"]) == {"codebook"} and (df["method"] == "tiger-published").all()
    cell = next((out / "cells" / "toy" / "tiger-published").iterdir())
    meta = json.loads((cell / "artefacts" / "identifiers" / "meta.json").read_text())
    assert meta["scheme"] == "published-codes" and meta["stats"]["collisions_before"]["collided_items"] == 2
