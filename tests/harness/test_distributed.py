"""Data-parallel training under `accelerate launch` with two CPU processes (gloo)."""

import json
import os
import shutil
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
