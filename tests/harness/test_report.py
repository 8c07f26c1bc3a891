"""The report: significance marks, warm/cold table, code usage, figures."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.data.toy import write_toy_recbole
from benchmarks.matrix import parse_matrix
from benchmarks.report import paired_pvalue, run_notes, significance_marks, summary_table, write_report
from benchmarks.rundir import RESULT_COLUMNS, RunDir
from benchmarks.runner import run_matrix


def _fake_run(tmp_path, values: dict[str, list[np.ndarray]]):
    """results.csv + per-user arrays for methods with given per-user NDCG@10 per seed."""
    rows = []
    for m, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            h = f"h{m}{seed}"
            cell = RunDir(tmp_path).cell("d", m, seed, h)
            cell.write_per_user({("test", "all", "users"): np.arange(len(v)), ("test", "all", "ndcg@10"): v})
            rows.append({"dataset": "d", "method": m, "family": "traditional", "seed": seed, "split": "test",
                         "subset": "all", "metric": "ndcg", "k": 10, "value": float(v.mean()),
                         "n_users": len(v), "config_hash": h})
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df.to_csv(tmp_path / "results.csv", index=False)
    return df


def test_paired_test_marks_only_a_real_difference(tmp_path):
    rng = np.random.default_rng(0)
    base = [rng.random(200) for _ in range(2)]
    df = _fake_run(tmp_path / "a", {"good": [b + 0.05 + rng.normal(0, 0.01, 200) for b in base], "bad": base})
    cells = RunDir(tmp_path / "a").cells_of(df)
    assert paired_pvalue(cells, "d", "good", "bad", "ndcg", 10) < 1e-6
    marks, _ = significance_marks(cells, summary_table(df), [("ndcg", 10, "N@10")])
    assert marks == {("traditional", "good", "d", "ndcg", 10): "†"}
    noise = [b + rng.normal(0, 0.3, 200) for b in base]
    df = _fake_run(tmp_path / "b", {"x": noise, "y": base})
    cells = RunDir(tmp_path / "b").cells_of(df)
    assert paired_pvalue(cells, "d", "x", "y", "ndcg", 10) > 0.05


@pytest.mark.slow
def test_report_sections_and_figures(tmp_path):
    entry = {**write_toy_recbole(tmp_path / "data", n_late=3), "split": "ratio", "k_core": 0}
    m = parse_matrix({"name": "rep", "datasets": [entry], "seeds": [0],
                      "evaluation": {"ks": [5, 10], "popularity_groups": 2},
                      "methods": ["mostpop", {"name": "sasrec", "config": {"epochs": 2, "hidden": 16, "inner": 32, "n_layers": 1}},
                                  {"name": "p5-cid", "config": {"epochs": 1, "beams": 10, "identifier_config": {"n_clusters": 3, "max_leaf": 8},
                                                                 "backbone_config": {"d_model": 16, "n_layers": 1, "n_heads": 2, "d_kv": 8, "d_ff": 32}}}]},
                     "rep.yaml")
    out = tmp_path / "run"
    assert not run_matrix(m, out, progress=False)["failed"]
    write_report(out)
    text = (out / "report.md").read_text()
    for section in ("Warm and cold items", "Popularity groups", "Code usage", "Throughput", "Validation split"):
        assert section in text, section
    for fig in ("ndcg_vs_throughput", "popularity_toy", "code_frequency_toy"):
        assert (out / "figures" / f"{fig}.png").is_file() and (out / "figures" / f"{fig}.pdf").is_file(), fig


def test_run_notes_come_from_the_fit_logs(tmp_path):
    """What a method says it ran (SETRec's variant without item text) is in the report, read
    from the fit log's one `notes` key whatever the method."""
    rng = np.random.default_rng(0)
    df = _fake_run(tmp_path, {"setrec-t5": [rng.random(20)], "mostpop": [rng.random(20)]})
    cells = RunDir(tmp_path).cells_of(df)
    cells[("d", "setrec-t5", 0)].write_train_log({"notes": "CF-token-only variant: no item text",
                                                  "setrec": {"variant": {"n_cf": 1, "n_sem": 0}}})
    cells[("d", "mostpop", 0)].write_train_log({"epochs": []})
    assert run_notes(cells) == ["- setrec-t5 on d: CF-token-only variant: no item text"]
    write_report(tmp_path)
    assert "CF-token-only variant" in (tmp_path / "report.md").read_text()
    # a run that a time cap stopped (not early stopping) is flagged; early stopping is not
    cells[("d", "mostpop", 0)].write_train_log({"epochs": [{}] * 7, "best_epoch": 6, "stopped": "time cap (105 min)"})
    assert run_notes(cells)[0] == ("- mostpop on d (seed 0): stopped by the time cap (105 min) after 7 epochs, "
                                       "best validation at epoch 6: possibly under-trained")
    cells[("d", "mostpop", 0)].write_train_log({"epochs": [{}] * 7, "best_epoch": 2,
                                                "stopped": "early stopping (patience 5)"})
    assert len(run_notes(cells)) == 1
    # a fit log's `notes` sentence (what the method ran, e.g. HSTU's loss) is shown as it is
    cells[("d", "mostpop", 0)].write_train_log({"epochs": [], "notes": "HSTU trained with full softmax over all 30 items."})
    assert "- mostpop on d: HSTU trained with full softmax over all 30 items." in run_notes(cells)


@pytest.mark.parametrize("h", ["812108563e58", "004512", "1e10"])
def test_a_numeric_looking_config_hash_still_names_its_cell(tmp_path, h):
    """Hashes are hex: some read as numbers ('812108563e58' -> 8.12e+58). The results tables are
    read with their text columns as text, so the cell is still found after the round trip."""
    run = RunDir(tmp_path)
    cell = run.cell("d", "m", 0, h)
    cell.write_metrics([{"dataset": "d", "method": "m", "family": "traditional", "seed": 0, "split": "test",
                         "subset": "all", "metric": "ndcg", "k": 10, "value": 0.5, "n_users": 3, "config_hash": h}])
    run.collect_results()
    df = run.results()
    assert df["config_hash"].tolist() == [h]
    assert run.cells_of(df) == {("d", "m", 0): cell}


def test_environment_section_lists_versions_threads_data_and_seed_spread(tmp_path):
    from benchmarks.report import environment_section
    rng = np.random.default_rng(0)
    df = _fake_run(tmp_path, {"a": [np.full(10, 0.1), np.full(10, 0.3)], "b": [rng.random(10)]})
    cells = RunDir(tmp_path).cells_of(df)
    for (d, m, seed), cell in cells.items():
        cell.write_run({
            "versions": {"python": "3.11.7", "torch": "2.13.0+cpu" if m == "a" else "2.5.0", "numpy": "2.4.6"},
            "device": "cpu (x86_64, 2 cores, 2 torch threads)", "deterministic_kernels": True,
            "git_commit": "abc", "dataset": {"info": {"source": "PyPI wheel recbole==1.2.1"}}})
    text = environment_section(cells, df)
    assert "python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6 (2 cells); python 3.11.7, torch 2.5.0, numpy 2.4.6 (1 cell)" in text
    assert "- Device: cpu (x86_64, 2 cores, 2 torch threads), deterministic kernels on\n" in text
    assert "- Data: d from PyPI wheel recbole==1.2.1\n" in text
    # a's two seeds are 0.1 and 0.3 apart by 0.2 (std 0.1414); b has one seed
    assert "| a | 0.2000 (0.1414) |" in text and "| b | – |" in text
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert report.count("## Environment and reproducibility") == 1
    one = df[df["seed"] == 0]
    assert "one seed, so how far the seeds move each row is not measured" in environment_section(cells, one)
    # two protocols: a row per (method, protocol), not one spread over both
    two = pd.concat([df.assign(protocol="masked"), df.assign(protocol="unmasked", value=df["value"] + 0.5)])
    text = environment_section(cells, two)
    assert "| a (masked) | 0.2000 (0.1414) |" in text and "| a (unmasked) | 0.2000 (0.1414) |" in text
    assert environment_section({}, df) == ""
