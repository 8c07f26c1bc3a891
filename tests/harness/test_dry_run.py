"""``genrec-bench run --dry-run``: every cell built at its real size, a few steps, a few users
ranked, its parameters and memory printed, no run folder written; ``--estimate-only``: every
cell's GPU memory estimate without training (modules on the meta device)."""

import pytest
import yaml

from benchmarks.cli import main
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset, write_toy_recbole
from benchmarks.matrix import PRESETS, parse_matrix
from benchmarks.registry import METHODS
from benchmarks.runner import dry_run, estimate
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


def test_the_dry_run_adds_the_gpu_estimate_and_the_projected_time(tmp_path):
    rows = dry_run(parse_matrix(_matrix(tmp_path), "m.yaml"), steps=1, users=4, progress=False)
    by = {r["method"]: r for r in rows}
    for name in ("mf", "tiger"):
        r = by[name]
        assert r["train_bytes"] > r["state_bytes"] > 0 and r["eval_bytes"] > r["state_bytes"]
        assert r["fits_80gb"] == "yes" and r["epoch_hours"] > 0 and r["cell_hours"] >= r["epoch_hours"]
    assert by["tiger"]["activations_from"] == "t5" and by["mf"]["activations_from"] == "measured"
    assert by["mostpop"]["eval_bytes"] > 0 and "epoch_hours" not in by["mostpop"]


def _shrunk(preset: str, tmp_path):
    """A built-in preset on the toy data, one seed, every identifier scheme at its smoke size
    (the models keep the preset's sizes: the estimate builds them on the meta device)."""
    import dataclasses

    from benchmarks.matrix import load_matrix
    from benchmarks.registry import IDENTIFIERS

    import json

    from benchmarks.data.catalog import load_dataset, spec_from_config

    matrix = load_matrix(preset=preset)
    data = write_toy_recbole(tmp_path / "data")
    codes = tmp_path / "toy.index.json"          # the published-codes scheme reads a file
    item_ids = load_dataset(spec_from_config(data)).item_ids
    codes.write_text(json.dumps({rid: [f"<a_{i % 7}>", f"<b_{i // 7}>"] for i, rid in enumerate(item_ids)}))
    entries = []
    for e in matrix.methods:
        cfg = dict(e.config)
        cls = METHODS.get(e.name)
        scheme = cfg.get("identifier", getattr(cls.Config(), "identifier", None))
        if isinstance(scheme, str):
            cfg["identifier_config"] = dict(IDENTIFIERS.get(scheme).smoke_config)
            if scheme == "published-codes":
                cfg["identifier_config"]["path"] = str(codes)
        entries.append(dataclasses.replace(e, config=cfg, only=None))
    return dataclasses.replace(matrix, datasets=[data], seeds=[0], methods=entries)


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_the_estimate_covers_every_builtin_preset(preset, tmp_path, monkeypatch):
    monkeypatch.delenv("GENREC_LLM_CHECKPOINT", raising=False)
    matrix = _shrunk(preset, tmp_path)
    rows = estimate(matrix, llm_shape="Qwen2.5-1.5B", progress=False)
    assert [r["method"] for r in rows] == [e.label for e in matrix.methods]
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]
    for r in rows:
        assert r["fits_80gb"] in ("yes", "NO") and r["eval_bytes"] > 0, r
        assert "flops_error" not in r, r             # every loss counts on the meta device
        if r["activations_from"] not in ("-", "measured"):      # the transformer backbones
            assert r["train_tflop_step"] > 0 and r["gpu_train_hours"] > 0, r
        cls = METHODS.get(next(e.name for e in matrix.methods if e.label == r["method"]))
        if hasattr(cls.Config(), "backbone") and "checkpoint" in str(
                next(e.config for e in matrix.methods if e.label == r["method"])):
            # a checkpoint that is not there: counted at Qwen2.5-1.5B's shape, LoRA-trained
            assert 1.54e9 < r["parameters"] < 1.56e9 and r["trainable"] < 0.01 * r["parameters"], r
            assert "Qwen2.5-1.5B shape" in r["note"]


