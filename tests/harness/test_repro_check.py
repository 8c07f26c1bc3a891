"""``python -m benchmarks.repro_check``: the comparison at 4 decimals, and real fresh runs."""

import pandas as pd
import pytest
import yaml

from benchmarks.data.toy import write_toy_recbole
from benchmarks.repro_check import compare, main
from benchmarks.rundir import RESULT_COLUMNS


def _table(values: dict[tuple[str, int], float], protocol: str = "masked") -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "d", "method": m, "family": "traditional", "seed": s,
                          "protocol": protocol, "split": "test",
                          "subset": "all", "metric": "ndcg", "k": 10, "value": v, "n_users": 5,
                          "config_hash": "h"} for (m, s), v in values.items()], columns=RESULT_COLUMNS)


def test_compare_at_four_decimals_and_only_the_cells_that_ran():
    ref = _table({("a", 0): 0.12344, ("b", 0): 0.5, ("c", 0): 0.25})
    new = _table({("a", 0): 0.12341, ("b", 0): 0.50006})          # c not run (filtered)
    diff = compare(ref, new)
    assert diff["method"].tolist() == ["b"]                        # 0.1234 = 0.1234; 0.5000 != 0.5001
    assert diff["reference"].iloc[0] == 0.5 and diff["new"].iloc[0] == 0.50006
    assert abs(diff["abs_diff"].iloc[0] - 6e-5) < 1e-12
    full = compare(ref, new, restrict=False)                       # c is then missing from the new run
    assert sorted(full["method"]) == ["b", "c"] and pd.isna(full.set_index("method").loc["c", "new"])
    assert compare(ref, new, digits=3).empty


def test_rows_are_matched_on_the_protocol_unless_a_table_does_not_record_it():
    from benchmarks.rundir import UNRECORDED_PROTOCOL

    ref = _table({("a", 0): 0.1}, protocol="masked")
    other = _table({("a", 0): 0.1}, protocol="unmasked")
    assert len(compare(ref, other)) == 2                           # each side's row missing on the other
    old = _table({("a", 0): 0.1}, protocol=UNRECORDED_PROTOCOL)
    assert compare(old, other).empty


@pytest.mark.slow
def test_a_fresh_run_matches_its_reference_but_for_the_changed_value(tmp_path, capsys):
    from benchmarks.matrix import parse_matrix
    from benchmarks.runner import run_matrix

    entry = {**write_toy_recbole(tmp_path / "data"), "split": "loo", "k_core": 0}
    spec = {"name": "m", "datasets": [entry], "seeds": [0], "evaluation": {"ks": [10]}, "methods": ["mostpop"]}
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    run_matrix(parse_matrix(spec, "m.yaml"), tmp_path / "ref", progress=False)   # the reference, in-process
    ref = pd.read_csv(tmp_path / "ref" / "results.csv")
    row = (ref["metric"] == "ndcg") & (ref["k"] == 10) & (ref["split"] == "test") & (ref["subset"] == "all")
    ref.loc[row, "value"] += 0.001                                 # one value changed in the 3rd decimal
    ref.to_csv(tmp_path / "ref" / "results.csv", index=False)
    # one fresh process with an empty cache (a subprocess costs seconds: one run, not two)
    code = main([str(matrix), "--against", str(tmp_path / "ref"), "--workdir", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert code == 1
    assert "run 1 vs" in out and "1 of" in out and "values differ at 4 decimals" in out
    assert "toy/mostpop 0.001" in out


def test_cells_with_another_config_hash_are_named():
    from benchmarks.repro_check import changed_configs

    ref = _table({("a", 0): 0.1, ("b", 0): 0.2})
    new = _table({("a", 0): 0.1, ("b", 0): 0.2})
    new.loc[new["method"] == "b", "config_hash"] = "other"
    assert changed_configs(ref, new) == ["d/b/seed0"]


def test_jobs_reach_the_fresh_run_command(tmp_path, monkeypatch):
    """``--jobs N`` is passed on to ``benchmarks.cli run`` (a worker uses one torch thread, so a
    reference made with --jobs 2 comes back only from --jobs 2)."""
    import benchmarks.repro_check as rc

    ref = tmp_path / "ref"
    ref.mkdir()
    _table({("a", 0): 0.1}).to_csv(ref / "results.csv", index=False)
    seen = []

    def fake_run_once(index, workdir, cli_args, threads):
        seen.append(cli_args)
        return ref, 0.0

    monkeypatch.setattr(rc, "run_once", fake_run_once)
    assert main(["--preset", "quick", "--jobs", "2", "--against", str(ref), "--workdir", str(tmp_path / "w")]) == 0
    assert seen == [["--preset", "quick", "--jobs", "2"]]
