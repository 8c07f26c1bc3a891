"""Code-usage analyses on hand-made identifiers, the tokenize command, the Table 3 SASRec."""

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks.analysis import code_frequency_groups, code_usage, cf_neighbour_overlap, quantized_sasrec
from benchmarks.data.toy import toy_dataset, write_toy_recbole
from identifiers.base import ItemIdentifiers


def _ids():
    levels = [[f"<a_{k}>" for k in range(4)], [f"<b_{k}>" for k in range(2)], ["<d_0>", "<d_1>"]]
    toks = [("<a_0>", "<b_0>", "<d_0>"), ("<a_0>", "<b_0>", "<d_1>"), ("<a_0>", "<b_1>", "<d_0>"),
            ("<a_1>", "<b_0>", "<d_0>")]
    return ItemIdentifiers("hand", "codes", toks, vocab=[t for lv in levels for t in lv],
                           levels=levels, n_semantic_levels=2)


def test_code_usage_by_hand():
    st = code_usage(_ids()).set_index(["level", "metric"])["value"]
    assert st[0, "used_codes"] == 2 and st[0, "utilisation"] == 0.5
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert st[0, "entropy_bits"] == pytest.approx(h) and st[0, "perplexity"] == pytest.approx(2 ** h)
    assert st[0, "max_code_share"] == 0.75
    # items 1 and 2 share (a_0, b_0) before the disambiguating token
    assert st["all", "collision_rate"] == 0.5 and st["all", "max_collision_group"] == 2


def test_code_frequency_groups():
    freq = code_frequency_groups(_ids(), level=0, n_groups=2)
    assert freq.tolist() == [1.0, 0.0]       # the 2 used codes fill the first half of 4
    freq = code_frequency_groups(_ids(), level=0, n_groups=4)
    assert freq.tolist() == [0.75, 0.25, 0.0, 0.0]


def test_cf_neighbour_overlap_by_hand():
    cf = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    # neighbours: 1<->2, 3<->4; semantic tuples: (a0,b0) (a0,b0) (a0,b1) (a1,b0)
    # overlaps: 1-2: 1.0, 2-1: 1.0, 3-4: 0/2, 4-3: 0/2 -> mean 0.5
    assert cf_neighbour_overlap(_ids(), cf) == pytest.approx(0.5)


def test_quantized_sasrec_trains_with_a_frozen_projected_table():
    ds = toy_dataset()
    table = np.random.default_rng(0).normal(size=(ds.n_items + 1, 6)).astype(np.float32)
    res = quantized_sasrec(ds, table, config={"hidden": 8, "n_heads": 2, "inner": 16, "epochs": 2})
    assert set(res) == {"R@5", "R@10", "N@5", "N@10"}


def test_tokenize_command_writes_everything(tmp_path):
    from benchmarks.tokenize import tokenize
    entry = write_toy_recbole(tmp_path / "data")
    out = tokenize(entry, "p5-cid", overrides={"n_clusters": 3, "max_leaf": 8}, output=tmp_path / "out",
                   progress=False)
    for f in ("index.json", "meta.json", "stats.csv", "config.json", "code_frequency.png", "code_frequency.pdf"):
        assert (out / f).is_file(), f
    stats = pd.read_csv(out / "stats.csv")
    assert list(stats.columns) == ["scheme", "level", "metric", "value"]
    assert "utilisation" in set(stats["metric"])


def test_tokenize_draws_the_code_change_curve_of_a_trained_tokenizer(tmp_path):
    import json

    from benchmarks.tokenize import tokenize
    from identifiers.quantizers import SMOKE
    entry = write_toy_recbole(tmp_path / "data")
    out = tokenize(entry, "tiger", overrides=dict(SMOKE), output=tmp_path / "out", progress=False)
    curve = json.loads((out / "code_curve.json").read_text())
    assert curve[-1]["epoch"] == SMOKE["epochs"] and (out / "code_curve.png").is_file()
    # how settled each level is: the nearest / second-nearest code margin, one row per level
    stats = pd.read_csv(out / "stats.csv")
    ties = stats[stats["metric"] == "stats.near_tie_share"]
    assert list(ties["level"].astype(int)) == [0, 1, 2] and ties["value"].between(0, 1).all()
    assert (stats[stats["metric"] == "stats.margin_median"]["value"] > 0).all()
