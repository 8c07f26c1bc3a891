"""One training for several protocols: a run with ``evaluation.protocol: [masked, unmasked]``
trains each suite-loop method once (a ValidatorPanel early-stops each protocol on its own) and
writes one cell per protocol, each equal to what a run of that protocol alone writes."""

import argparse
import json

import pandas as pd
import pytest

from benchmarks.cli import _protocols
from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.matrix import expand, parse_matrix
from benchmarks.protocol import ValidatorPanel
from benchmarks.runner import protocol_siblings, run_matrix

# eval every epoch, short patience: the two protocols' selections can part ways
MF = {"name": "mf", "config": {"epochs": 14, "dim": 8, "patience": 2, "lr": 0.05}}
SASREC = {"name": "sasrec", "config": {"epochs": 8, "hidden": 16, "inner": 32, "n_layers": 1, "patience": 2}}
KEY = ["dataset", "method", "protocol", "split", "subset", "metric", "k"]


def _matrix(tmp_path, methods, protocol, seeds=(0,)):
    entry = write_toy_recbole(tmp_path / "data", n_late=3)
    return parse_matrix({"name": "s", "datasets": [entry], "seeds": list(seeds),
                         "evaluation": {"ks": [5, 10], "protocol": protocol, "subsets": ["all"]},
                         "methods": methods}, "s.yaml")


def _logs(out, method):
    logs = {}
    for cell in (out / "cells" / "toy" / method).iterdir():
        proto = json.loads((cell / "run.json").read_text())["protocol"]["label"]
        logs[proto] = json.loads((cell / "train_log.json").read_text())
    return logs


def test_one_training_gives_each_protocol_what_its_own_run_gives(tmp_path):
    shared = tmp_path / "shared"
    assert not run_matrix(_matrix(tmp_path, [MF, SASREC, "mostpop"], ["masked", "unmasked"]), shared,
                          progress=False)["failed"]
    alone = tmp_path / "alone"
    for proto in ("masked", "unmasked"):
        assert not run_matrix(_matrix(tmp_path, [MF, SASREC, "mostpop"], proto), alone, progress=False)["failed"]
    a = pd.read_csv(shared / "results.csv")
    b = pd.read_csv(alone / "results.csv")
    a = a[a["metric"].isin(["recall", "ndcg"])].set_index(KEY)["value"].sort_index()
    b = b[b["metric"].isin(["recall", "ndcg"])].set_index(KEY)["value"].sort_index()
    assert len(a) == len(b) and set(a.index.get_level_values("protocol")) == {"masked", "unmasked"}
    pd.testing.assert_series_equal(a, b)
    for method in ("mf", "sasrec"):
        mine, theirs = _logs(shared, method), _logs(alone, method)
        for proto in ("masked", "unmasked"):
            assert mine[proto]["shared_training"]["protocols"] == ["masked", "unmasked"]
            for field in ("best_epoch", "best_valid_ndcg10", "stopped"):
                assert mine[proto][field] == theirs[proto][field], (method, proto, field)
            assert [e.get("valid_ndcg10") for e in mine[proto]["epochs"]] == \
                [e.get("valid_ndcg10") for e in theirs[proto]["epochs"]]
        # the one training ran until the later of the two protocols stopped; the earlier one's
        # cell was written when it stopped, while the other trained on
        ends = {p: len(theirs[p]["epochs"]) for p in theirs}
        later = max(ends, key=ends.get)
        assert mine[later]["shared_training"]["epochs"] == ends[later]
        assert "written_while_training" not in mine[later]["shared_training"]
        for proto in set(ends) - {later}:
            if ends[proto] < ends[later]:
                assert mine[proto]["shared_training"]["epochs"] == ends[proto]
                assert mine[proto]["shared_training"]["written_while_training"] == [later]
    # on these toy data the protocols do select differently (else the test would prove little)
    mf = _logs(alone, "mf")
    assert [e["valid_ndcg10"] for e in mf["masked"]["epochs"]] != [e["valid_ndcg10"] for e in mf["unmasked"]["epochs"]]


