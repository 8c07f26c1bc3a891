"""The report: significance marks, warm/cold table, code usage, figures."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.data.toy import write_toy_recbole
from benchmarks.report import paired_pvalue, significance_marks, summary_table, write_report
from benchmarks.runner import RESULT_COLUMNS, parse_matrix, run_matrix


def _fake_run(tmp_path, values: dict[str, list[np.ndarray]]):
    """results.csv + per_user.npz for methods with given per-user NDCG@10 per seed."""
    rows = []
    for m, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            h = f"h{m}{seed}"
            cell = tmp_path / "cells" / "d" / m / f"seed{seed}-{h}"
            cell.mkdir(parents=True)
            np.savez(cell / "per_user.npz", **{"test/all/users": np.arange(len(v)), "test/all/ndcg@10": v})
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
    from benchmarks.report import cell_paths
    cells = cell_paths(tmp_path / "a", df)
    assert paired_pvalue(cells, "d", "good", "bad", "ndcg", 10) < 1e-6
    marks, _ = significance_marks(cells, summary_table(df), [("ndcg", 10, "N@10")])
    assert marks == {("traditional", "good", "d", "ndcg", 10): "†"}
    noise = [b + rng.normal(0, 0.3, 200) for b in base]
    df = _fake_run(tmp_path / "b", {"x": noise, "y": base})
    cells = cell_paths(tmp_path / "b", df)
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


def test_variant_notes_come_from_the_fit_logs(tmp_path):
    """A method that ran a variant (SETRec without item text) says so in the report."""
    import json

    from benchmarks.report import cell_paths, variant_notes
    rng = np.random.default_rng(0)
    df = _fake_run(tmp_path, {"setrec-t5": [rng.random(20)], "mostpop": [rng.random(20)]})
    cells = cell_paths(tmp_path, df)
    (cells[("d", "setrec-t5", 0)] / "train_log.json").write_text(json.dumps(
        {"setrec": {"variant": {"n_cf": 1, "n_sem": 0, "note": "CF-token-only variant: no item text"}}}))
    (cells[("d", "mostpop", 0)] / "train_log.json").write_text(json.dumps({"epochs": []}))
    assert variant_notes(cells) == ["- setrec-t5 on d: CF-token-only variant: no item text"]
    write_report(tmp_path)
    assert "CF-token-only variant" in (tmp_path / "report.md").read_text()
    # a run that a time cap stopped (not early stopping) is flagged; early stopping is not
    (cells[("d", "mostpop", 0)] / "train_log.json").write_text(json.dumps(
        {"epochs": [{}] * 7, "best_epoch": 6, "stopped": "time cap (105 min)"}))
    assert variant_notes(cells)[0] == ("- mostpop on d (seed 0): stopped by the time cap (105 min) after 7 epochs, "
                                       "best validation at epoch 6: possibly under-trained")
    (cells[("d", "mostpop", 0)] / "train_log.json").write_text(json.dumps(
        {"epochs": [{}] * 7, "best_epoch": 2, "stopped": "early stopping (patience 5)"}))
    assert len(variant_notes(cells)) == 1
    # a fit log's `notes` sentence (what the method ran, e.g. HSTU's loss) is shown as it is
    (cells[("d", "mostpop", 0)] / "train_log.json").write_text(json.dumps(
        {"epochs": [], "notes": "HSTU trained with full softmax over all 30 items."}))
    assert "- mostpop on d: HSTU trained with full softmax over all 30 items." in variant_notes(cells)


@pytest.mark.parametrize("h", ["812108563e58", "004512", "1e10"])
def test_a_numeric_looking_config_hash_still_names_its_cell(tmp_path, h):
    """Hashes are hex: some read as numbers ('812108563e58' -> 8.12e+58). The results tables are
    read with their text columns as text, so the cell is still found after the round trip."""
    from benchmarks.report import cell_paths, load_results
    from benchmarks.runner import collect_results

    cell = tmp_path / "cells" / "d" / "m" / f"seed0-{h}"
    cell.mkdir(parents=True)
    pd.DataFrame([{"dataset": "d", "method": "m", "family": "traditional", "seed": 0, "split": "test",
                   "subset": "all", "metric": "ndcg", "k": 10, "value": 0.5, "n_users": 3, "config_hash": h}],
                 columns=RESULT_COLUMNS).to_csv(cell / "metrics.csv", index=False)
    collect_results(tmp_path)
    df = load_results(tmp_path)
    assert df["config_hash"].tolist() == [h]
    assert cell_paths(tmp_path, df) == {("d", "m", 0): cell}
