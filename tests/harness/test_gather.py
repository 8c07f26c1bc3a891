"""One queryable table across runs: results.parquet beside results.csv, `gather` joining run
folders with their matrix names, commits and protocols, `compare`'s method x dataset table."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from benchmarks.cli import main
from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.gather import GATHERED_TYPES, compare_frame, compare_table, gather, load, write_gathered
from benchmarks.matrix import parse_matrix
from benchmarks.rundir import (RESULT_COLUMNS, RESULT_TYPES, CellDir, RunDir, read_results_csv,
                               read_results_parquet, write_results_parquet)
from benchmarks.runner import run_matrix


def _row(dataset, method, seed, value, *, metric="ndcg", k=10, split="test", protocol="masked", h="h0"):
    return {"dataset": dataset, "method": method, "family": "traditional", "seed": seed, "protocol": protocol,
            "split": split, "subset": "all", "metric": metric, "k": k, "value": value, "n_users": 4,
            "config_hash": h}


def _run(root, name, rows, commit=None):
    """A run folder built through RunDir: one cell per (dataset, method, seed) of ``rows``."""
    run = RunDir(root)
    root.mkdir(parents=True, exist_ok=True)
    run.write_matrix({"name": name, "methods": []})
    cells = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["method"], r["seed"], r["config_hash"]), []).append(r)
    for (d, m, s, h), cell_rows in cells.items():
        with run.building(CellDir.relpath(d, m, s, h)) as cell:
            if commit:
                cell.write_run({"git_commit": commit})
            cell.write_metrics(cell_rows)
    run.collect_results()
    return root


def test_collect_results_writes_parquet_with_the_csv_schema(tmp_path):
    root = _run(tmp_path / "r", "m", [_row("d", "a", 0, 0.5, h="812108563e58"), _row("d", "a", 1, 0.25, h="0123")])
    table = pq.read_table(root / "results.parquet")
    assert table.schema.names == RESULT_COLUMNS
    assert [str(t) for t in table.schema.types] == [
        {"string": "string", "int64": "int64", "float64": "double"}[RESULT_TYPES[c]] for c in RESULT_COLUMNS]
    from_csv = read_results_csv(root / "results.csv")
    from_parquet = read_results_parquet(root / "results.parquet")
    assert from_parquet["config_hash"].tolist() == ["812108563e58", "0123"]   # text, never a number
    pd.testing.assert_frame_equal(from_parquet.astype(str), from_csv.astype(str))


def test_a_wrong_type_or_missing_column_is_one_error_naming_it(tmp_path):
    df = pd.DataFrame([_row("d", "a", 0, 0.5)])
    with pytest.raises(ConfigError, match=r"bad\.parquet: column 'value' is not all float64"):
        write_results_parquet(df.assign(value="high"), tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) \['n_users'\]"):
        write_results_parquet(df.drop(columns="n_users"), tmp_path / "bad.parquet")
    pq.write_table(pa.Table.from_pandas(df.assign(k=df["k"].astype(float))), tmp_path / "k.parquet")
    with pytest.raises(ConfigError, match=r"k\.parquet: column 'k' is double, expected int64"):
        read_results_parquet(tmp_path / "k.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="junk.parquet: not a readable Parquet file"):
        read_results_parquet(tmp_path / "junk.parquet")


def test_a_real_run_gathers_with_its_matrix_commit_and_protocol(tmp_path):
    entry = write_toy_recbole(tmp_path / "data")
    matrix = parse_matrix({"name": "toy-matrix", "datasets": [entry], "seeds": [0, 1],
                           "evaluation": {"ks": [10]}, "methods": ["mostpop"]}, "t.yaml")
    out = tmp_path / "run"
    run_matrix(matrix, out, progress=False)
    assert (out / "results.parquet").is_file()
    df = gather([out])
    assert list(df.columns) == list(GATHERED_TYPES)
    commits = {json.loads(p.read_text())["git_commit"] for p in out.glob("cells/*/*/*/run.json")}
    assert set(df["matrix"]) == {"toy-matrix"} and set(df["run"]) == {str(out)}
    assert set(df["commit"]) == {c or "unrecorded" for c in commits}
    assert set(df["protocol"]) == set(pd.read_csv(out / "results.csv")["protocol"])
    frame = compare_frame(df)
    ndcg = df.query("metric == 'ndcg' and k == 10 and split == 'test' and subset == 'all'")["value"]
    assert frame["seeds"].tolist() == [2] and frame["mean"].iloc[0] == pytest.approx(ndcg.mean())


def test_gather_joins_runs_and_compare_lays_out_method_by_dataset(tmp_path):
    a = _run(tmp_path / "quick", "quick", [_row("ml", "sasrec", 0, 0.2), _row("ml", "sasrec", 1, 0.4),
                                             _row("ml", "mf", 0, 0.1), _row("ml", "mf", 0, 0.9, k=5)], commit="abc")
    b = _run(tmp_path / "fid", "fidelity", [_row("beauty", "sasrec", 0, 0.3, protocol="unmasked")])
    old = tmp_path / "old"          # a committed report: results.csv from before protocols, no cells
    old.mkdir()
    pd.DataFrame([_row("ml", "mf", 0, 0.05)]).drop(columns="protocol").to_csv(old / "results.csv", index=False)
    df = gather([a, b, old])
    assert len(df) == 6 and set(df["matrix"]) == {"quick", "fidelity", "unrecorded"}
    assert df.loc[df["run"] == str(a), "commit"].unique().tolist() == ["abc"]
    assert df.loc[df["run"] == str(old), ["commit", "protocol"]].values.tolist() == [["unrecorded", "unrecorded"]]
    path = write_gathered(df, tmp_path / "out" / "all.parquet")
    back = load([path])
    pd.testing.assert_frame_equal(back.astype(str), df.astype(str))

    table = compare_table(load([path, a]), digits=2)   # a run read twice counts once
    assert list(table.columns) == ["run", "protocol", "method", "ml", "beauty"]
    rows = {tuple(r[:3]): r[3:] for r in table.values.tolist()}
    assert rows[("quick", "masked", "sasrec")] == ["0.30 ± 0.14", ""]
    assert rows[("quick", "masked", "mf")] == ["0.10", ""]            # k=5 row not mixed in
    assert rows[("fidelity", "unmasked", "sasrec")] == ["", "0.30"]
    assert rows[("unrecorded", "unrecorded", "mf")] == ["0.05", ""]
    with pytest.raises(ConfigError, match=r"no rows with metric=hit.*ndcg@10"):
        compare_frame(df, metric="hit")


def test_runs_sharing_a_matrix_name_are_told_apart_by_folder(tmp_path):
    a = _run(tmp_path / "a", "quick", [_row("ml", "mf", 0, 0.1)])
    b = _run(tmp_path / "b", "quick", [_row("ml", "mf", 0, 0.2)])
    table = compare_table(gather([a, b]))
    assert table["run"].tolist() == [f"quick ({a})", f"quick ({b})"] and table["ml"].tolist() == ["0.1000", "0.2000"]


def test_cli_gather_and_compare(tmp_path, capsys):
    a = _run(tmp_path / "quick", "quick", [_row("ml", "mf", 0, 0.125)], commit="c0ffee")
    assert main(["gather", str(a), "--output", str(tmp_path / "all.parquet")]) == 0
    assert "1 rows from 1 run folder(s)" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "all.parquet"), "--metric", "ndcg", "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "| quick | masked     | mf       | 0.1250 |" in out and "commit c0ffee" in out
    assert main(["gather", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.parquet")]) == 2
    assert "nowhere: not a run folder" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2        # a folder without results
    assert "no results.csv" in capsys.readouterr().err
