"""Decoder-only backbones of a published model's shape: the named shape's config values reach
the transformers config, and ``text_vocab`` sizes the embedding rows before the new tokens."""

import pytest
import torch

from backbones.causal import SHAPES, CausalBackbone, CausalBackboneConfig, SetCausalLM, shape_config
from benchmarks.config import build_config

TINY = {"hidden": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "intermediate": 32}


def test_qwen_shape_reaches_the_transformers_config():
    cfg = build_config(CausalBackboneConfig, shape_config("qwen2.5-0.5b"))
    hf = CausalBackbone._config(151936 + 1025, 0, 1, cfg)
    assert (hf.model_type, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads,
            hf.num_key_value_heads, hf.intermediate_size) == ("qwen2", 896, 24, 14, 2, 4864)
    assert hf.rope_parameters["rope_theta"] == 1e6 and hf.rms_norm_eps == 1e-6
    assert hf.vocab_size == 151936 + 1025 and hf.max_position_embeddings == 32768 and hf.tie_word_embeddings
    assert shape_config("qwen2.5-0.5b") is not SHAPES["qwen2.5-0.5b"]       # a copy: callers may edit it


def test_unknown_shape_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown causal backbone shape 'qwen9'.*qwen2.5-0.5b"):
        shape_config("qwen9")


def test_text_vocab_gives_that_many_text_rows_plus_the_new_tokens():
    cfg = build_config(CausalBackboneConfig, {**TINY, "text_vocab": 50, "rope_theta": 500.0})
    lm = CausalBackbone(12, 0, 1, cfg, new_token_ids=[9, 10, 11])
    assert lm.model.get_input_embeddings().num_embeddings == 53 == lm.vocab_size
    assert lm.model.config.rope_parameters["rope_theta"] == 500.0
    logits = lm.model(input_ids=torch.tensor([[2, 11]])).logits
    assert logits.shape[-1] == 53                               # the output head spans every row
    assert SetCausalLM(cfg, n_query=2, vocab_size=7).lm.get_input_embeddings().num_embeddings == 50


def test_text_vocab_smaller_than_the_harness_vocabulary_or_on_a_checkpoint_is_refused():
    small = build_config(CausalBackboneConfig, {**TINY, "text_vocab": 5})
    with pytest.raises(ValueError, match="text_vocab = 5 is smaller than the text vocabulary.*9 ids"):
        CausalBackbone(12, 0, 1, small, new_token_ids=[9, 10, 11])
    ckpt = build_config(CausalBackboneConfig, {**TINY, "text_vocab": 50, "checkpoint": "/no/such/model"})
    with pytest.raises(ValueError, match="text_vocab is for from-config builds"):
        CausalBackbone(12, 0, 1, ckpt, new_token_ids=[9, 10, 11])


def test_llama_shape_has_an_output_head_of_its_own():
    """LLaMA-7B's head is not tied to its embedding (6.74B parameters, not 6.61B): the shape
    says so and a from-config build has a separate head, which counts once more V x H."""
    cfg = build_config(CausalBackboneConfig, shape_config("LLaMA-7B"))
    hf = CausalBackbone._config(32000 + 1025, 0, 1, cfg)
    assert (hf.model_type, hf.hidden_size, hf.num_hidden_layers, hf.num_key_value_heads,
            hf.intermediate_size, hf.max_position_embeddings) == ("llama", 4096, 32, 32, 11008, 2048)
    assert hf.tie_word_embeddings is False
    with torch.device("meta"):
        full = CausalBackbone(32000, 0, 1, cfg)
    assert sum(p.numel() for p in full.parameters()) == 6_738_415_616      # huggyllama/llama-7b's count
    tied = CausalBackbone(12, 0, 1, build_config(CausalBackboneConfig, TINY))
    untied = CausalBackbone(12, 0, 1, build_config(CausalBackboneConfig, {**TINY, "tie_embeddings": False}))
    head, emb = untied.model.get_output_embeddings().weight, untied.model.get_input_embeddings().weight
    assert head.data_ptr() != emb.data_ptr()
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) == n(tied) + 12 * 16


def test_a_local_checkpoint_config_gives_its_tie_setting(tmp_path):
    import json

    from backbones.causal import shape_of

    conf = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 32, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps({**conf, "tie_word_embeddings": True}))
    assert shape_of(str(tmp_path))["tie_embeddings"] is True
    (tmp_path / "config.json").write_text(json.dumps(conf))     # absent: LLaMA's own default (untied)
    assert shape_of(str(tmp_path))["tie_embeddings"] is False
