"""HSTU: what hstu.md's "What to verify" asks of the model, on tiny random inputs, and that the
time bias never reads a held-out timestamp unless the config says so."""

import numpy as np
import pytest
import torch

from baselines.hstu import (HSTUConfig, HSTUNet, RelativeBias, full_softmax_loss,
                            sampled_softmax_loss, time_bucket)
from benchmarks.config import build_config
from benchmarks.data.dataset import Dataset
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator, user_batch
from benchmarks.protocol import Context
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything

N_ITEMS, N_POS = 40, 21          # 20 history items + the next item's slot


def _net(time=True, **over):
    torch.manual_seed(0)
    cfg = HSTUConfig(hidden=16, n_blocks=2, n_heads=2, dqk=8, dv=8, dropout=0.0, **over)
    return HSTUNet(N_ITEMS, N_POS, cfg, use_time=time).eval()


def _seq(rng, b, n):
    items = torch.from_numpy(rng.integers(1, N_ITEMS + 1, size=(b, n)))
    times = torch.from_numpy(np.sort(rng.uniform(0, 1e7, size=(b, n)), axis=1))
    return items, times


def test_time_buckets_match_the_repo_formula():
    day, year = 86400.0, 365 * 86400.0
    delta = torch.tensor([0.0, 1.0, 2.0, -2.0, day, year, 1e300], dtype=torch.float64)
    assert time_bucket(delta).tolist() == [0, 0, 2, 2, 37, 57, 128]


def test_position_bias_is_toeplitz_in_the_configured_length():
    rel = RelativeBias(N_POS, None)
    w = rel.pos_w.detach()
    for length in (3, 8, N_POS):
        b = rel.position(length).detach()
        i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
        assert torch.equal(b, w[N_POS - 1 + j - i])
    full = rel.position(N_POS).detach()
    assert torch.equal(full[5:13, 5:13], rel.position(8).detach())   # same offsets, same scalars
    with pytest.raises(ValueError, match="exceeds"):
        rel.position(N_POS + 1)


@pytest.mark.parametrize("time", [False, True])
def test_causality_later_items_never_change_earlier_outputs(time):
    rng = np.random.default_rng(0)
    net = _net(time)
    items, times = _seq(rng, 3, 12)
    base = net(items, times, times)
    for t in (0, 4, 10):
        other_items, other_times = items.clone(), times.clone()
        other_items[:, t + 1:] = torch.from_numpy(rng.integers(1, N_ITEMS + 1, size=(3, 11 - t)))
        other_times[:, t + 1:] += 5e6
        out = net(other_items, other_times, other_times)
        assert torch.allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-4)   # later ones do


def test_next_item_query_time_is_read_only_by_the_position_before_it():
    # time_query="next": query i is timed by item i + 1, so changing item i + 1's time changes
    # output i (by design) and nothing before it
    rng = np.random.default_rng(1)
    net = _net(True)
    items, times = _seq(rng, 2, 10)
    nxt = torch.cat([times[:, 1:], times[:, -1:] + 100.0], 1)
    base = net(items, times, nxt)
    later = times.clone()
    later[:, 6] += 3e6
    later_nxt = torch.cat([later[:, 1:], later[:, -1:] + 100.0], 1)
    out = net(items, later, later_nxt)
    assert torch.allclose(out[:, :5], base[:, :5], atol=1e-6)
    assert not torch.allclose(out[:, 5], base[:, 5], atol=1e-4)


def test_left_padding_does_not_change_the_outputs():
    rng = np.random.default_rng(2)
    net = _net(True)
    items, times = _seq(rng, 1, 7)
    outs = []
    for width in (7, 9, 20):
        pad = width - 7
        seq = torch.cat([torch.zeros(1, pad, dtype=torch.long), items], 1)
        ts = torch.cat([torch.zeros(1, pad, dtype=torch.float64), times], 1)
        out = net(seq, ts, ts)
        assert not out[:, :pad].any()                    # padded rows stay zero
        outs.append(out[:, pad:])
    assert torch.allclose(outs[0], outs[1], atol=1e-6) and torch.allclose(outs[0], outs[2], atol=1e-6)


def test_sampled_softmax_equals_full_softmax_when_every_item_is_a_negative():
    torch.manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(N_ITEMS + 1, 16), dim=-1)
    h = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    pos = torch.tensor([1, 5, 9, 40, 17, 3])
    every = torch.arange(1, N_ITEMS + 1).expand(6, -1)       # each item once, the positive included
    sampled = sampled_softmax_loss(h, table, pos, every, 0.05)
    full = full_softmax_loss(h, table, pos, 0.05)
    assert torch.allclose(sampled, full, atol=1e-5)
    # with fewer negatives the loss is smaller (a sum over fewer exponentials), and a
    # negative that equals its positive adds nothing
    assert sampled_softmax_loss(h, table, pos, every[:, :10], 0.05) < full
    same = pos.unsqueeze(1).expand(6, 4)
    assert float(sampled_softmax_loss(h, table, pos, same, 0.05)) == pytest.approx(0.0, abs=1e-6)


def test_both_routes_of_the_sampled_softmax_agree_in_value_and_gradient():
    torch.manual_seed(1)
    w = torch.randn(N_ITEMS + 1, 16, requires_grad=True)
    h0 = torch.randn(30, 16, requires_grad=True)
    pos = torch.randint(1, N_ITEMS + 1, (30,))
    neg = torch.randint(1, N_ITEMS + 1, (30, 7))
    out = []
    for dense in (True, False):
        table = torch.nn.functional.normalize(w, dim=-1)
        loss = sampled_softmax_loss(torch.nn.functional.normalize(h0, dim=-1), table, pos, neg, 0.05, dense)
        gw, gh = torch.autograd.grad(loss, (w, h0))
        out.append((loss.detach(), gw, gh))
    for a, b in zip(*out):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("key,value", [("loss", "bce"), ("time_query", "target"),
                                       ("train_rows", "all"), ("n_negatives", 0),
                                       ("temperature", 0.0), ("dropout", 1.0)])
