"""``--jobs N``: the cells of a matrix on N worker processes (ProcessExecutor), the same cells
and figures as one after another in one process, and each cache entry built once."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.cache import build_lock, lock_path
from benchmarks.data.toy import write_toy_recbole
from benchmarks.errors import ConfigError
from benchmarks.matrix import parse_matrix
from benchmarks.runner import ProcessExecutor, run_matrix
from tests.harness._lock_probe import try_lock

TINY_SASREC = {"name": "sasrec", "config": {"epochs": 2, "hidden": 16, "inner": 32, "n_layers": 1}}


def _cells(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("cells/*/*/*"))


def test_jobs_give_the_cells_and_figures_of_a_local_run(tmp_path):
    """The same cell folders and bit-equal figures as a local run; a failing cell (here: an
    empty dataset) is recorded with the worker's traceback while the others run; a second
    run resumes (nothing left to do)."""
    good = write_toy_recbole(tmp_path / "data")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "e.inter").write_text("user_id:token\titem_id:token\n")
    m = parse_matrix({"name": "j", "datasets": [good, {"name": "empty", "format": "recbole", "path": str(empty_dir)}],
                      "seeds": [0, 1], "methods": ["mostpop", {"name": "mf", "config": {"epochs": 2, "dim": 8}},
                                                   TINY_SASREC]}, "j.yaml")
    local = tmp_path / "local"
    run_matrix(m, local, progress=False)                      # one torch thread (the suite's fixture)
    jobs = tmp_path / "jobs"
    summary = run_matrix(m, jobs, executor=ProcessExecutor(2, threads=1), progress=False)
    assert summary["ran"] == 6 and len(summary["failed"]) == 6
    assert _cells(jobs) == _cells(local)
    cols = ["dataset", "method", "seed", "split", "subset", "metric", "k"]
    timing = ["users_per_s", "ms_per_user"]                   # wall-clock figures differ, the rest may not

    def read(root: Path) -> pd.DataFrame:
        df = pd.read_csv(root / "results.csv")
        return df[~df["metric"].isin(timing)].sort_values(cols).reset_index(drop=True)

    a, b = read(local), read(jobs)
    assert {"recall", "ndcg"} <= set(a["metric"]) and set(a["dataset"]) == {"toy"}
    pd.testing.assert_frame_equal(a, b)                       # bit for bit: each cell seeded at its start
    failures = json.loads((jobs / "failures.json").read_text())
    assert sorted(f["cell"].split("/")[1] for f in failures) == ["empty"] * 6
    assert all(f["error"].startswith("EmptyDatasetError: dataset 'empty': no interaction read") for f in failures)
    # the worker's traceback (the first of a dataset's cells in a worker reads it and shows
    # where it failed; the others re-raise the error the worker's memo keeps)
    assert all("run_cell" in f["traceback"] and "EmptyDatasetError" in f["traceback"] for f in failures)
    assert any("load_dataset" in f["traceback"] for f in failures)
    again = run_matrix(m, jobs, executor=ProcessExecutor(2, threads=1), progress=False)
    assert again["skipped"] == 6 and again["ran"] == 0 and len(again["failed"]) == 6


def test_build_lock_excludes_another_process(tmp_path):
    pytest.importorskip("fcntl")
    target = tmp_path / "entry"
    ctx = multiprocessing.get_context("spawn")
    lock_file = str(lock_path(target))
    with build_lock(target):
        assert Path(lock_file).is_file() and not list(tmp_path.iterdir())   # nothing in the cache
        q = ctx.Queue()
        p = ctx.Process(target=try_lock, args=(lock_file, q))
        p.start()
        p.join(60)
        assert q.get(timeout=5) == "held"
    q = ctx.Queue()
    p = ctx.Process(target=try_lock, args=(lock_file, q))
    p.start()
    p.join(60)
    assert q.get(timeout=5) == "free"


def test_jobs_arguments_are_checked(tmp_path):
    from benchmarks.cli import main
    with pytest.raises(ConfigError, match="--jobs: expected a positive number"):
        ProcessExecutor(0)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "t", "datasets": [write_toy_recbole(tmp_path / "data")],
                                      "methods": ["mostpop"]}))
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--output", str(out), "--quiet", "--jobs", "0"]) != 0
    assert not out.exists()
    assert main(["run", str(matrix), "--output", str(out), "--quiet", "--jobs", "2",
                 "--executor", "ray"]) != 0
    assert not out.exists()
