"""Checkpoints by local folder or by hub name (backbones/hub.py): a save_pretrained folder of a
tiny from-config model loads into both backbones (sequence and set models) and runs a
generative cell; a hub name is read through the hub cache; offline and not cached, or neither
folder nor name, is one error naming the model (and HF_HUB_OFFLINE)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from backbones.causal import CausalBackbone, CausalBackboneConfig, SetCausalLM
from backbones.hub import from_pretrained, is_hub_name
from backbones.t5 import SetT5, T5Backbone, T5BackboneConfig
from benchmarks.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def _minilm_tokenizer():
    from benchmarks.methods.token_space import load_text_tokenizer

    return load_text_tokenizer("all-MiniLM-L6-v2")


def save_tiny_t5(folder: Path, with_tokenizer: bool = True) -> dict:
    """A tiny from-config T5 (and a tokenizer) saved by save_pretrained; its state dict."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                                num_decoder_layers=1, num_heads=2, decoder_start_token_id=0))
    model.save_pretrained(folder)
    if with_tokenizer:
        _minilm_tokenizer().save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def save_tiny_qwen(folder: Path) -> dict:
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32,
                                                         num_hidden_layers=1, num_attention_heads=2,
                                                         num_key_value_heads=1, tie_word_embeddings=True))
    model.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_local_t5_folder_loads_into_the_sequence_and_the_set_model(tmp_path):
    saved = save_tiny_t5(tmp_path / "t5")
    cfg = T5BackboneConfig(checkpoint=str(tmp_path / "t5"))
    seq = T5Backbone(80, 0, 1, cfg)
    q = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(seq.model.state_dict()[q], saved[q])
    assert seq.model.get_input_embeddings().weight.shape[0] == 80          # resized to the harness vocabulary
    assert torch.equal(seq.model.get_input_embeddings().weight[:64], saved["shared.weight"])
    ids = torch.tensor([[5, 6, 7]])
    assert torch.isfinite(seq.loss(ids, torch.ones_like(ids), torch.tensor([[70, 1]])))
    setm = SetT5(cfg, n_query=2)
    assert torch.equal(setm.model.state_dict()[q], saved[q])


def test_a_local_qwen_folder_loads_with_lora(tmp_path):
    saved = save_tiny_qwen(tmp_path / "qwen")
    cfg = CausalBackboneConfig(checkpoint=str(tmp_path / "qwen"), lora_r=2, lora_alpha=4)
    seq = CausalBackbone(70, 0, 1, cfg, new_token_ids=[64, 65])
    assert seq.lora
    base = {k.split("base_model.model.", 1)[-1].replace(".base_layer", ""): v
            for k, v in seq.model.state_dict().items()}
    assert torch.equal(base["model.layers.0.self_attn.q_proj.weight"], saved["model.layers.0.self_attn.q_proj.weight"])
    setm = SetCausalLM(cfg, n_query=2)
    assert setm.lora and setm.hidden == 16


def test_a_generative_cell_runs_on_a_local_checkpoint_folder(tmp_path):
    from benchmarks.data.toy import write_toy_recbole
    from benchmarks.matrix import parse_matrix
    from benchmarks.runner import run_matrix

    save_tiny_t5(tmp_path / "t5")
    entry = write_toy_recbole(tmp_path / "data")
    method = {"name": "generative", "label": "id-on-ckpt",
              "config": {"identifier": "id", "backbone": "t5", "epochs": 1, "beams": 10, "batch_size": 64,
                         "backbone_config": {"checkpoint": str(tmp_path / "t5")}}}
    matrix = parse_matrix({"name": "ckpt", "datasets": [entry], "seeds": [0], "evaluation": {"ks": [10]},
                           "methods": [method]}, "t.yaml")
    summary = run_matrix(matrix, tmp_path / "run", progress=False)
    assert summary["failed"] == [] and summary["ran"] == 1
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    assert set(df["method"]) == {"id-on-ckpt"} and df["value"].notna().all()


def test_a_missing_folder_or_a_folder_without_a_model_is_one_error(tmp_path):
    from transformers import T5ForConditionalGeneration

    with pytest.raises(CheckpointError, match=r"'/nowhere/qwen': no such folder, and not a hub model name"):
        T5Backbone(10, 0, 1, T5BackboneConfig(checkpoint="/nowhere/qwen"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty': the folder holds no T5ForConditionalGeneration"):
        from_pretrained(T5ForConditionalGeneration, str(tmp_path / "empty"))
    assert is_hub_name("google-t5/t5-small") and is_hub_name("Qwen/Qwen2.5-0.5B") and not is_hub_name("/a/b/c")


HUB_SCRIPT = textwrap.dedent("""
    import json, sys
    from backbones.causal import CausalBackbone, CausalBackboneConfig
    from backbones.t5 import T5Backbone, T5BackboneConfig
    from benchmarks.errors import CheckpointError
    from benchmarks.methods.token_space import load_text_tokenizer

    out = {}
    t5 = T5Backbone(80, 0, 1, T5BackboneConfig(checkpoint="google-t5/t5-small"))
    out["t5_q"] = t5.model.state_dict()["encoder.block.0.layer.0.SelfAttention.q.weight"].flatten()[:5].tolist()
    out["tokenizer_vocab"] = len(load_text_tokenizer("google-t5/t5-small"))
    try:
        CausalBackbone(80, 0, 1, CausalBackboneConfig(checkpoint="Qwen/Qwen2.5-0.5B"))
    except CheckpointError as exc:
        out["error"] = str(exc)
    print(json.dumps(out))
""")


def test_a_hub_name_loads_through_the_hub_cache_and_offline_uncached_is_one_error(tmp_path):
    """The hub cache holds google-t5/t5-small (the tiny model, laid out as huggingface_hub
    caches a download: refs/main -> snapshots/<commit>/), not Qwen/Qwen2.5-0.5B; offline, the
    first loads by name and the second is one error naming it and HF_HUB_OFFLINE."""
    saved = save_tiny_t5(tmp_path / "model")
    cache = tmp_path / "hub"
    repo = cache / "models--google-t5--t5-small"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    (tmp_path / "model").rename(repo / "snapshots" / commit)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    env.pop("TRANSFORMERS_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    q = saved["encoder.block.0.layer.0.SelfAttention.q.weight"].flatten()[:5].tolist()
    assert out["t5_q"] == pytest.approx(q)
    assert out["tokenizer_vocab"] == len(_minilm_tokenizer())
    assert "'Qwen/Qwen2.5-0.5B'" in out["error"] and "HF_HUB_OFFLINE is set" in out["error"]
    assert str(cache) in out["error"]