def test_bad_config_names_the_key(key, value):
    cls = METHODS.get("hstu")
    cfg = build_config(cls.Config, {key: value})
    with pytest.raises(ConfigError, match=key):
        cls(cfg, Context(toy_dataset(), None, "cpu", 0, progress=False))


def _model(ds, **over):
    seed_everything(0)
    cls = METHODS.get("hstu")
    cfg = build_config(cls.Config, {**cls.smoke_config, "epochs": 2, **over})
    return cls(cfg, Context(ds, None, "cpu", 0, progress=False))


def _fitted(ds, **over):
    """Built and trained at once (dropout draws from the global RNG the build seeded)."""
    model = _model(ds, **over)
    model.fit()
    return model


def _shift_times(ds: Dataset, seconds: float, splits=("valid", "test")) -> Dataset:
    """The same dataset with the timestamps of ``splits`` moved by ``seconds``."""
    times = {f"{s}_times": [t + seconds * (s in splits) for t in getattr(ds, f"{s}_times")]
             for s in ("train", "valid", "test")}
    return Dataset(name=ds.name, n_items=ds.n_items, item_ids=ds.item_ids, user_ids=ds.user_ids,
                   train=ds.train, valid=ds.valid, test=ds.test, item_text=ds.item_text,
                   max_history=ds.max_history, split=ds.split, info=ds.info, **times)


def _test_scores(model, ds):
    users = ds.eval_users("test")
    batch = user_batch(ds, "test", users, target_time=model.reads_target_time)
    model.eval()
    with torch.no_grad():
        return model.score(batch)


def test_time_bias_reads_no_held_out_timestamp_by_default():
    ds = toy_dataset()
    moved = _shift_times(ds, 3.0e7)                  # the validation and test interactions' times
    a, b = _fitted(ds), _fitted(moved)
    assert not a.reads_target_time
    for key, value in a.module.state_dict().items():        # training reads training times only
        assert torch.equal(value, b.module.state_dict()[key]), key
    # ranking the test targets reads the history's times (the validation item is history
    # there), never the test interaction's own
    test_moved = _shift_times(ds, 3.0e7, ("test",))
    assert torch.equal(_test_scores(a, ds), _test_scores(a, test_moved))
    # the opt-in reads the held-out time: the same weights score differently once it moves
    c = _fitted(ds, time_query="next")
    assert c.reads_target_time
    assert not torch.allclose(_test_scores(c, ds), _test_scores(c, test_moved))
    with pytest.raises(ValueError, match="target_time"):
        c.score(user_batch(ds, "test", ds.eval_users("test")))


def test_evaluator_hands_the_target_time_only_to_a_model_that_opts_in():
    ds = toy_dataset()
    ev = Evaluator(ds, EvalConfig(ks=(5,)))
    seen = {}
    for query in ("self", "next"):
        model = _fitted(ds, time_query=query, epochs=1)
        original = model.score

        def spy(batch, original=original, query=query):
            seen[query] = batch.target_time
            assert batch.times is not None
            return original(batch)
        model.score = spy
        ev.rank(model, "test", ds.eval_users("test"))
    assert seen["self"] is None
    first = np.array([ds.test_times[u][0] for u in ds.eval_users("test")])
    assert np.array_equal(seen["next"].numpy(), first)


def test_without_timestamps_only_the_position_bias_runs_and_the_log_says_so():
    ds = toy_dataset()
    bare = Dataset(name="bare", n_items=ds.n_items, item_ids=ds.item_ids, user_ids=ds.user_ids,
                   train=ds.train, valid=ds.valid, test=ds.test, max_history=ds.max_history)
    model = _model(bare, loss="full")
    log = model.fit()
    assert "position bias only" in log["notes"] and "full softmax" in log["notes"]
    assert all(rel.time_w is None for rel in model.module.bias)
    timed = _model(ds)
    assert all(rel.time_w is not None for rel in timed.module.bias)
    notes = timed.fit()["notes"]
    assert "time bias" in notes and "sampled softmax" in notes
    with pytest.raises(ValueError, match="times"):
        timed.score(user_batch(bare, "test", bare.eval_users("test")))


def test_train_rows_last_keeps_each_users_most_recent_window():
    ds = toy_dataset(max_history=4)
    every = _model(ds)
    last = _model(ds, train_rows="last")
    assert len(last.windows) == sum(len(s) >= 2 for s in ds.train) < len(every.windows)
    for u, row in enumerate(last.windows):
        assert row.tolist() == ds.train[u][-5:].tolist()
    # and the windows' timestamps stay aligned with their items
    assert last.window_times.shape == last.windows.shape
    assert np.array_equal(last.window_times[0], ds.train_times[0][-5:])


@pytest.mark.parametrize("loss", ["sampled", "full"])
def test_hstu_learns_the_next_item_cycle(loss):
    # the next item is determined by the last one: chance Recall@1 = 1/30
    ds = toy_dataset()
    model = _model(ds, hidden=32, dqk=16, dv=16, n_heads=2, n_blocks=2, epochs=40, patience=40,
                   lr=5e-3, dropout=0.1, n_negatives=64, loss=loss)
    ev = Evaluator(ds, EvalConfig(ks=(1, 5), subsets=("all",)))
    model.fit(ev.validation_ndcg)
    rows = ev.evaluate(model, splits=("test",), progress=False, throughput=False).rows
    recall1 = next(r["value"] for r in rows if r["metric"] == "recall" and r["k"] == 1)
    assert recall1 > 0.7
