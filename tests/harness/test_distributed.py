"""Data-parallel training under `accelerate launch` with two CPU processes (gloo)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmarks.data.toy import write_toy_recbole

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("accelerate's launcher is not installed")
    entry = write_toy_recbole(tmp_path / "data")
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({"name": "ddp", "datasets": [entry], "seeds": [0], "methods": [
        {"name": "sasrec", "config": {"epochs": 3, "hidden": 16, "inner": 32, "n_layers": 1, "batch_size": 8}}]}))
    out = tmp_path / "out"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "GENREC_BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "benchmarks.cli", "run",
           str(matrix), "--output", str(out), "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    cell = next((out / "cells" / "toy" / "sasrec").iterdir())
    log = json.loads((cell / "train_log.json").read_text())
    assert log["world_size"] == 2
    # 60 toy users -> 60 windows -> 8 batches of 8: each process takes 4 per epoch
    assert [e["steps"] for e in log["epochs"]] == [4, 4, 4]
    df = pd.read_csv(out / "results.csv")
    assert set(df["method"]) == {"sasrec"} and (out / "table.md").is_file()
    assert not list(out.glob("cells/*/*/*.tmp-*"))


def _two_processes(tmp_path) -> list[dict]:
    """Run tests/harness/_ddp_worker.py as rank 0 and rank 1 of a gloo group; their reports."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, outs = [], []
    for rank in range(2):
        out = tmp_path / f"rank{rank}.json"
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "CUDA_VISIBLE_DEVICES": "",
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GENREC_BENCH_CACHE": str(tmp_path / "cache")}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.harness._ddp_worker", str(out)], cwd=ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs.append(out)
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]
    return [json.loads(o.read_text()) for o in outs]


@pytest.mark.slow
def test_two_gloo_processes_train_alike_and_stop_together(tmp_path):
    """LightGCN (sparse adjacency buffers) and a toy model with bf16 and fp32 parameters trained
    by two processes: the parameters agree bit for bit after every optimiser step, each process
    builds only its own batches (disjoint samples, the same count), dropout and sampling differ
    between them, the stop (rank 0's early stopping, rank 0's clock) falls after the same epoch
    everywhere, and a NaN loss on rank 1 alone raises on both."""
    r0, r1 = _two_processes(tmp_path)

    g0, g1 = r0["lightgcn"], r1["lightgcn"]
    assert g0["steps"] == g1["steps"] and len(g0["steps"]) == sum(g0["per_epoch"]) > 0
    assert len(set(g0["steps"])) == len(g0["steps"])                 # they did move
    assert g0["final"] == g1["final"]
    # rank 0's scores 0.1, 0.2, 0.15, 0.1: patience 2 runs out after epoch 4 (rank 1's would not)
    assert g0["epochs"] == g1["epochs"] == 4 and g0["best_epoch"] == g1["best_epoch"] == 2
    assert g0["stopped"] == g1["stopped"] == "early stopping (patience 2)"
    assert g0["rank_seeds"] == g1["rank_seeds"] and len(set(g0["rank_seeds"])) == 2

    # a panel of two protocols: 'a' stops after epoch 4 (best 2), 'b' after 7 (best 5); the one
    # training runs 7 epochs on both processes, and the module ends at 'a''s best state
    p0, p1 = r0["panel"], r1["panel"]
    assert p0["logs"] == p1["logs"]
    (a, b) = p0["logs"]
    assert (a["epochs"], a["best_epoch"], b["epochs"], b["best_epoch"]) == (4, 2, 7, 5)
    assert a["stopped"] == b["stopped"] == "early stopping (patience 2)"
    assert a["valid"] == [0.1, 0.2, 0.15, 0.1] and b["valid"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.45, 0.4]
    assert a["shared"] == b["shared"] and a["shared"]["epochs"] == 7 and a["shared"]["protocols"] == ["a", "b"]
    assert p0["returned_best"] == 2 and p0["final"] == p1["final"]

    m0, m1 = r0["mixed"], r1["mixed"]
    assert m0["steps"] == m1["steps"] and len(m0["steps"]) == 3 * (m0["n_batches"] // 2)
    # rank 1's clock says 10 minutes passed at every look, rank 0's does not: 3 epochs on both
    assert m0["epochs"] == m1["epochs"] == 3 and m0["stopped"] == m1["stopped"] == "max epochs"
    for e0, e1 in zip(m0["built"], m1["built"]):
        assert len(e0) == len(e1) == m0["n_batches"] // 2
        assert not {i for b in e0 for i in b} & {i for b in e1 for i in b}
    assert m0["noise"] != m1["noise"] and m0["masks"] != m1["masks"]
    assert m0["dtypes"] == ["torch.bfloat16", "torch.bfloat16", "torch.float32"]
    assert not m0["unused_grad"] and not m1["unused_grad"]

    for r in (r0, r1):
        assert r["nan"] is not None and "on rank 1" in r["nan"] and "epoch 2, step 2" in r["nan"]
        assert r["nan_epochs_built"] == 2