def test_the_cli_estimate_only(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GENREC_LLM_CHECKPOINT", raising=False)
    tiger = METHODS.get("tiger").smoke_config
    spec = {"name": "est", "datasets": [write_toy_recbole(tmp_path / "data")], "seeds": [0],
            "methods": [{"name": "tiger", "config": {**tiger, "batch_size": 8}},
                        {"name": "bigrec", "evaluation": {"batch_size": 4},
                         "config": {"backbone_config": {"checkpoint": "${GENREC_LLM_CHECKPOINT}", "dtype": "bfloat16"}}}]}
    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump(spec))
    assert main(["run", str(matrix), "--estimate-only", "--llm-shape", "Qwen2.5-1.5B", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| dataset | method | seed | parameters | trainable | train batch | eval users")
    bigrec = next(line for line in text.splitlines() if "| bigrec |" in line).split(" | ")
    assert bigrec[6] == "4" and "Qwen2.5-1.5B shape" in text          # its own evaluation batch
    assert main(["run", str(matrix), "--estimate-only", "--quiet"]) == 1
    assert "is no local folder with a config.json: export it, or estimate at a named shape with --llm-shape" \
        in capsys.readouterr().out
    assert main(["run", str(matrix), "--llm-shape", "Qwen2.5-1.5B"]) == 2
    assert "--llm-shape: names the decoder-only shape of --estimate-only" in capsys.readouterr().err


def test_the_estimate_reads_a_local_checkpoints_shape(tmp_path):
    """A decoder-only ``checkpoint`` that is a local folder: its config.json's shape is built
    from config on the meta device (no weights read), LoRA on, as the real run would train it."""
    import json

    from benchmarks.memory import state_bytes

    folder = tmp_path / "qwen"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 160, "vocab_size": 40000, "max_position_embeddings": 512,
        "tie_word_embeddings": True}))          # as Qwen2.5-0.5B / 1.5B (absent: the class default, untied)
    data = write_toy_recbole(tmp_path / "data")
    spec = {"name": "est", "datasets": [data], "seeds": [0],
            "methods": [{"name": "bigrec", "config": {"backbone_config": {"checkpoint": str(folder)}}}]}
    [row] = estimate(parse_matrix(spec, "m.yaml"), progress=False)
    assert "qwen shape from config" in row["note"] and row["fits_80gb"] == "yes"
    shape = {"family": "qwen2", "hidden": 64, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "intermediate": 160,
             "max_positions": 512, "text_vocab": 40000, "lora": True}
    cls = METHODS.get("bigrec")
    from benchmarks.data.catalog import load_dataset, spec_from_config
    ctx = build_context(load_dataset(spec_from_config(data)), needs=cls.needs, progress=False, meta=True)
    model = cls(build_config(cls.Config, {"backbone_config": shape}), ctx)
    counts = state_bytes(model.module)
    assert (row["parameters"], row["trainable"]) == (counts["parameters"], counts["trainable"])
    assert row["trainable"] < row["parameters"] / 10       # LoRA adapters and the new token rows


def test_the_estimate_sees_one_micro_batch_under_grad_accum(tmp_path):
    """grad_accum 4 cuts the widest batch into 4: one forward keeps about a quarter of the
    activations (the T5's per-example terms; a few fixed ones do not shrink)."""
    tiger = METHODS.get("tiger").smoke_config
    data = write_toy_recbole(tmp_path / "data")
    spec = {"name": "est", "datasets": [data], "seeds": [0],
            "methods": [{"name": "tiger", "label": f"ga{n}", "config": {**tiger, "batch_size": 64, "grad_accum": n}}
                        for n in (1, 4)]}
    one, four = estimate(parse_matrix(spec, "m.yaml"), progress=False)
    assert one["train_batch"].startswith("64x") and four["train_batch"].startswith("16x")
    assert 0.2 < four["activation_bytes"] / one["activation_bytes"] < 0.3
