"""The evaluator's rows (splits, warm/cold, popularity groups, masking) on hand-made cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.data.dataset import Dataset
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.protocol import Context, Recommender


def _ds() -> Dataset:
    # 6 items; item 6 never in training (cold). 3 users.
    a = lambda *x: np.array(x, dtype=np.int64)  # noqa: E731
    return Dataset(name="hand", n_items=6, item_ids=[str(i) for i in range(1, 7)],
                   user_ids=["u0", "u1", "u2"],
                   train=[a(1, 2, 3), a(1, 2), a(1, 4, 5)],
                   valid=[a(4), a(3), a(2)],
                   test=[a(5), a(6, 1), a(3)], split="fixed")


class Fixed(Recommender):
    """Scores = a fixed per-user table."""

    name = "fixed"

    def __init__(self, table, ds):
        super().__init__(None, Context(ds))
        self.table = torch.tensor(table, dtype=torch.float32)

    def fit(self, validator=None):
        return {}

    def score(self, batch):
        return self.table[batch.users]


TABLE = [[0, 1, 2, 3, 4, 5, 6],      # u0 prefers high ids: ranking 6 5 4 3 2 1
         [0, 6, 5, 4, 3, 2, 1],      # u1 prefers low ids: ranking 1 2 3 4 5 6
         [0, 1, 1, 9, 1, 1, 8]]      # u2: 3, 6, then ties 1 2 4 5


def _rows(result):
    return pd.DataFrame(result.rows).set_index(["split", "subset", "metric", "k"])["value"]


def test_all_warm_cold_rows_are_hand_computed():
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1, 2), popularity_groups=2))
    res = ev.evaluate(Fixed(TABLE, ds), progress=False)
    r = _rows(res)
    # test, all users: u0 target 5 at rank 2; u1 targets {6,1}: 1 at rank 1; u2 target 3 at rank 1
    assert r["test", "all", "recall", 1] == pytest.approx((0 + 0.5 + 1) / 3)
    assert r["test", "all", "ndcg", 2] == pytest.approx((1 / math.log2(3) + 1 / (1 + 1 / math.log2(3)) + 1) / 3)
    # warm: ranked among warm items 1..5 (6 can no longer take u0's first place);
    # u1's warm target is 1 only
    assert r["test", "warm", "recall", 1] == pytest.approx((1 + 1 + 1) / 3)
    assert r["test", "all", "recall", 1] < r["test", "warm", "recall", 1]
    # cold: only u1 has a cold target (6), ranked among cold items only -> rank 1
    assert r["test", "cold", "recall", 1] == pytest.approx(1.0)
    assert res.per_user[("test", "cold", "users")].tolist() == [1]
    # validation rows exist for every user
    assert r["valid", "all", "recall", 2] == pytest.approx((0 + 0 + 0) / 3)


def test_popularity_rows_and_shares():
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1, 2), popularity_groups=2))
    res = ev.evaluate(Fixed(TABLE, ds), progress=False)
    r = _rows(res)
    # train counts: 1:3, 2:2, 3:1, 4:1, 5:1, 6:0 -> group 1 = {1, 2, 3}, group 2 = {4, 5, 6}
    assert ev.groups.tolist() == [0, 1, 1, 1, 2, 2, 2]
    # group 2 test targets: u0 -> 5 (rank 2), u1 -> 6 (rank 6)
    assert r["test", "pop2", "recall", 2] == pytest.approx(0.5)
    # top-2 lists on test: u0 [6, 5], u1 [1, 2], u2 [3, 6] -> group 1 share 3/6
    assert r["test", "pop1", "share_generated", 2] == pytest.approx(0.5)


def test_masked_protocol_removes_history_items():
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1,), protocol="masked", subsets=("all",)))
    topk, _ = ev.rank(Fixed(TABLE, ds), "test", np.array([1]))
    # u1's test history = train 1 2 + valid 3 -> best remaining is 4
    assert topk.tolist() == [[4]]
    assert ev.evaluate(Fixed(TABLE, ds), progress=False).protocol["label"] == "masked"


def test_masked_keep_target_removes_history_items_but_the_users_targets():
    """RecBole's general-model rule: u1's test history is 1 2 3 and its targets are {6, 1}:
    `masked` removes 1 (a repeat target: never hit), `masked-keep-target` keeps 1 rankable and
    removes 2 and 3; a user with no repeat target is ranked as under `masked`."""
    ds = _ds()
    users = np.array([0, 1, 2])
    masked = Evaluator(ds, EvalConfig(ks=(2,), protocol="masked", subsets=("all",)))
    keep = Evaluator(ds, EvalConfig(ks=(2,), protocol="masked-keep-target", subsets=("all",)))
    top_m, _ = masked.rank(Fixed(TABLE, ds), "test", users)
    top_k, _ = keep.rank(Fixed(TABLE, ds), "test", users)
    assert top_m[1].tolist() == [4, 5] and top_k[1].tolist() == [1, 4]
    assert top_m[[0, 2]].tolist() == top_k[[0, 2]].tolist()
    r_m = _rows(masked.evaluate(Fixed(TABLE, ds), progress=False))
    res = keep.evaluate(Fixed(TABLE, ds), progress=False)
    assert res.protocol["label"] == "masked-keep-target"
    r_k = _rows(res)
    # u1: recall@2 0 (masked: 6 is ranked last, 1 removed) against 1/2 (1 at rank 1)
    assert r_k["test", "all", "recall", 2] - r_m["test", "all", "recall", 2] == pytest.approx(0.5 / 3)


def test_auto_protocol_follows_repeat_consumption():
    """auto -> unmasked where a target is already in its user's history (u1's test target 1
    is a training item), masked where none is; the reason names the counts."""
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1,), subsets=("all",)))
    assert ev.protocol.name == "unmasked" and "1 of the 7" in ev.protocol.reason
    topk, _ = ev.rank(Fixed(TABLE, ds), "test", np.array([1]))
    assert topk.tolist() == [[1]]                 # the history item stays rankable
    no_repeat = Dataset(name="norep", n_items=6, item_ids=ds.item_ids, user_ids=ds.user_ids,
                        train=ds.train, valid=ds.valid,
                        test=[np.array([5]), np.array([6]), np.array([3])], split="fixed")
    ev = Evaluator(no_repeat, EvalConfig(ks=(1,), subsets=("all",), refit=True))
    assert ev.protocol.name == "masked" and ev.protocol.label == "masked+refit"
    assert "none of the 6" in ev.protocol.reason


def test_unknown_protocol_is_a_config_error():
    from benchmarks.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluation.protocol: unknown 'recbole'; known: auto, masked, masked-keep-target, unmasked"):
        EvalConfig(protocol="recbole")


def test_validation_ndcg_and_throughput_fields():
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1, 2)))
    model = Fixed(TABLE, ds)
    assert ev.validation_ndcg(model) == pytest.approx(0.0)
    res = ev.evaluate(model, progress=False)
    for key in ("users_per_s", "ms_per_user", "batch_size", "device", "peak_rss_mb"):
        assert key in res.throughput
    assert res.throughput["users"] == 3


class Decoder(Fixed):
    """Decodes a worse list than its exact scores say (beam search's local optima, staged)."""

    decodes = True

    def rank(self, batch, k, candidates=None, exclude=None):
        items, scores = super().rank(batch, k + 1, candidates, exclude)
        return items[:, 1:], scores[:, 1:]          # drops the best item


def test_beam_vs_global_rows():
    ds = _ds()
    ev = Evaluator(ds, EvalConfig(ks=(1,), subsets=("all",), global_ranking=True))
    r = _rows(ev.evaluate(Decoder(TABLE, ds), progress=False))
    assert r["test", "global", "recall", 1] == pytest.approx((0 + 0.5 + 1) / 3)
    assert r["test", "beam", "recall", 1] == pytest.approx(r["test", "all", "recall", 1])
    assert r["test", "beam", "recall", 1] < r["test", "global", "recall", 1]
    # methods that do not decode get no such rows
    r = _rows(Evaluator(ds, EvalConfig(ks=(1,), subsets=("all",), global_ranking=True)).evaluate(Fixed(TABLE, ds), progress=False))
    assert "global" not in r.index.get_level_values("subset")


class ExactRecorder(Decoder):
    """A Decoder that records which users its exact scores (the global ranking) were asked for."""

    def __init__(self, table, ds):
        super().__init__(table, ds)
        self.exact_users: list[int] = []
        self._ranking = False

    def rank(self, batch, k, candidates=None, exclude=None):
        self._ranking = True
        try:
            return super().rank(batch, k, candidates, exclude)
        finally:
            self._ranking = False

    def score(self, batch):
        if not self._ranking:
            self.exact_users += batch.users.tolist()
        return super().score(batch)


def test_the_global_ranking_sample_is_drawn_per_seed_and_seed_0_keeps_the_earlier_sample():
    ds = _ds()
    picked = {}
    for seed in range(6):
        m = ExactRecorder(TABLE, ds)
        Evaluator(ds, EvalConfig(ks=(1,), subsets=("all",), global_ranking=True, global_users=1),
                  seed=seed).evaluate(m, progress=False)
        assert len(m.exact_users) == 1
        picked[seed] = m.exact_users[0]
    users = ds.eval_users("test")
    assert picked[0] == users[np.random.default_rng(0).choice(len(users), 1, replace=False)[0]]
    assert len(set(picked.values())) > 1          # other seeds pool other users


class Ranked(Fixed):
    """Ranks directly (a decoder's rank), returning the fixed table's top-k and its scores."""

    def rank(self, batch, k, candidates=None, exclude=None):
        vals, idx = torch.sort(self.table[batch.users][:, 1:], dim=1, descending=True)
        return idx[:, :k] + 1, vals[:, :k]


def test_nan_scores_are_an_error_naming_the_method_and_the_split():
    """torch.topk puts NaN first: a diverged model looked like one recommending items 1..K."""
    from benchmarks.protocol import NaNScoreError, topk_from_scores
    ds = _ds()
    table = [row[:] for row in TABLE]
    table[1][2] = float("nan")
    ev = Evaluator(ds, EvalConfig(ks=(1, 2)))
    with pytest.raises(NaNScoreError) as err:
        ev.evaluate(Fixed(table, ds), progress=False)
    assert str(err.value) == "method 'fixed': 1 NaN score(s) for 1 of 3 users, ranking split 'valid'"
    with pytest.raises(NaNScoreError, match=r"^method 'fixed': 1 NaN score\(s\) .*, ranking split 'valid'$"):
        ev.validation_ndcg(Fixed(table, ds))
    with pytest.raises(NaNScoreError, match=r"^method 'fixed': NaN scores in the top-2 lists of 1 of 3 users, "
                                            r"ranking split 'valid'$"):
        ev.evaluate(Ranked(table, ds), progress=False)
    assert isinstance(err.value, FloatingPointError)     # the runner records it as the cell's failure
    # a NaN where no ranking looks (padding, an excluded item, a non-candidate) is harmless
    scores = torch.tensor([[float("nan"), 1.0, float("nan"), 3.0, float("nan")]])
    items, _ = topk_from_scores(scores.clone(), 2, candidates=torch.tensor([True, True, True, True, False]),
                                exclude=torch.tensor([[2]]))
    assert items.tolist() == [[3, 1]]


def test_valid_rows_sample_ranks_the_early_stopping_sample_and_test_keeps_every_user():
    from benchmarks.errors import ConfigError

    ds = _ds()
    n_users = {}
    for rows in ("all", "sample"):
        ev = Evaluator(ds, EvalConfig(ks=(1,), subsets=("all",), valid_sample=2, valid_rows=rows), seed=3)
        res = pd.DataFrame(ev.evaluate(Fixed(TABLE, ds), progress=False).rows)
        n_users[rows] = {split: set(res[res["split"] == split]["n_users"]) for split in ("valid", "test")}
        if rows == "sample":
            assert len(ev.validation_users()) == 2
    assert n_users["all"] == {"valid": {3}, "test": {3}}
    assert n_users["sample"] == {"valid": {2}, "test": {3}}
    with pytest.raises(ConfigError, match="evaluation.valid_rows: expected 'all' or 'sample', got 'some'"):
        EvalConfig(valid_rows="some")


def test_users_without_history_are_counted_not_silently_dropped():
    """A user whose first interaction is a test target (a global-time-line split) is not
    evaluated; the dataset's stats count them and the report says so."""
    from benchmarks.report import unevaluated_users

    a = lambda *x: np.array(x, dtype=np.int64)  # noqa: E731
    ds = Dataset(name="late", n_items=4, item_ids=["1", "2", "3", "4"], user_ids=["u0", "u1", "u2"],
                 train=[a(1, 2), a(), a()], valid=[a(3), a(), a(2)], test=[a(4), a(1), a(3)], split="fixed")
    assert ds.eval_users("test").tolist() == [0, 2]      # u1 has a target and nothing before it
    st = ds.stats()
    assert st["test_users_without_history"] == 1 and st["valid_users_without_history"] == 1   # u2's valid

    class Cell:
        def __init__(self, stats):
            self.stats = stats

        def run_info(self):
            return {"dataset": {"stats": self.stats}}

    cells = {("late", "mf", 0): Cell(st), ("full", "mf", 0): Cell({"test_users_without_history": 0,
                                                                     "valid_users_without_history": 0})}
    assert unevaluated_users(cells) == {"late": "1 test, 1 validation"}
