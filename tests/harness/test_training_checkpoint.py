"""A training stopped part-way resumes from its checkpoint exactly as if it had never stopped:
the same per-epoch losses, validation scores, best epochs and final weights, for every
baseline the suite's training loop trains, for a shared multi-protocol training that a later
run finishes for the protocol still left, and through the runner (a killed ``run`` picked up by
the next ``run`` of the same matrix)."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import training
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset, write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.matrix import parse_matrix
from benchmarks.protocol import ValidatorPanel
from benchmarks.registry import METHODS
from benchmarks.rundir import RunDir
from benchmarks.runner import run_matrix
from benchmarks.utils import git_commit


class Killed(Exception):
    """What the tests raise to stop a training mid-way (a stand-in for a killed process)."""


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


def _model(ds, name, checkpoint, protocol="masked", cache=None, **over):
    cls = METHODS.get(name)
    ev = Evaluator(ds, EvalConfig(ks=[10], protocol=protocol))
    ctx = build_context(ds, seed=0, evaluator=ev, needs=cls.needs if cache else frozenset(), cache=cache,
                        progress=False)
    ctx = dataclasses.replace(ctx, checkpoint=checkpoint, checkpoint_seconds=0.0)
    cfg = build_config(cls.Config, {**cls.smoke_config, "epochs": 5, "patience": 50, **over})
    return cls(cfg, ctx), ev


def _killing(validator, at: int):
    """``validator`` that raises Killed on its ``at``-th call (the validation of epoch ``at``)."""
    calls = []

    def v(model):
        calls.append(1)
        if len(calls) == at:
            raise Killed(f"killed at epoch {at}")
        return validator(model)
    return v


def _kill_in_epoch(model, at: int):
    """Make ``model`` raise Killed when the loop asks for epoch ``at``'s batches."""
    batches, seen = model.batches, []

    def dying(rng):
        seen.append(1)
        if len(seen) == at:
            raise Killed(f"killed in epoch {at}")
        return batches(rng)
    model.batches = dying


