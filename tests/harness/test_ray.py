"""The matrix as Ray tasks on a local Ray cluster: same folders, same resume behaviour."""

import pandas as pd
import pytest

from benchmarks.data.toy import write_toy_recbole
from benchmarks.matrix import parse_matrix
from benchmarks.runner import RayExecutor, run_matrix

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_executor_matches_local_layout_and_resumes(tmp_path):
    entry = write_toy_recbole(tmp_path / "data")
    m = parse_matrix({"name": "r", "datasets": [entry], "seeds": [0, 1], "methods": [
        "mostpop", {"name": "mf", "config": {"epochs": 2, "dim": 8}}]}, "r.yaml")
    out = tmp_path / "ray"
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        summary = run_matrix(m, out, executor=RayExecutor(), progress=False)
        assert summary["ran"] == 4 and not summary["failed"]
        again = run_matrix(m, out, executor=RayExecutor(), progress=False)
        assert again["skipped"] == 4 and again["ran"] == 0
    finally:
        ray.shutdown()
    local = tmp_path / "local"
    run_matrix(m, local, progress=False)
    # the same cell folders (keyed by the resolved config) and the same figures for mostpop
    rel = lambda root: sorted(str(p.relative_to(root)) for p in root.glob("cells/*/*/*"))  # noqa: E731
    assert rel(out) == rel(local)
    a = pd.read_csv(out / "results.csv").query("method == 'mostpop' and metric == 'ndcg'")
    b = pd.read_csv(local / "results.csv").query("method == 'mostpop' and metric == 'ndcg'")
    assert sorted(a["value"].round(8)) == sorted(b["value"].round(8))
