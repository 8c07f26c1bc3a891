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
        # the one training ran until the later of the two protocols stopped
        assert mine["masked"]["shared_training"]["epochs"] == max(len(theirs[p]["epochs"]) for p in theirs)
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
