"""Contract tests every registered method must pass (built-in or third-party plugin).

Each method runs with its ``smoke_config`` on the 30-item toy dataset and must: return a
JSON-serialisable fit log; rank only real, distinct item ids; respect a candidate mask; be
deterministic under a seed; and yield exactly ``n_batches()`` batches per epoch.
"""

import json

import numpy as np
import pytest
import torch

from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.evaluation import EvalConfig, Evaluator, user_batch
from benchmarks.protocol import FAMILIES
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


def _fit(name, ds, seed, tmp_path):
    cls = METHODS.get(name)
    seed_everything(seed)
    ctx = build_context(ds, seed=seed, evaluator=Evaluator(ds, EvalConfig(ks=(5, 10))), needs=cls.needs,
                        cache=tmp_path / "cache", progress=False)
    model = cls(build_config(cls.Config, cls.smoke_config), ctx)
    log = model.fit(ctx.validator)
    return model, log


def _batch(ds, users):
    return user_batch(ds, "test", users)      # with the history's timestamps (the toy has them)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, toy, tmp_path):
    cls = METHODS.get(name)
    family = cls.family_of(build_config(cls.Config, cls.smoke_config))
    assert family in FAMILIES, f"{name}: family {family!r} not one of {FAMILIES}"
    assert cls.family_of() in (family, None), f"{name}: listed as {cls.family_of()!r}, runs as {family!r}"
    model, log = _fit(name, toy, 0, tmp_path)
    json.dumps(log)
    users = np.arange(toy.n_users)
    items, scores = model.rank(_batch(toy, users), 10)
    assert items.shape == (toy.n_users, 10) and scores.shape == (toy.n_users, 10)
    assert int(items.min()) >= 0 and int(items.max()) <= toy.n_items
    for row in items.tolist():
        real = [i for i in row if i > 0]
        assert len(real) == len(set(real)), f"{name}: duplicate items in a top-k list {row}"
        assert len(real) == 10
    # a candidate mask is respected
    cand = torch.zeros(toy.n_items + 1, dtype=torch.bool)
    cand[1:8] = True
    items, _ = model.rank(_batch(toy, users[:5]), 5, candidates=cand)
    assert all(0 < i < 8 for row in items.tolist() for i in row)
    # exclusions (the masked protocol's history items) are respected and the list stays full
    hist = torch.from_numpy(toy.history_matrix("test", users))
    items, _ = model.rank(_batch(toy, users), 10, exclude=hist)
    for row, banned in zip(items.tolist(), hist.tolist()):
        assert not set(row) & (set(banned) - {0}), f"{name}: an excluded history item was ranked"
        assert all(i > 0 for i in row), f"{name}: fewer than 10 items with history excluded {row}"
    # deterministic under a seed
    again, _ = _fit(name, toy, 0, tmp_path)
    a, _ = model.rank(_batch(toy, users), 10)
    b, _ = again.rank(_batch(toy, users), 10)
    assert torch.equal(a, b), f"{name}: two runs with seed 0 rank differently"
    # the step count the LR schedule and data-parallel sharding rely on is the real one
    if hasattr(model, "batches") and model.n_batches() is not None:
        steps = sum(1 for _ in model.batches(np.random.default_rng(0)))
        assert steps == model.n_batches(), f"{name}: n_batches() {model.n_batches()} != {steps} batches yielded"


def test_masked_beam_search_keeps_the_configured_beam_width(toy, tmp_path, monkeypatch):
    """Excluding history items does not widen the beam (it used to grow to K + the longest
    history in the batch): the search runs with the config's beams, exclusions inside it."""
    from benchmarks.methods import generative

    model, _ = _fit("tiger", toy, 0, tmp_path)
    seen = []
    real = generative.beam_search

    def spy(*args, **kwargs):
        seen.append((args[4], kwargs.get("exclude")))
        return real(*args, **kwargs)
    monkeypatch.setattr(generative, "beam_search", spy)
    users = np.arange(8)
    hist = torch.from_numpy(toy.history_matrix("test", users))
    model.rank(_batch(toy, users), 5, exclude=hist)
    assert [b for b, _ in seen] == [model.config.beams] and torch.equal(seen[0][1], hist)
