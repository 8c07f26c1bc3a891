"""ID, single-token ID, textual, P5-CID and P5-SemID identifiers on the toy dataset."""

import numpy as np
import pytest

from benchmarks.data.toy import toy_dataset
from benchmarks.features import FeatureStore
from benchmarks.registry import IDENTIFIERS
from identifiers.base import load_or_build
from identifiers.id import item_numbers
from identifiers.p5_cid import cooccurrence_graph

SIMPLE = ["id", "id-token", "textual", "p5-cid", "p5-semid"]


def _build(name, ds, tmp_path, seed=0, **overrides):
    cls = IDENTIFIERS.get(name)
    cfg = cls.Config(**{**cls.smoke_config, **overrides})
    return load_or_build(name, cfg, ds, FeatureStore(ds, tmp_path), seed, cache_root=None, progress=False)


@pytest.mark.parametrize("name", SIMPLE)
def test_unique_and_deterministic(name, tmp_path):
    ds = toy_dataset()
    a = _build(name, ds, tmp_path)          # load_or_build checks uniqueness
    b = _build(name, ds, tmp_path)
    assert a.tokens == b.tokens and len(a.tokens) == ds.n_items
    if a.kind == "codes":
        assert {t for toks in a.tokens for t in toks} <= set(a.vocab)


def test_sequential_indexing_follows_first_appearance_in_training():
    ds = toy_dataset()
    numbers = item_numbers(ds, "sequential", 0)
    first = ds.train[0]
    assert numbers[first[0]] == 1
    order = list(dict.fromkeys(np.concatenate(ds.train).tolist()))
    assert [numbers[i] for i in order] == list(range(1, len(order) + 1))
    rnd = item_numbers(ds, "random", 3)
    assert sorted(rnd[1:]) == list(range(1, ds.n_items + 1))
    assert not np.array_equal(rnd, item_numbers(ds, "random", 4))


def test_id_digits(tmp_path):
    ds = toy_dataset()
    ids = _build("id", ds, tmp_path)
    numbers = item_numbers(ds, "sequential", 0)
    i = 5
    assert "".join(t.strip("<>") for t in ids.tokens[i - 1]) == str(numbers[i])


def test_textual_disambiguates_shared_titles(tmp_path):
    ds = toy_dataset()
    ds.item_text["title"][3] = ds.item_text["title"][0]
    ds.item_text["title"][7] = ds.item_text["title"][0]
    ids = _build("textual", ds, tmp_path)
    t0 = ds.item_text["title"][0]
    assert ids.tokens[0] == (t0,) and ids.tokens[3] == (f"{t0} (2)",) and ids.tokens[7] == (f"{t0} (3)",)
    assert ids.stats["shared_titles"] == 1 and ids.stats["items_suffixed"] == 2


def test_cooccurrence_graph_sees_training_only():
    ds = toy_dataset()
    # put an item that occurs nowhere in training as every user's test target
    held = ds.n_items
    for u in range(ds.n_users):
        ds.train[u] = ds.train[u][ds.train[u] != held]
        ds.test[u] = np.array([held])
    a = cooccurrence_graph(ds.train, ds.n_items)
    row = a[held - 1].toarray().ravel()
    assert row[held - 1] == 1 and row.sum() == 1          # only its self-loop
    # weights count users holding both items
    u0 = ds.train[0]
    x, y = u0[0] - 1, u0[1] - 1
    both = sum(1 for s in ds.train if (x + 1) in s and (y + 1) in s)
    assert a[x, y] == both


def test_p5_cid_leaves_respect_max_leaf(tmp_path):
    ds = toy_dataset()
    ids = _build("p5-cid", ds, tmp_path, n_clusters=3, max_leaf=8)
    paths = {}
    for toks in ids.tokens:
        paths.setdefault(toks[:-1], []).append(toks[-1])
    assert max(len(v) for v in paths.values()) <= 8
    assert ids.levels is not None and ids.stats["leaves"] == len(paths)
    # items of one toy block co-occur: most blocks should land in one first-level cluster
    first = [t[0] for t in ids.tokens]
    block = [c for c in ds.item_text["categories"]]
    agree = np.mean([len({f for f, b in zip(first, block) if b == bb}) == 1 for bb in set(block)])
    assert agree >= 0.6


def test_p5_semid_paths_follow_categories(tmp_path):
    ds = toy_dataset()
    ids = _build("p5-semid", ds, tmp_path)
    by_cat = {}
    for toks, cat in zip(ids.tokens, ds.item_text["categories"]):
        by_cat.setdefault(cat, set()).add(toks[0])
    assert all(len(v) == 1 for v in by_cat.values())
    ds.item_text.pop("categories")
    with pytest.raises(ValueError, match="no 'categories' field"):
        _build("p5-semid", ds, tmp_path)
