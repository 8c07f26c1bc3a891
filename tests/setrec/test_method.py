"""setrec-t5 / setrec-causal: beta selection by hand, a learning check on the toy data, the
CF-token-only variant for datasets without item text."""

import dataclasses

import numpy as np
import pytest
import torch

from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.evaluation.metrics import pad_targets, recall_ndcg
from benchmarks.methods.setrec import BETA_GRID, combine_scores, sweep_beta
from benchmarks.protocol import topk_from_scores
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything


def test_beta_selection_on_a_hand_made_validation_case():
    # queries: 0 = CF, 1 = semantic; 3 items; user A's target is item 1, user B's item 3.
    # A: item 1 = (1 - b) * 1, item 2 = b * 2 -> hit at rank 1 iff b < 1/3
    # B: item 3 = b * 3, item 2 = (1 - b) * 1 -> hit at rank 1 iff b > 1/4   => only b = 0.3
    per_query = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                              [[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])     # [Q=2, B=2, N=3]
    targets = pad_targets([np.array([1]), np.array([3])])

    def ndcg1(beta):
        combined = combine_scores(per_query, beta, n_cf=1)
        scores = torch.cat([torch.full((2, 1), float("-inf")), combined], 1)
        topk, _ = topk_from_scores(scores, 1)
        return float(np.mean(recall_ndcg(topk, targets, (1,))[("ndcg", 1)]))

    best, table = sweep_beta(ndcg1, BETA_GRID)
    assert best == pytest.approx(0.3)
    assert table[best] == 1.0 and all(v == 0.5 for b, v in table.items() if b != best)
    # (1 - b) * s_0 + b * sum of the semantic queries
    three = torch.stack([per_query[0], per_query[1], per_query[1]])
    assert torch.allclose(combine_scores(three, 0.25, 1), 0.75 * per_query[0] + 0.5 * per_query[1])
    assert torch.allclose(combine_scores(per_query, 0.9, 0), per_query.sum(0))   # no CF token
    # ties go to the smallest beta
    assert sweep_beta(lambda b: 1.0, BETA_GRID)[0] == pytest.approx(0.1)


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("setrec-cache")


def _fit(name, ds, cache, overrides):
    cls = METHODS.get(name)
    seed_everything(0)
    ev = Evaluator(ds, EvalConfig(ks=(5, 10)))
    ctx = build_context(ds, evaluator=ev, cache=cache, progress=False)
    model = cls(build_config(cls.Config, {**cls.smoke_config, **overrides}), ctx)
    return model, model.fit(ctx.validator), ev


@pytest.mark.parametrize("name,epochs,lr", [("setrec-t5", 6, 4e-3), ("setrec-causal", 4, 5e-3)])
def test_a_few_epochs_beat_chance(name, epochs, lr, toy, cache):
    model, log, ev = _fit(name, toy, cache, {"epochs": epochs, "lr": lr, "batch_size": 32, "warmup_steps": 5,
                                             "cf_sasrec_config": {"epochs": 20}})
    res = ev.evaluate(model, splits=("test",), progress=False, throughput=False)
    ndcg = next(r["value"] for r in res.rows if r["subset"] == "all" and r["metric"] == "ndcg" and r["k"] == 10)
    chance = float(np.mean([1 / np.log2(r + 2) for r in range(10)])) * 10 / toy.n_items   # random ranking
    assert ndcg > 2 * chance, (ndcg, chance)
    info = log["setrec"]
    assert info["variant"]["tokens"] == ["cf", "sem1", "sem2"] and info["beta_source"] == "validation"
    assert info["beta"] in BETA_GRID
    assert max(info["beta_valid_ndcg10"].values()) == info["beta_valid_ndcg10"][info["beta"]]
    assert info["beta_valid_ndcg10"][info["beta"]] == pytest.approx(log["best_valid_ndcg10"])


def test_without_item_text_the_cf_only_variant_runs(toy, cache):
    bare = dataclasses.replace(toy, name="toy-notext", item_text={})
    model, log, _ = _fit("setrec-t5", bare, cache, {"epochs": 1})
    info = log["setrec"]
    assert info["variant"]["n_sem"] == 0 and info["variant"]["tokens"] == ["cf"]
    assert "CF-token-only" in log["notes"] and info["beta"] is None
    assert model.module.backbone.n_query == 1


def test_single_query_ablation_grounds_one_output_against_every_token(toy, cache):
    model, log, _ = _fit("setrec-t5", toy, cache, {"epochs": 1, "single_query": True})
    assert model.module.backbone.n_query == 1 and log["setrec"]["variant"]["tokens"] == ["cf", "sem1", "sem2"]
    from benchmarks.protocol import UserBatch
    users = np.arange(4)
    batch = UserBatch(torch.from_numpy(users), torch.from_numpy(toy.history_matrix("test", users)))
    assert model.per_query_scores(batch).shape == (3, 4, toy.n_items)
