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
