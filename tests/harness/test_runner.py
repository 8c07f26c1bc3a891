"""The matrix runner end to end on the toy data: cells, results, resume, report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError, DataFormatError
from benchmarks.matrix import PRESETS, expand, load_matrix, parse_matrix
from benchmarks.report import write_report
from benchmarks.rundir import RESULT_COLUMNS
from benchmarks.runner import run_matrix

ROOT = Path(__file__).resolve().parents[2]


def _matrix(tmp_path, methods, seeds=(0,)):
    entry = write_toy_recbole(tmp_path / "data")
    return parse_matrix({"name": "t", "datasets": [entry], "seeds": list(seeds),
                         "evaluation": {"ks": [5, 10]}, "methods": methods}, "test.yaml")


SMALL_SASREC = {"name": "sasrec", "config": {"epochs": 3, "hidden": 16, "inner": 32, "n_layers": 1}}


def test_run_writes_cells_results_and_report(tmp_path):
    m = _matrix(tmp_path, ["mostpop", SMALL_SASREC], seeds=(0, 1))
    out = tmp_path / "run"
    summary = run_matrix(m, out, progress=False)
    assert summary == {"cells": 4, "skipped": 0, "ran": 4, "failed": []}
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == RESULT_COLUMNS
    assert set(df["method"]) == {"mostpop", "sasrec"} and set(df["seed"]) == {0, 1}
    assert {"valid", "test"} <= set(df["split"])
    assert {"all", "warm", "pop1"} <= set(df["subset"])
    cell = next((out / "cells" / "toy" / "sasrec").iterdir())
    run = json.loads((cell / "run.json").read_text())
    for key in ("git_commit", "versions", "device", "wall_seconds", "config_hash", "seed"):
        assert key in run
    cfg = json.loads((cell / "config.json").read_text())
    assert cfg["config"]["hidden"] == 16 and cfg["seed"] in (0, 1)
    assert (cell / "per_user.npz").is_file() and (cell / "train_log.json").is_file()
    # a second run skips every finished cell
    assert run_matrix(m, out, progress=False)["skipped"] == 4
    paths = write_report(out)
    md = paths["table.md"].read_text()
    assert "toy R@10" in md and "±" in md and "**" in md
    assert r"\textbf" in paths["table.tex"].read_text()


def test_cell_hash_changes_with_config_and_seed(tmp_path):
    a = expand(_matrix(tmp_path, [SMALL_SASREC]))[0]
    b = expand(_matrix(tmp_path, [{**SMALL_SASREC, "config": {**SMALL_SASREC["config"], "hidden": 8}}]))[0]
    c = expand(_matrix(tmp_path, [SMALL_SASREC], seeds=(1,)))[0]
    assert len({a.hash, b.hash, c.hash}) == 3


def test_interrupted_cell_leaves_nothing_and_resume_completes(tmp_path, monkeypatch):
    from tests.harness import _sleepy_plugin  # noqa: F401  registers "sleepy"
    m = _matrix(tmp_path, ["mostpop", "sleepy"])
    out = tmp_path / "run"
    from benchmarks import runner

    real = runner.run_cells
    def interrupt(cells, *a, **k):
        if any(cell.method.name == "sleepy" for cell in cells):
            raise KeyboardInterrupt
        return real(cells, *a, **k)
    monkeypatch.setattr(runner, "run_cells", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_matrix(m, out, progress=False)
    monkeypatch.setattr(runner, "run_cells", real)
    done = list((out / "cells").glob("*/*/*"))
    assert [p.parent.name for p in done] == ["mostpop"]
    stamp = (done[0] / "metrics.csv").stat().st_mtime_ns
    summary = run_matrix(m, out, progress=False)
    assert summary["skipped"] == 1 and summary["ran"] == 1
    assert (done[0] / "metrics.csv").stat().st_mtime_ns == stamp


def test_killed_process_resumes_without_losing_finished_cells(tmp_path):
    """SIGKILL the runner while a cell's folder is being written; the rerun removes the half-made cell
    folder, keeps the finished cell untouched and completes the rest."""
    entry = write_toy_recbole(tmp_path / "data")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "k", "datasets": [entry], "seeds": [0],
                                      "methods": ["mostpop", "sleepy"]}))
    out = tmp_path / "run"
    marker = tmp_path / "started"
    code = ("import sys; from tests.harness import _sleepy_plugin; from benchmarks.cli import main; "
            f"sys.exit(main(['run', r'{matrix}', '--output', r'{out}', '--quiet']))")
    env = {**os.environ, "GENREC_TEST_SLEEP": "120", "GENREC_TEST_MARKER": str(marker),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, "the runner exited before the slow cell started"
            assert time.time() < deadline, "the slow cell never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = out / "cells" / "toy" / "mostpop"
    assert len(list(finished.iterdir())) == 1
    assert list((out / "cells" / "toy" / "sleepy").glob("*.tmp-*")), "expected the killed cell's temp folder"
    stamp = next(finished.iterdir()).joinpath("metrics.csv").stat().st_mtime_ns
    from benchmarks.matrix import load_matrix
    from tests.harness import _sleepy_plugin  # noqa: F401
    summary = run_matrix(load_matrix(matrix), out, progress=False)
    assert summary["skipped"] == 1 and summary["ran"] == 1
    assert not list(out.glob("cells/*/*/*.tmp-*"))
    assert next(finished.iterdir()).joinpath("metrics.csv").stat().st_mtime_ns == stamp
    assert set(pd.read_csv(out / "results.csv")["method"]) == {"mostpop", "sleepy"}


def test_bad_matrix_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"m.yaml: methods\[1\]: unknown key"):
        parse_matrix({"datasets": ["ml-100k"], "methods": ["mf", {"name": "sasrec", "confg": {}}]}, "m.yaml")
    with pytest.raises(ConfigError, match="SASRecConfig: unknown field"):
        expand(_matrix(tmp_path, [{"name": "sasrec", "config": {"hiden": 3}}]))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        expand(_matrix(tmp_path, ["nope"]))


def test_env_variables_in_method_configs(tmp_path, monkeypatch):
    """${VAR} in a method config (the paper preset's checkpoint paths) is read from the
    environment when the cell is expanded; an unset one names the method and the field."""
    entry = {"name": "generative", "label": "llm",
             "config": {"backbone": "causal", "backbone_config": {"checkpoint": "${GB_TEST_CKPT}/qwen"}}}
    monkeypatch.delenv("GB_TEST_CKPT", raising=False)
    with pytest.raises(ConfigError, match=r"method 'llm'.*'backbone_config.checkpoint'.*GB_TEST_CKPT"):
        expand(_matrix(tmp_path, [entry]))
    monkeypatch.setenv("GB_TEST_CKPT", "/models")
    cell = expand(_matrix(tmp_path, [entry]))[0]
    assert cell.resolved["config"]["backbone_config"]["checkpoint"] == "/models/qwen"
    monkeypatch.delenv("GB_TEST_CKPT")
    assert expand(_matrix(tmp_path, [SMALL_SASREC]))


def test_only_restricts_a_method_to_some_datasets(tmp_path):
    entry = write_toy_recbole(tmp_path / "data")
    cold = {**entry, "name": "toy-cold", "split": "ratio", "k_core": 0}
    m = parse_matrix({"name": "t", "datasets": [entry, cold], "seeds": [0],
                      "methods": ["mostpop", {**SMALL_SASREC, "only": ["toy-cold"]}]}, "test.yaml")
    cells = {(c.dataset.name, c.method.label) for c in expand(m)}
    assert cells == {("toy", "mostpop"), ("toy-cold", "mostpop"), ("toy-cold", "sasrec")}
    # a dataset named on the command line (not in the matrix) runs every selected method
    from benchmarks.matrix import select
    picked = select(m, datasets=["ml-100k"], methods=["sasrec"])
    assert picked.methods[0].only == ["toy-cold", "ml-100k"]
    with pytest.raises(ConfigError, match=r"methods\[0\].only: expected a list of this matrix's dataset names"):
        parse_matrix({"datasets": [entry], "methods": [{"name": "mf", "only": ["nope"]}]}, "m.yaml")


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_builtin_preset_expands(preset, monkeypatch):
    """Each preset parses and every method config in it validates against its Config class (a
    renamed field or a typo in a preset fails here, not an hour into a run)."""
    monkeypatch.setenv("GENREC_LLM_CHECKPOINT", "/models/some-llm")
    matrix = load_matrix(preset=preset)
    cells = expand(matrix)
    assert cells and {c.method.label for c in cells} == {m.label for m in matrix.methods}


def test_methods_filter_selects_labels_then_names(tmp_path):
    """--methods mf on a matrix with entries labelled mf and mf-d8 (both name: mf) ran only
    mf-d8: the by-name lookup overwrote the label. A label selects its entry; a method name
    that is no label selects every entry of that method; another name runs with defaults."""
    from benchmarks.matrix import select
    entry = write_toy_recbole(tmp_path / "data")
    m = parse_matrix({"name": "t", "datasets": [entry], "methods": [
        "mostpop", "mf", {"name": "mf", "label": "mf-d8", "config": {"dim": 8}},
        {"name": "sasrec", "label": "sasrec-a"}, {"name": "sasrec", "label": "sasrec-b"}]}, "m.yaml")
    assert [e.label for e in select(m, methods=["mf"]).methods] == ["mf"]
    assert [e.label for e in select(m, methods=["mf-d8"]).methods] == ["mf-d8"]
    assert [e.label for e in select(m, methods=["mf-d8", "mf"]).methods] == ["mf-d8", "mf"]
    assert [e.label for e in select(m, methods=["sasrec"]).methods] == ["sasrec-a", "sasrec-b"]
    assert [e.label for e in select(m, methods=["sasrec", "sasrec-b"]).methods] == ["sasrec-a", "sasrec-b"]
    picked = select(m, methods=["bert4rec"]).methods
    assert [(e.name, e.label, e.config) for e in picked] == [("bert4rec", "bert4rec", {})]
    assert {c.method.label: c.resolved["config"]["dim"] for c in expand(select(m, methods=["mf", "mf-d8"]))} \
        == {"mf": 64, "mf-d8": 8}


def _broken_copy(tmp_path, name, line=6):
    """The toy data as RecBole files with line ``line`` of the .inter file malformed."""
    entry = write_toy_recbole(tmp_path / name)
    inter = Path(entry["path"]) / "toy.inter"
    lines = inter.read_text().splitlines()
    lines[line - 1] = "u1\tonly-two-fields"
    inter.write_text("\n".join(lines) + "\n")
    return {**entry, "name": name}, inter


def test_a_bad_dataset_fails_its_own_cells_while_the_others_run(tmp_path, monkeypatch, capsys):
    """One data error stopped the whole matrix (without --fail-fast): now the bad dataset's
    cells fail (recorded, reported at the end, exit status 1), read once, and the rest run."""
    from benchmarks.cli import main
    from benchmarks.data import catalog
    good = write_toy_recbole(tmp_path / "data")
    bad, inter = _broken_copy(tmp_path, "bad")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "e.inter").write_text("user_id:token\titem_id:token\n")
    empty = {"name": "empty", "format": "recbole", "path": str(empty_dir)}
    reads = []
    real_read = catalog._read
    monkeypatch.setattr(catalog, "_read", lambda spec, args: reads.append(spec.name) or real_read(spec, args))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "t", "datasets": [bad, good, empty], "seeds": [0, 1],
                                      "methods": ["mostpop", SMALL_SASREC]}))
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--output", str(out), "--quiet"]) == 1
    assert sorted(reads) == ["bad", "empty", "toy"]
    failures = json.loads((out / "failures.json").read_text())
    assert sorted(f["cell"].split("/")[1] for f in failures) == ["bad"] * 4 + ["empty"] * 4
    bad_errors = {f["error"] for f in failures if f["cell"].startswith("cells/bad/")}
    assert bad_errors == {f"DataFormatError: {inter}:6: expected 3 tab-separated fields "
                          "(user_id:token item_id:token timestamp:float), got 'u1\\tonly-two-fields'"}
    assert {f["error"] for f in failures if f["cell"].startswith("cells/empty/")} == {
        f"EmptyDatasetError: dataset 'empty': no interaction read from recbole: {empty_dir / 'e.inter'}"}
    assert set(pd.read_csv(out / "results.csv")["dataset"]) == {"toy"}
    captured = capsys.readouterr()
    assert captured.err.count("FAILED cells/bad/") == 4 and captured.err.count("FAILED cells/empty/") == 4
    assert "12 cells: 4 ran, 0 already done, 8 failed" in captured.out
    # the data fixed: the failed cells run, the finished ones are kept, the failure list goes
    write_toy_recbole(tmp_path / "bad")
    (empty_dir / "e.inter").unlink()
    write_toy_recbole(empty_dir)
    (empty_dir / "toy.inter").rename(empty_dir / "e.inter")
    summary = run_matrix(load_matrix(matrix), out, progress=False)
    assert summary["skipped"] == 4 and summary["ran"] == 8 and not summary["failed"]
    assert not (out / "failures.json").exists()


def test_fail_fast_stops_at_the_bad_dataset(tmp_path):
    bad, inter = _broken_copy(tmp_path, "bad")
    m = parse_matrix({"name": "t", "datasets": [bad, write_toy_recbole(tmp_path / "data")],
                      "methods": ["mostpop"]}, "m.yaml")
    with pytest.raises(DataFormatError, match=r"toy\.inter:6: expected 3 tab-separated"):
        run_matrix(m, tmp_path / "run", progress=False, fail_fast=True)


def test_a_failed_command_leaves_the_run_folder_alone(tmp_path):
    """A bad config against an existing run folder rewrote its matrix.yaml before the config
    was checked; against a new folder it left an empty one behind."""
    entry = write_toy_recbole(tmp_path / "data")
    out = tmp_path / "run"
    run_matrix(parse_matrix({"name": "t", "datasets": [entry], "methods": ["mostpop"]}, "m.yaml"), out,
               progress=False)
    before = (out / "matrix.yaml").read_bytes()
    bad = parse_matrix({"name": "t2", "datasets": [entry],
                        "methods": ["mostpop", {"name": "mf", "config": {"epochs": "three"}}]}, "m2.yaml")
    with pytest.raises(ConfigError, match="field 'epochs'"):
        run_matrix(bad, out, progress=False)
    assert (out / "matrix.yaml").read_bytes() == before
    with pytest.raises(ConfigError, match="field 'epochs'"):
        run_matrix(bad, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_a_method_entry_sets_its_own_evaluation_batch_size(tmp_path):
    """``evaluation: {batch_size: N}`` on a method entry: its cells rank N users per call (the
    evaluator's batches, recorded in throughput.json), the others keep the matrix's."""
    from benchmarks.rundir import RunDir
    entry = write_toy_recbole(tmp_path / "data")
    m = parse_matrix({"name": "t", "datasets": [entry], "seeds": [0], "evaluation": {"batch_size": 64},
                      "methods": ["mostpop", {"name": "mostpop", "label": "mp-7", "evaluation": {"batch_size": 7}}]},
                     "m.yaml")
    by = {c.method.label: c for c in expand(m)}
    assert by["mp-7"].resolved["evaluation"]["batch_size"] == 7
    assert by["mostpop"].resolved["evaluation"]["batch_size"] == 64 and by["mp-7"].hash != by["mostpop"].hash
    run_matrix(m, tmp_path / "run", progress=False)
    cells = {c.config()["label"]: c for c in RunDir(tmp_path / "run").finished()}
    assert cells["mp-7"].throughput()["batch_size"] == 7 and cells["mostpop"].throughput()["batch_size"] == 64
    with pytest.raises(ConfigError, match=r"methods\[0\]\.evaluation: unknown key\(s\) \['ks'\]: a method "
                                          r"entry may set only \['batch_size', 'valid_sample'\]"):
        parse_matrix({"datasets": [entry], "methods": [{"name": "mf", "evaluation": {"ks": [5]}}]}, "m.yaml")
    with pytest.raises(ConfigError, match=r"method 'mf': evaluation: .*batch_size"):
        expand(parse_matrix({"datasets": [entry], "methods": [{"name": "mf", "evaluation": {"batch_size": "x"}}]},
                            "m.yaml"))


def test_a_method_entry_sets_its_own_early_stopping_sample(tmp_path):
    """``evaluation: {valid_sample: N}`` on a method entry: its early stopping reads N validation
    users (seen in the validation rows under ``valid_rows: sample``), the others every user; the
    test rows of both rank every test user, and the report says who selected on what."""
    from benchmarks.rundir import RunDir
    entry = write_toy_recbole(tmp_path / "data")
    mf = {"dim": 8, "epochs": 2, "patience": 1}
    m = parse_matrix({"name": "t", "datasets": [entry], "seeds": [0], "evaluation": {"valid_rows": "sample"},
                      "methods": ["mostpop", {"name": "mf", "config": mf},
                                  {"name": "mf", "label": "mf-s", "config": mf, "evaluation": {"valid_sample": 7}}]},
                     "m.yaml")
    by = {c.method.label: c for c in expand(m)}
    assert by["mf-s"].resolved["evaluation"]["valid_sample"] == 7
    assert by["mf"].resolved["evaluation"]["valid_sample"] is None and by["mf-s"].hash != by["mf"].hash
    run_matrix(m, tmp_path / "run", progress=False)
    df = RunDir(tmp_path / "run").results()
    users = df[df["subset"] == "all"].groupby(["method", "split"])["n_users"].first()
    assert users[("mf-s", "valid")] == 7 and users[("mf", "valid")] > 7
    assert users[("mf-s", "test")] == users[("mf", "test")] == users[("mostpop", "test")]
    report = write_report(tmp_path / "run")["report.md"].read_text()
    assert ("Early stopping (validation NDCG@10) read: every validation user: mf (toy); "
            "7 sampled validation users: mf-s (toy).") in report
