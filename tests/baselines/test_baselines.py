"""Each baseline learns the toy dataset's planted pattern well above chance."""

import numpy as np
import pytest

from benchmarks.config import build_config
from benchmarks.data.toy import toy_dataset
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.protocol import Context
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything


def _test_recall(name, overrides, k=5):
    ds = toy_dataset()
    seed_everything(0)
    cls = METHODS.get(name)
    model = cls(build_config(cls.Config, overrides), Context(ds, None, "cpu", 0, progress=False))
    ev = Evaluator(ds, EvalConfig(ks=(1, k), subsets=("all",)))
    model.fit(ev.validation_ndcg)
    rows = ev.evaluate(model, splits=("test",), progress=False, throughput=False).rows
    return {(r["metric"], r["k"]): r["value"] for r in rows}


def test_mostpop_ranks_by_training_count():
    ds = toy_dataset()
    cls = METHODS.get("mostpop")
    model = cls(None, Context(ds))
    model.fit()
    ev = Evaluator(ds)
    top, _ = ev.rank(model, "test", np.arange(3))
    counts = ds.item_train_counts()
    assert all(counts[row[0]] == counts[1:].max() for row in top.tolist())
    ranked = top[0].tolist()
    assert all(counts[a] >= counts[b] for a, b in zip(ranked, ranked[1:]))   # never against the counts


def test_mostpop_breaks_ties_at_random_not_by_item_id():
    """Every cold item has count 0: their order must come from the seed, not from the ids."""
    from benchmarks.data.preprocess import PreprocessOptions, preprocess
    from benchmarks.data.toy import toy_raw

    ds = preprocess(toy_raw(n_late=12), "toy", PreprocessOptions(k_core=5, split="ratio"))
    cold = np.flatnonzero(~ds.warm_mask()[1:]) + 1
    assert len(cold) >= 10
    warm = np.flatnonzero(ds.item_train_counts()[1:]) + 1
    orders = []
    for seed in (0, 1):
        model = METHODS.get("mostpop")(None, Context(ds, seed=seed))
        model.fit()
        s = model.popularity.numpy()
        orders.append(cold[np.argsort(-s[cold], kind="stable")].tolist())
        assert (s[warm] > s[cold].max()).all()                 # popularity still comes first
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    assert orders[0] != sorted(orders[0]) or orders[1] != sorted(orders[1])


def test_mf_learns_the_user_blocks():
    # a user's items all come from one block of 6 of the 30 items: chance Recall@5 = 1/6
    m = _test_recall("mf", {"dim": 16, "epochs": 60, "patience": 60, "lr": 0.01, "batch_size": 128})
    assert m[("recall", 5)] > 0.5


@pytest.mark.parametrize("loss,metric,floor", [("ce", ("recall", 1), 0.7), ("bce", ("recall", 5), 0.6)])
def test_sasrec_learns_the_next_item_cycle(loss, metric, floor):
    # the next item is determined by the last one: chance Recall@1 = 1/30, Recall@5 = 1/6.
    # With one uniform negative per position (bce) the in-block competitors are rarely sampled,
    # so that loss learns the block (Recall@5) long before the exact successor (Recall@1).
    m = _test_recall("sasrec", {"hidden": 32, "inner": 64, "n_layers": 1, "dropout": 0.1,
                                "attn_dropout": 0.1, "epochs": 150, "patience": 150, "lr": 5e-3,
                                "batch_size": 32, "loss": loss, "eval_every": 10})
    assert m[metric] > floor


def test_sasrec_exports_item_embeddings():
    ds = toy_dataset()
    cls = METHODS.get("sasrec")
    model = cls(build_config(cls.Config, {"hidden": 12, "n_heads": 2}), Context(ds))
    emb = model.item_embeddings()
    assert emb.shape == (ds.n_items + 1, 12) and not emb[0].any()


@pytest.mark.parametrize("overrides,metric,floor", [
    ({"T": 1}, ("recall", 1), 0.5),   # one target: the exact successor
    ({}, ("recall", 5), 0.6),          # the paper's T = 3: the next three items score alike
])
def test_caser_learns_the_next_item_cycle(overrides, metric, floor):
    # chance: Recall@1 = 1/30, Recall@5 = 1/6. Negatives exclude the user's training items,
    # i.e. its whole block, so within-block order is learned from the positives alone.
    m = _test_recall("caser", {"dim": 16, "lr": 0.01, "batch_size": 64, "dropout": 0.1,
                               "epochs": 30, "patience": 30, "eval_every": 5, **overrides})
    assert m[metric] > floor


@pytest.mark.parametrize("overrides,metric,floor", [
    ({"L": 1, "T": 1}, ("recall", 1), 0.7),   # item-item term alone = a first-order chain
    ({}, ("recall", 5), 0.6),                  # paper's L = 5, T = 3: the user's block
    ({"loss": "ce", "T": 1, "weight_decay": 0.0}, ("recall", 1), 0.7),   # RecBole's loss: the successor
])
def test_hgn_learns_the_next_item_cycle(overrides, metric, floor):
    m = _test_recall("hgn", {"dim": 16, "lr": 0.01, "batch_size": 64, "epochs": 20,
                             "patience": 20, "eval_every": 5, **overrides})
    assert m[metric] > floor


def test_bert4rec_learns_the_next_item_cycle():
    # the [mask] appended to the history must be filled with the successor: chance R@1 = 1/30
    m = _test_recall("bert4rec", {"hidden": 32, "inner": 64, "n_layers": 1, "dropout": 0.1,
                                  "attn_dropout": 0.1, "lr": 5e-3, "batch_size": 32,
                                  "epochs": 100, "patience": 100, "eval_every": 20})
    assert m[("recall", 1)] > 0.7


def test_lightgcn_learns_the_user_blocks():
    # a user's items all come from one block of 6 of the 30 items: chance Recall@5 = 1/6
    m = _test_recall("lightgcn", {"dim": 16, "lr": 0.01, "batch_size": 128, "epochs": 30,
                                  "patience": 30, "eval_every": 5})
    assert m[("recall", 5)] > 0.6


def test_hgn_loss_is_checked():
    from benchmarks.errors import ConfigError

    cls = METHODS.get("hgn")
    with pytest.raises(ConfigError, match="field 'loss': expected 'bpr'"):
        cls(build_config(cls.Config, {"loss": "bce"}), Context(toy_dataset()))