def test_siblings_are_the_same_training_under_another_protocol(tmp_path):
    cells = expand(_matrix(tmp_path, [MF, "mostpop"], ["masked", "unmasked"], seeds=(0, 1)))
    groups = [[(c.method.label, c.seed, c.resolved["evaluation"]["protocol"]) for c in g]
              for g in protocol_siblings(cells)]
    assert groups == [[("mf", 0, "masked"), ("mf", 0, "unmasked")], [("mf", 1, "masked"), ("mf", 1, "unmasked")],
                      [("mostpop", 0, "masked")], [("mostpop", 0, "unmasked")],    # no training loop to share
                      [("mostpop", 1, "masked")], [("mostpop", 1, "unmasked")]]


def test_a_panel_is_not_a_validator():
    panel = ValidatorPanel([lambda m: 0.0, lambda m: 1.0], ["masked", "unmasked"])
    with pytest.raises(TypeError, match="read by benchmarks.training.train_loop only"):
        panel(object())
    with pytest.raises(ValueError, match="one label per validator"):
        ValidatorPanel([lambda m: 0.0], ["masked", "unmasked"])


def test_protocol_lists_are_checked(tmp_path):
    assert _protocols("masked,unmasked") == ["masked", "unmasked"]
    assert _protocols("masked") == "masked"
    for bad in ("masked,masked", "masked,nonsense", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="distinct names among"):
            _protocols(bad)
    with pytest.raises(ConfigError, match="a list of distinct names"):
        _matrix(tmp_path, ["mostpop"], ["masked", "masked"])
    with pytest.raises(ConfigError, match="evaluation.protocol: unknown 'nonsense'"):
        _matrix(tmp_path, ["mostpop"], ["masked", "nonsense"])


def test_a_protocol_that_stopped_keeps_its_cell_when_the_training_fails_later(tmp_path, monkeypatch):
    """The masked MF cell is written when masked's patience runs out (epoch 3 on these data):
    a training that then fails (here: at epoch 6, while unmasked trains on) leaves that cell,
    equal to a masked run's alone, and no unmasked one."""
    from baselines.mf import MF as MFModel

    alone = tmp_path / "alone"
    assert not run_matrix(_matrix(tmp_path, [MF], "masked"), alone, progress=False)["failed"]
    ends = {p: len(log_["epochs"]) for p, log_ in _logs(alone, "mf").items()}
    assert ends == {"masked": 3}
    loss, batches = MFModel.loss, MFModel.batches
    epochs_seen = []

    def counting(self, rng):
        epochs_seen.append(1)
        return batches(self, rng)

    def failing(self, batch):
        if len(epochs_seen) >= 6:
            raise RuntimeError("killed at epoch 6")
        return loss(self, batch)

    monkeypatch.setattr(MFModel, "batches", counting)
    monkeypatch.setattr(MFModel, "loss", failing)
    shared = tmp_path / "shared"
    summary = run_matrix(_matrix(tmp_path, [MF], ["masked", "unmasked"]), shared, progress=False)
    assert [f["error"] for f in summary["failed"]] == ["RuntimeError: killed at epoch 6"]
    logs = _logs(shared, "mf")
    assert set(logs) == {"masked"}
    assert logs["masked"]["shared_training"] == {**logs["masked"]["shared_training"], "epochs": 3,
                                                "written_while_training": ["unmasked"]}
    a, b = (pd.read_csv(next((d / "cells" / "toy" / "mf").iterdir()) / "metrics.csv") for d in (shared, alone))
    a, b = (df[df["metric"].isin(["recall", "ndcg"])].drop(columns="config_hash") for df in (a, b))
    assert len(a) == 8
    pd.testing.assert_frame_equal(a, b)