def _same(a: dict, b: dict):
    """Two train logs equal in everything but timings, memory and the record of resumption."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (isinstance(k, str) and "seconds" in k) and k not in ("peak_rss_mb", "resumed", "shared_training")}
        return [strip(v) for v in x] if isinstance(x, list) else x
    assert strip(a) == strip(b)


def _resumed(log_) -> list[tuple[int, list[str]]]:
    assert all(r["checkpoint_commit"] == git_commit() for r in log_["resumed"])
    return [(r["epoch"], r["protocols"]) for r in log_["resumed"]]


def _weights(model):
    return {k: v.clone() for k, v in model.module.state_dict().items()}


T5_SMALL = {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16, "d_ff": 64}


@pytest.mark.parametrize("name,over", [
    ("mf", {}), ("sasrec", {}), ("sasrec", {"loss": "bce"}), ("bert4rec", {}), ("caser", {}), ("hgn", {}),
    ("hgn", {"loss": "ce"}), ("lightgcn", {}), ("hstu", {}),
    # methods with features and identifiers (built from the same cache both times)
    ("generative", {"batch_size": 64, "backbone_config": T5_SMALL}), ("setrec-t5", {"epochs": 4}),
    ("rpg", {"epochs": 4})])
def test_a_resumed_training_equals_an_unbroken_one(toy, tmp_path, name, over):
    cache = tmp_path / "cache"
    model, ev = _model(toy, name, None, cache=cache, **over)
    whole = model.fit(ev.validation_ndcg)
    want = _weights(model)

    ckpt = tmp_path / "t.pt"
    model, ev = _model(toy, name, ckpt, cache=cache, **over)
    _kill_in_epoch(model, 4)                           # three epochs done and saved, the fourth lost
    with pytest.raises(Killed):
        model.fit(ev.validation_ndcg)
    assert ckpt.is_file()
    model, ev = _model(toy, name, ckpt, cache=cache, **over)   # a fresh process: a new model, the same run
    again = model.fit(ev.validation_ndcg)
    _same(whole, again)
    assert _resumed(again) == [(3, ["masked"])]
    got = _weights(model)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name


def test_a_finished_training_is_not_trained_again(toy, tmp_path):
    """The loop saves once more when it ends: a run stopped while its cells were being written
    resumes with nothing left to train."""
    ckpt = tmp_path / "t.pt"
    model, ev = _model(toy, "mf", ckpt, epochs=3)
    first = model.fit(ev.validation_ndcg)
    model, ev = _model(toy, "mf", ckpt, epochs=3)
    model.loss = lambda batch: (_ for _ in ()).throw(AssertionError("trained again"))
    again = model.fit(ev.validation_ndcg)
    _same(first, again)
    assert _resumed(again) == [(3, ["masked"])]


def test_a_checkpoint_of_another_training_is_ignored(toy, tmp_path, caplog):
    ckpt = tmp_path / "t.pt"
    model, ev = _model(toy, "mf", ckpt)
    with pytest.raises(Killed):
        model.fit(_killing(ev.validation_ndcg, 3))
    model, ev = _model(toy, "mf", ckpt, lr=0.5)          # another config: starts over
    log_ = model.fit(ev.validation_ndcg)
    assert "resumed" not in log_ and "made for another method, config, seed or dataset" in caplog.text
    fresh, ev = _model(toy, "mf", None, lr=0.5)
    _same(fresh.fit(ev.validation_ndcg), log_)
    model, ev = _model(toy, "mf", ckpt, protocol="unmasked", lr=0.5)    # selected on masked only
    caplog.clear()
    assert "resumed" not in model.fit(ev.validation_ndcg)
    assert "this run also needs ['unmasked']" in caplog.text
    ckpt.write_bytes(b"not a checkpoint")
    caplog.clear()
    model, ev = _model(toy, "mf", ckpt)
    assert "resumed" not in model.fit(ev.validation_ndcg) and "unreadable" in caplog.text


def test_a_shared_training_resumes_for_the_protocol_left(toy, tmp_path):
    """masked and unmasked trained together; the run is killed after masked stopped (its cell
    written) while unmasked trained on; the next run, for unmasked alone, resumes the shared
    checkpoint and ends where a whole unmasked training ends."""
    over = {"patience": 2, "epochs": 12, "lr": 0.05, "dim": 8}
    alone, ev_u = _model(toy, "mf", None, protocol="unmasked", **over)
    whole = alone.fit(ev_u.validation_ndcg)
    want = _weights(alone)
    m_alone, ev_m = _model(toy, "mf", None, protocol="masked", **over)
    masked_end = len(m_alone.fit(ev_m.validation_ndcg)["epochs"])
    assert masked_end + 2 < len(whole["epochs"])          # masked stops first on these data

    ckpt = tmp_path / "t.pt"
    model, ev_m = _model(toy, "mf", ckpt, protocol="masked", **over)
    ev_u = Evaluator(toy, EvalConfig(ks=[10], protocol="unmasked"))
    written = []
    panel = ValidatorPanel([ev_m.validation_ndcg, _killing(ev_u.validation_ndcg, masked_end + 2)],
                           ["masked", "unmasked"], on_stop=lambda i, log_, state: written.append(i))
    with pytest.raises(Killed):
        model.fit(panel)
    assert written == [0]
    model, ev_u = _model(toy, "mf", ckpt, protocol="unmasked", **over)
    again = model.fit(ev_u.validation_ndcg)
    _same(whole, again)
    assert _resumed(again) == [(masked_end + 1, ["unmasked"])]
    assert all(torch.equal(v, want[k]) for k, v in _weights(model).items())


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(training.CHECKPOINT_ENV, raising=False)
    assert training.checkpoint_seconds() == 60 * training.CHECKPOINT_MINUTES
    monkeypatch.setenv(training.CHECKPOINT_ENV, "0.5")
    assert training.checkpoint_seconds() == 30.0
    monkeypatch.setenv(training.CHECKPOINT_ENV, "off")
    assert training.checkpoint_seconds() is None
    for bad in ("-1", "soon", "nan"):
        monkeypatch.setenv(training.CHECKPOINT_ENV, bad)
        with pytest.raises(ConfigError, match="GENREC_BENCH_CHECKPOINT_MINUTES: expected minutes >= 0"):
            training.checkpoint_seconds()


def _matrix(tmp_path, protocol):
    entry = write_toy_recbole(tmp_path / "data", n_late=3)
    return parse_matrix({"name": "s", "datasets": [entry], "seeds": [0],
                         "evaluation": {"ks": [5, 10], "protocol": protocol, "subsets": ["all"]},
                         "methods": [{"name": "sasrec", "config": {"epochs": 6, "hidden": 16, "inner": 32,
                                                                   "n_layers": 1, "patience": 50}}]}, "s.yaml")


def test_a_killed_run_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """Through the runner: ``run`` killed at epoch 4 leaves a checkpoint under the run folder;
    the same ``run`` again resumes it, writes the cell (equal to an unbroken run's) and removes
    the checkpoint."""
    from baselines.sasrec import SASRec

    monkeypatch.setenv(training.CHECKPOINT_ENV, "0")
    whole = tmp_path / "whole"
    assert not run_matrix(_matrix(tmp_path, "masked"), whole, progress=False)["failed"]
    assert not list((whole / "checkpoints").glob("*.pt"))

    batches = SASRec.batches
    epochs_seen = []

    def dying(self, rng):
        epochs_seen.append(1)
        if len(epochs_seen) == 4:
            raise Killed("killed at epoch 4")
        return batches(self, rng)

    monkeypatch.setattr(SASRec, "batches", dying)
    broken = tmp_path / "broken"
    with pytest.raises(Killed):      # not an ordinary failure: the process is gone
        run_matrix(_matrix(tmp_path, "masked"), broken, progress=False)
    assert len(list((broken / "checkpoints").glob("siblings-*.pt"))) == 1
    assert not RunDir(broken).finished()
    monkeypatch.setattr(SASRec, "batches", batches)
    assert not run_matrix(_matrix(tmp_path, "masked"), broken, progress=False)["failed"]
    assert not list((broken / "checkpoints").glob("*.pt"))
    (cell,) = RunDir(broken).finished()
    log_ = json.loads((cell.path / "train_log.json").read_text())
    assert _resumed(log_) == [(3, ["masked"])]
    a, b = (pd.read_csv(d / "results.csv") for d in (whole, broken))
    a, b = (df[df["metric"].isin(["recall", "ndcg"])].reset_index(drop=True) for df in (a, b))
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(*(np.load(RunDir(d).finished()[0].path / "per_user.npz")["test/all/ndcg@10"]
                                    for d in (whole, broken)))
