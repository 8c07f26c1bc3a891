"""``genrec-bench run --dry-run``: every cell built at its real size, a few steps, a few users
ranked, its parameters and memory printed, no run folder written."""

import yaml

from benchmarks.cli import main
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset, write_toy_recbole
from benchmarks.matrix import parse_matrix
from benchmarks.registry import METHODS
from benchmarks.runner import dry_run
from benchmarks.training import state_memory_mb


def _matrix(tmp_path) -> dict:
    tiger = METHODS.get("tiger").smoke_config
    return {"name": "dry", "datasets": [write_toy_recbole(tmp_path / "data")], "seeds": [0],
            "methods": ["mostpop", {"name": "mf", "config": {"batch_size": 16}},
                        {"name": "tiger", "config": {**tiger, "train_last_n": None, "batch_size": 8}}]}


def test_a_dry_run_steps_ranks_and_measures_every_cell(tmp_path):
    rows = dry_run(parse_matrix(_matrix(tmp_path), "m.yaml"), steps=2, users=5, progress=False)
    assert [r["method"] for r in rows] == ["mostpop", "mf", "tiger"] and not any("error" in r for r in rows)
    by = {r["method"]: r for r in rows}
    assert "parameters" not in by["mostpop"] and by["mostpop"]["ranked_users"] == 5
    for name in ("mf", "tiger"):
        r = by[name]
        assert r["steps"] == 2, f"{name} trained {r['steps']} steps, not the dry run's 2"
        assert r["ranked_users"] == 5 and r["parameters"] == r["trainable"] > 0
        assert r["state_mb"] > r["weights_mb"] > 0 and r["peak_rss_mb"] > 0 and r["precision"] == "fp32"


def test_state_memory_counts_weights_gradients_and_adam_moments(tmp_path):
    ds = toy_dataset()
    cls = METHODS.get("mf")
    model = cls(build_config(cls.Config, {"dim": 8}), build_context(ds, needs=frozenset(), progress=False))
    n = sum(p.numel() for p in model.module.parameters())
    mem = state_memory_mb(model.module)
    assert mem["weights_mb"] == round(4 * n / 2 ** 20, 3) and mem["state_mb"] == round(16 * n / 2 ** 20, 3)


def test_state_memory_counts_a_sparse_buffer_by_what_it_stores():
    import torch

    module = torch.nn.Module()
    dense = torch.zeros(1000, 1000)
    dense[0, :10] = 1.0
    module.register_buffer("coo", dense.to_sparse())
    module.register_buffer("csr", dense.to_sparse_csr())
    stored = 10 * 4 + 2 * 10 * 8 + 10 * 4 + (1001 + 10) * 8       # values, indices; values, crow, col
    assert state_memory_mb(module)["weights_mb"] == round(stored / 2 ** 20, 3)


def test_the_cli_dry_run_prints_the_table_and_writes_no_run_folder(tmp_path, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(_matrix(tmp_path)))
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--methods", "mostpop,mf", "--dry-run", "--dry-steps", "1",
                 "--dry-users", "3", "--output", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| dataset | method | seed | parameters | trainable | state MB")
    assert "| toy | mf | 0 |" in text and "| toy | mostpop | 0 |" in text
    assert not out.exists()
    assert main(["run", str(matrix), "--dry-run", "--dry-steps", "0"]) == 2
    assert "--dry-steps: expected an integer >= 1, got 0" in capsys.readouterr().err
