"""run --track: a toy matrix logged to a temporary MLflow store and TensorBoard folder, read
back with the libraries' own readers (MlflowClient, TensorBoard's EventAccumulator); a
tracking failure keeps the cell; a missing extra is one clear error."""

import math
import sys

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.rundir import RunDir
from benchmarks.tracking import flatten, metric_name, open_tracker


@pytest.fixture
def toy_matrix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # MLflow's default artefact root is ./mlruns
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    entry = write_toy_recbole(tmp_path / "data")
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "toy-track", "datasets": [entry], "seeds": [0],
                                    "methods": ["mostpop", {"name": "mf", "config": {"epochs": 3}}]}))
    return path


def _cells(out):
    return {c.config()["label"]: c for c in RunDir(out).finished()}


def test_mlflow_run_per_cell_read_back(tmp_path, toy_matrix, capsys):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    out = tmp_path / "run"
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--track", "mlflow",
                 "--track-uri", uri]) == 0
    assert f"tracked 2 cell(s) -> mlflow {uri}" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toy-track")
    runs = {r.data.tags["label"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["mf", "mostpop"]
    for label, cell in _cells(out).items():
        run, config, info = runs[label], cell.config(), cell.run_info()
        assert run.info.status == "FINISHED" and run.info.run_name == f"toy/{label}/seed0"
        assert run.data.params == flatten(config)
        assert run.data.params["evaluation.ks"] == "[5, 10]" and run.data.params["dataset.name"] == "toy"
        tags = run.data.tags
        assert {k: tags[k] for k in ("dataset", "method", "label", "seed", "matrix", "config_hash")} == {
            "dataset": "toy", "method": label, "label": label, "seed": "0", "matrix": "toy-track",
            "config_hash": info["config_hash"]}
        assert tags["commit"] == str(info["git_commit"]) == tags["mlflow.source.git.commit"]
        assert tags["protocol"] == info["protocol"]["label"] == "unmasked"
        rows = cell.metrics()
        assert len(run.data.metrics) == len(rows) + (2 if label == "mf" else 0)   # + the two step metrics
        for r in rows.itertuples(index=False):
            assert run.data.metrics[metric_name(r.split, r.subset, r.metric, r.k)] == pytest.approx(r.value)
        artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "train_log.json", "run.json", "metrics.csv", "per_user.npz"} <= artefacts
    history = client.get_metric_history(runs["mf"].info.run_id, "epoch/valid_ndcg_at_10")
    epochs = _cells(out)["mf"].train_log()["epochs"]
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (e["epoch"], pytest.approx(e["valid_ndcg10"])) for e in epochs]
    assert len(epochs) == 3
    loss = client.get_metric_history(runs["mf"].info.run_id, "epoch/loss")
    assert sorted(m.step for m in loss) == [1, 2, 3]
    assert client.get_metric_history(runs["mostpop"].info.run_id, "epoch/loss") == []
    # the same command again: nothing new to log, no second run of a cell
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--track", "mlflow",
                 "--track-uri", uri]) == 0
    assert "tracked 0 cell(s)" in capsys.readouterr().out
    assert len(client.search_runs([experiment.experiment_id])) == 2


def test_tensorboard_folder_per_cell_read_back(tmp_path, toy_matrix, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet"]) == 0   # untracked first
    capsys.readouterr()
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--track", "tensorboard"]) == 0
    assert f"tracked 2 cell(s) -> tensorboard {out / 'tensorboard'}" in capsys.readouterr().out
    for label, cell in _cells(out).items():
        folder = out / "tensorboard" / cell.path.relative_to(out / "cells")
        acc = EventAccumulator(str(folder))
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        rows = cell.metrics()
        for r in rows.itertuples(index=False):
            (event,) = acc.Scalars(metric_name(r.split, r.subset, r.metric, r.k))
            assert math.isclose(event.value, r.value, rel_tol=1e-6)            # float32 in the file
        epochs = cell.train_log()["epochs"]
        if label == "mf":
            assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in acc.Scalars("epoch/valid_ndcg_at_10")] == [
                (e["epoch"], e["valid_ndcg10"]) for e in epochs]
            assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2, 3]
        else:
            assert "epoch/loss" not in scalars
        assert len(scalars) == len(rows) + (2 if label == "mf" else 0)
        assert "tags/text_summary" in acc.Tags()["tensors"]
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--track", "tensorboard"]) == 0
    assert "tracked 0 cell(s)" in capsys.readouterr().out


def test_a_tracking_failure_keeps_the_cell(tmp_path, toy_matrix, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    from benchmarks.tracking import TensorBoardTracker

    def broken(self, cell):
        raise OSError("disk full")

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(TensorBoardTracker, "log", broken)
        assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--methods", "mf",
                     "--track", "tensorboard"]) == 1
    err = capsys.readouterr().err
    assert "TRACKING FAILED" in err and "OSError: disk full" in err and "run the same command again" in err
    (cell,) = RunDir(out).finished()
    assert cell.complete and set(RunDir(out).results()["method"]) == {"mf"}
    assert main(["run", str(toy_matrix), "--output", str(out), "--quiet", "--methods", "mf",
                 "--track", "tensorboard"]) == 0
    assert "tracked 1 cell(s)" in capsys.readouterr().out


@pytest.mark.parametrize("kind, module", [("mlflow", "mlflow"), ("tensorboard", "tensorboard")])
def test_a_missing_extra_is_one_clear_error(tmp_path, monkeypatch, kind, module):
    monkeypatch.setitem(sys.modules, module, None)      # import fails as if not installed
    with pytest.raises(ConfigError, match=rf"--track {kind} needs the `track` extra .*"
                                          r"pip install 'genrec-bench\[track\]'"):
        open_tracker(kind, matrix="m", run=RunDir(tmp_path))


def test_track_flags_are_checked(toy_matrix, capsys):
    assert main(["run", str(toy_matrix), "--track-uri", "x"]) == 2
    assert "--track-uri" in capsys.readouterr().err
    assert main(["run", str(toy_matrix), "--dry-run", "--track", "mlflow"]) == 2
    assert "a dry run writes no cells" in capsys.readouterr().err


def test_flatten_keeps_leaves_as_json_text():
    assert flatten({"a": {"b": 1, "c": [5, 10], "d": None, "e": {}}, "f": "x", "g": True}) == {
        "a.b": "1", "a.c": "[5, 10]", "a.d": "null", "a.e": "{}", "f": "x", "g": "true"}


def test_an_mlflow_run_that_failed_midway_is_logged_again(tmp_path, toy_matrix, monkeypatch, capsys):
    """A run whose artefacts could not be uploaded is marked FAILED and does not count as
    logged: the next run of the command logs the cell again."""
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["run", str(toy_matrix), "--output", str(tmp_path / "run"), "--quiet", "--methods", "mostpop",
            "--track", "mlflow", "--track-uri", uri]
    with monkeypatch.context() as m:
        def refuse(self, run_id, local_dir, artifact_path=None):
            raise OSError("artefact store refused")
        m.setattr(MlflowClient, "log_artifacts", refuse)
        assert main(args) == 1
    assert "TRACKING FAILED" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toy-track").experiment_id
    assert [r.info.status for r in client.search_runs([experiment])] == ["FAILED"]
    assert main(args) == 0
    assert "tracked 1 cell(s)" in capsys.readouterr().out
    assert sorted(r.info.status for r in client.search_runs([experiment])) == ["FAILED", "FINISHED"]
