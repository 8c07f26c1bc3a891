"""The named evaluation protocol end to end: recorded per row, one table per protocol, the
refit option, the mask_history key's replacement, and cold rows of cold-blind methods."""

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.matrix import parse_matrix
from benchmarks.report import write_report
from benchmarks.runner import run_matrix

SMALL_MF = {"name": "mf", "config": {"epochs": 4, "dim": 8, "patience": 10}}
SMALL_SASREC = {"name": "sasrec", "config": {"epochs": 2, "hidden": 16, "inner": 32, "n_layers": 1}}


def _matrix(tmp_path, methods, evaluation=None, **entry_opts):
    entry = {**write_toy_recbole(tmp_path / "data", n_late=3), **entry_opts}
    return parse_matrix({"name": "p", "datasets": [entry], "seeds": [0],
                         "evaluation": {"ks": [5, 10], **(evaluation or {})}, "methods": methods}, "p.yaml")


def test_rows_and_run_json_carry_the_resolved_protocol(tmp_path):
    out = tmp_path / "run"
    assert not run_matrix(_matrix(tmp_path, ["mostpop"]), out, progress=False)["failed"]
    df = pd.read_csv(out / "results.csv")
    # the toy users walk a cycle of 6 items for 8-14 steps: targets repeat history items
    assert set(df["protocol"]) == {"unmasked"}
    run = json.loads(next((out / "cells" / "toy" / "mostpop").iterdir()).joinpath("run.json").read_text())
    assert run["protocol"]["requested"] == "auto" and run["protocol"]["name"] == "unmasked"
    assert "occur in their user's history (repeat consumption)" in run["protocol"]["reason"]
    text = write_report(out)["report.md"].read_text()
    assert "protocol `unmasked`: history items ranked like any other" in text
    assert "Protocol per dataset: toy: `unmasked`" in text


def test_mask_history_key_names_its_replacement(tmp_path):
    with pytest.raises(ConfigError, match="evaluation.mask_history was replaced by the named evaluation.protocol"):
        _matrix(tmp_path, ["mostpop"], {"mask_history": True})


def test_a_run_with_two_protocols_gets_one_table_each_and_a_warning(tmp_path):
    out = tmp_path / "run"
    for proto in ("masked", "unmasked"):
        assert not run_matrix(_matrix(tmp_path, ["mostpop"], {"protocol": proto}), out, progress=False)["failed"]
    paths = write_report(out)
    text = paths["report.md"].read_text()
    assert "this run mixes evaluation protocols (masked, unmasked)" in text
    assert "# Protocol `masked`" in text and "# Protocol `unmasked`" in text
    assert paths["table.md"].read_text().count("Test split, all users") == 2
    assert set(pd.read_csv(paths["table.csv"])["protocol"]) == {"masked", "unmasked"}


def test_refit_retrains_non_sequential_methods_on_train_plus_valid(tmp_path):
    """MF is refit for its best epoch count on training + validation and that model ranks
    the test split; SASRec (sequential) is not refit; validation rows are the first model's."""
    out = tmp_path / "run"
    m = _matrix(tmp_path, [SMALL_MF, SMALL_SASREC], {"protocol": "masked", "refit": True})
    assert not run_matrix(m, out, progress=False)["failed"]
    mf = next((out / "cells" / "toy" / "mf").iterdir())
    log = json.loads((mf / "train_log.json").read_text())
    run = json.loads((mf / "run.json").read_text())
    stats = run["dataset"]["stats"]
    assert log["refit"]["epochs"] == log["best_epoch"]
    assert len(log["refit"]["log"]["epochs"]) == log["best_epoch"]
    assert log["refit"]["train_interactions"] == stats["train_interactions"] + stats["valid_interactions"]
    assert all("valid_ndcg10" not in e for e in log["refit"]["log"]["epochs"])   # no validation
    sas = json.loads(next((out / "cells" / "toy" / "sasrec").iterdir()).joinpath("train_log.json").read_text())
    assert "refit" not in sas
    df = pd.read_csv(out / "results.csv")
    assert set(df["protocol"]) == {"masked+refit"}
    # without refit the same MF config gives other test figures, the same validation figures
    out2 = tmp_path / "run2"
    assert not run_matrix(_matrix(tmp_path, [SMALL_MF], {"protocol": "masked"}), out2, progress=False)["failed"]
    df2 = pd.read_csv(out2 / "results.csv")
    key = ["split", "subset", "metric", "k"]
    a = df[df["method"] == "mf"].set_index(key)["value"]
    b = df2.set_index(key)["value"]
    assert np.allclose(a.loc["valid"], b.loc["valid"])
    assert not np.allclose(a.loc["test"], b.loc["test"])


def test_cold_rows_of_cold_blind_methods_are_not_printed_as_figures(tmp_path):
    out = tmp_path / "run"
    m = _matrix(tmp_path, ["mostpop"], split="ratio", k_core=0)
    assert not run_matrix(m, out, progress=False)["failed"]
    run = json.loads(next((out / "cells" / "toy" / "mostpop").iterdir()).joinpath("run.json").read_text())
    assert run["cold_items"] is None
    text = write_report(out)["report.md"].read_text()
    row = next(line for line in text.splitlines() if line.startswith("| toy | mostpop |"))
    assert row.rstrip(" |").endswith("n/a‡ | n/a‡")
    assert "‡ cannot score cold items" in text


def test_masked_keep_target_runs_end_to_end_and_differs_from_masked_where_targets_repeat(tmp_path):
    """The toy users walk a cycle of 6 items, so their targets repeat history items: under
    `masked` a repeat target can never be hit, under `masked-keep-target` it stays rankable
    (RecBole's general-model rule), so MostPop's recall can only rise; the caption says which."""
    out = tmp_path / "run"
    for proto in ("masked", "masked-keep-target"):
        assert not run_matrix(_matrix(tmp_path, ["mostpop"], {"protocol": proto}), out, progress=False)["failed"]
    df = pd.read_csv(out / "results.csv")
    test = df[(df["split"] == "test") & (df["subset"] == "all") & (df["metric"] == "recall") & (df["k"] == 10)]
    r = test.set_index("protocol")["value"]
    assert r["masked"] == 0.0          # every toy target repeats a history item
    assert r["masked-keep-target"] > 0.0
    text = write_report(out)["report.md"].read_text()
    assert "protocol `masked-keep-target`: history items removed from the ranking except the user's target" in text