def test_writing_a_stopped_protocol_leaves_the_training_as_it_was():
    """``on_stop`` may do anything to the model and the random streams (the runner loads the
    best state, evaluates, may refit after seed_everything): the loop puts weights and streams
    back, so the protocol that trains on gets the losses and best state it gets without it."""
    import random

    import numpy as np
    import torch

    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.toy import toy_dataset
    from benchmarks.registry import METHODS
    from benchmarks.utils import seed_everything

    ds = toy_dataset()
    cls = METHODS.get("sasrec")   # dropout: the torch stream matters
    models, calls = [], []

    def train(on_stop):
        seed_everything(0)
        ctx = build_context(ds, seed=0, needs=frozenset(), progress=False)
        model = cls(build_config(cls.Config, {**cls.smoke_config, "epochs": 6, "patience": 2, "dropout": 0.3}), ctx)
        models.append(model)
        flat = iter([0.5] * 100)           # never improves after epoch 1: stops at epoch 3
        rising = iter(range(100))          # improves every epoch: trains to the end
        panel = ValidatorPanel([lambda m: next(flat), lambda m: float(next(rising))], ["a", "b"], on_stop=on_stop)
        losses = []
        loss = model.loss
        model.loss = lambda batch: losses.append(float((v := loss(batch)).detach())) or v
        model.fit(panel)
        return panel, losses

    def meddle(i, log_, state):
        calls.append((i, len(log_["epochs"]), log_["shared_training"]["written_while_training"],
                      {k: v.clone() for k, v in state.items()}))
        models[-1].module.load_state_dict(state)
        models[-1].eval()
        with torch.no_grad():
            for p in models[-1].module.parameters():
                p.add_(1.0)
        seed_everything(123)
        torch.rand(1000), np.random.rand(10), random.random()

    plain, plain_losses = train(None)
    written, written_losses = train(meddle)
    assert [(i, n, still) for i, n, still, _ in calls] == [(0, 3, ["b"])]
    assert written.written_early == [0] and plain.written_early == []
    assert len(plain_losses) > 6 and written_losses == plain_losses
    for (log_w, state_w), (log_p, state_p) in zip(written.outcomes, plain.outcomes):
        assert log_w["best_epoch"] == log_p["best_epoch"] and log_w["stopped"] == log_p["stopped"]
        assert all(torch.equal(state_w[k], state_p[k]) for k in state_p)
    assert all(torch.equal(calls[0][3][k], plain.outcomes[0][1][k]) for k in calls[0][3])


def test_the_time_spent_writing_a_cell_is_not_training_time(monkeypatch):
    """The minutes an early cell takes to evaluate are left out of the training clock: they do
    not count against ``max_train_minutes`` nor in the logs' training seconds (a fake clock:
    each reading advances it 1 ms, the cell's writing 1,000 s)."""
    from benchmarks import training
    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.toy import toy_dataset
    from benchmarks.registry import METHODS
    from benchmarks.utils import seed_everything

    now = [0.0]

    def clock():
        now[0] += 0.001
        return now[0]

    monkeypatch.setattr(training.time, "perf_counter", clock)
    cls = METHODS.get("mf")
    seed_everything(0)
    model = cls(build_config(cls.Config, {**cls.smoke_config, "epochs": 6, "eval_every": 1, "patience": 2, "max_train_minutes": 1}),
                build_context(toy_dataset(), seed=0, needs=frozenset(), progress=False))
    flat, rising = iter([0.5] * 100), iter(range(100))

    def slow_write(i, log_, state):
        now[0] += 1000.0

    panel = ValidatorPanel([lambda m: next(flat), lambda m: float(next(rising))], ["a", "b"], on_stop=slow_write)
    model.fit(panel)
    (early, _), (late, _) = panel.outcomes
    assert panel.written_early == [0] and early["shared_training"]["epochs"] == 3
    assert late["stopped"] == "max epochs" and len(late["epochs"]) == 6
    assert late["train_seconds"] < 60 and late["shared_training"]["train_seconds"] < 60
