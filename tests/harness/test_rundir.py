"""The run directory's one owner: every cell file written and read back through CellDir, the
staging folder renamed into place only when complete, results gathered from finished cells."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.errors import ConfigError
from benchmarks.rundir import RESULT_COLUMNS, CellDir, RunDir
from identifiers.base import ItemIdentifiers

ROW = {"dataset": "d", "method": "m", "family": "traditional", "seed": 0, "protocol": "masked", "split": "test",
       "subset": "all", "metric": "ndcg", "k": 10, "value": 0.25, "n_users": 2, "config_hash": "0123e45"}


def test_a_cell_round_trips_through_its_writers_and_readers(tmp_path):
    run = RunDir(tmp_path)
    with run.building(CellDir.relpath("d", "m", 0, "0123e45")) as cell:
        assert cell.path.name.startswith("seed0-0123e45.tmp-") and not cell.complete
        cell.write_config({"seed": 0})
        cell.write_train_log({"epochs": [], "notes": "what ran"})
        cell.write_throughput({"users_per_s": 10.0})
        cell.write_per_user({("test", "all", "users"): np.array([3, 5]), ("test", "all", "ndcg@10"): np.array([0.5, 0.0])})
        cell.write_run({"cold_items": None})
        ids = ItemIdentifiers("s", "codes", [("<a_0>",), ("<a_1>",)], vocab=["<a_0>", "<a_1>"], levels=[["<a_0>", "<a_1>"]])
        cell.write_identifiers(ids, ["i2", "i1"], pd.DataFrame([{"scheme": "s", "level": 0, "metric": "x", "value": 1.0}]))
        cell.write_metrics([ROW])
    done = run.cell("d", "m", 0, "0123e45")
    assert done.complete and run.finished() == [done]
    assert done.config() == {"seed": 0} and done.notes() == "what ran" and done.throughput() == {"users_per_s": 10.0}
    users, values = done.per_user("test", "all", "ndcg@10")
    assert users.tolist() == [3, 5] and values.tolist() == [0.5, 0.0]
    assert done.per_user("test", "cold", "ndcg@10") is None and done.run_info() == {"cold_items": None}
    assert done.identifiers(["i2", "i1"]).tokens == ids.tokens and done.identifier_stats()["scheme"].tolist() == ["s"]
    df = run.collect_results()
    assert list(df.columns) == RESULT_COLUMNS and df["config_hash"].tolist() == ["0123e45"]
    assert run.results().equals(df) and run.cells_of(df) == {("d", "m", 0): done}


def test_a_cell_is_in_place_only_when_complete(tmp_path):
    run = RunDir(tmp_path)
    rel = CellDir.relpath("d", "m", 0, "h")
    with pytest.raises(RuntimeError):
        with run.building(rel) as cell:
            cell.write_config({})
            raise RuntimeError("killed in fit")
    with run.building(rel) as cell:     # no metrics written: not a finished cell
        cell.write_config({})
    assert not (tmp_path / "cells" / "d" / "m").exists() or not any((tmp_path / "cells" / "d" / "m").iterdir())
    stale = tmp_path / "cells" / "d" / "m" / "seed0-h.tmp-1"
    stale.mkdir(parents=True)
    run.clean_stale()
    assert not stale.exists() and not run.complete(rel) and run.collect_results().empty


def test_failures_are_this_runs_only(tmp_path):
    run = RunDir(tmp_path)
    run.write_failures([{"cell": "cells/d/m/seed0-h", "error": "ValueError: x"}])
    assert run.failures()[0]["error"] == "ValueError: x"
    run.write_failures([])
    assert run.failures() == [] and not (tmp_path / "failures.json").exists()


def _finished_cell(run, method, protocol, value, h="h1"):
    with run.building(CellDir.relpath("d", method, 0, h)) as cell:
        cell.write_config({"seed": 0})
        cell.write_metrics([{**ROW, "method": method, "protocol": protocol, "value": value, "config_hash": h}])
    run.write_matrix({"name": run.root.name, "methods": [{"name": method}]})


def test_cells_of_several_runs_gather_into_one_report_folder(tmp_path):
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    _finished_cell(a, "mf", "masked", 0.25)
    _finished_cell(b, "hgn", "unmasked", 0.5)
    out = RunDir(tmp_path / "out")
    copied = out.adopt_cells([a, b])
    assert [p.relative_to(out.root).as_posix() for p in copied] == ["cells/d/mf/seed0-h1", "cells/d/hgn/seed0-h1"]
    df = out.collect_results()
    assert sorted(zip(df["method"], df["protocol"], df["value"])) == [("hgn", "unmasked", 0.5), ("mf", "masked", 0.25)]
    assert out.method_order() == ["mf", "hgn"]
    assert out.adopt_cells([a]) == []          # already there: kept, not copied again
    assert a.cell("d", "mf", 0, "h1").complete  # the source is left as it was


def test_gathering_two_different_cells_under_one_path_is_refused(tmp_path):
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    _finished_cell(a, "mf", "masked", 0.25)
    _finished_cell(b, "mf", "masked", 0.75)
    with pytest.raises(ConfigError, match="same cell as .* with different metrics"):
        RunDir(tmp_path / "out").adopt_cells([a, b])
    with pytest.raises(ConfigError, match="no finished cells"):
        RunDir(tmp_path / "out2").adopt_cells([RunDir(tmp_path / "empty")])


def test_gathered_cells_no_matrix_lists_still_order_the_report(tmp_path):
    """A run resumed with --methods keeps only its selection in matrix.yaml; the other cells'
    labels come from their configs."""
    a = RunDir(tmp_path / "a")
    for label in ("mf", "hgn"):
        with a.building(CellDir.relpath("d", label, 0, "h")) as cell:
            cell.write_config({"seed": 0, "method": label, "label": label})
            cell.write_metrics([{**ROW, "method": label, "config_hash": "h"}])
    a.write_matrix({"name": "a", "methods": [{"name": "hgn"}]})
    out = RunDir(tmp_path / "out")
    out.adopt_cells([a])
    assert out.method_order() == ["hgn", "mf"]


def test_a_resumed_selection_keeps_the_other_methods_in_matrix_yaml(tmp_path):
    """`run ... --methods hgn` into a folder that holds mf's cells listed only hgn afterwards,
    so the report lost mf's row order; the other entries are kept, a re-run entry replaced."""
    run = RunDir(tmp_path)
    run.write_matrix({"name": "m", "methods": [{"name": "mf", "config": {"dim": 8}}, {"name": "sasrec"}]}, keep_methods=True)
    run.write_matrix({"name": "m", "methods": [{"name": "hgn"}, {"name": "mf", "config": {"dim": 16}}]}, keep_methods=True)
    assert run.method_order() == ["mf", "sasrec", "hgn"]
    import yaml
    assert yaml.safe_load((tmp_path / "matrix.yaml").read_text())["methods"][0]["config"] == {"dim": 16}
    run.write_matrix({"name": "m", "methods": [{"name": "hgn"}]})      # without keep_methods: as given
    assert run.method_order() == ["hgn"]
