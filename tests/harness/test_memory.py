"""benchmarks/memory.py: the activation formulas against a MEASUREMENT (what autograd saves in
one real forward, plus what a checkpoint keeps alive), the state counts on the meta device
against a real build, and the decoder-only cache against the cache the backbone builds."""

import pytest
import torch

from backbones.causal import CausalBackbone, CausalBackboneConfig
from backbones.t5 import T5Backbone, T5BackboneConfig
from benchmarks.memory import (Stack, autocast_copies, causal_activations, kv_cache_causal, saved_bytes,
                               state_bytes, t5_activations)
from benchmarks.training import enable_gradient_checkpointing, state_memory_mb

#: |estimate / measurement - 1| allowed; with checkpointing the held part is small (layer
#: inputs and what lies outside the layers), so the mask and bias terms weigh more
TOLERANCE = {False: 0.05, True: 0.15}
SHAPES = [(4, 32, 4), (8, 48, 5)]      # batch, input tokens, target tokens


def _t5(dropout: float, checkpointing: bool) -> T5Backbone:
    torch.manual_seed(0)
    m = T5Backbone(300, 0, 1, T5BackboneConfig(d_model=64, n_layers=2, n_heads=4, d_kv=16, d_ff=256,
                                               dropout=dropout))
    if checkpointing:
        enable_gradient_checkpointing(m, "test")
    return m.train()


def _causal(checkpointing: bool, **kw) -> CausalBackbone:
    torch.manual_seed(0)
    m = CausalBackbone(300, 0, 1, CausalBackboneConfig(hidden=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                                       intermediate=256, **kw))
    if checkpointing:
        enable_gradient_checkpointing(m, "test")
    return m.train()


def _batch(b, s, t, pad_side):
    g = torch.Generator().manual_seed(b * 100 + s)
    inp = torch.randint(2, 300, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if pad_side == "left":
        mask[0, :5] = 0
    else:
        mask[0, -5:] = 0
    return inp, mask, torch.randint(2, 300, (b, t), generator=g)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_t5_formula_is_what_a_training_forward_keeps(checkpointing, dropout):
    m = _t5(dropout, checkpointing)
    st = Stack.of(m)
    assert (st.kind, st.layers, st.decoder_layers, st.heads, st.head_dim, st.ffn) == ("t5", 2, 2, 4, 16, 256)
    for b, s, t in SHAPES:
        inp, mask, tgt = _batch(b, s, t, "right")
        measured = saved_bytes(lambda: m.loss(inp, mask, tgt), m, (inp, mask, tgt))
        # the CPU's dropout keeps its mask in the activation dtype (CUDA: a bool mask)
        est = t5_activations(st, b, s, t, e=4, mask_bytes=4, checkpointing=checkpointing)
        assert abs(est["held"] / measured - 1) <= TOLERANCE[checkpointing], (b, s, t, est, measured)
        assert est["peak"] >= est["held"]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_decoder_only_formula_is_what_a_training_forward_keeps(checkpointing):
    m = _causal(checkpointing)
    st = Stack.of(m)
    assert (st.kind, st.layers, st.heads, st.kv_heads, st.head_dim, st.ffn) == ("causal", 2, 4, 2, 16, 256)
    for b, s, t in SHAPES:
        inp, mask, tgt = _batch(b, s, t, "left")
        measured = saved_bytes(lambda: m.loss(inp, mask, tgt), m, (inp, mask, tgt))
        est = causal_activations(st, b, s + t, logit_positions=t, e=4, checkpointing=checkpointing)
        assert abs(est["held"] / measured - 1) <= TOLERANCE[checkpointing], (b, s, t, est, measured)


def _autocast(fn):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()
    return run


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_t5_formula_under_bf16_autocast(dropout):
    """fp32 parameters computing in bf16 (the paper preset's T5 cells on a GPU)."""
    m = _t5(dropout, False)
    st = Stack.of(m)
    for b, s, t in SHAPES:
        inp, mask, tgt = _batch(b, s, t, "right")
        measured = saved_bytes(_autocast(lambda: m.loss(inp, mask, tgt)), m, (inp, mask, tgt))
        est = t5_activations(st, b, s, t, e=2, mask_bytes=2, autocast=True)["held"] + autocast_copies(m)
        assert abs(est / measured - 1) <= 0.1, (b, s, t, est, measured)


@pytest.mark.parametrize("mode", ["bf16 parameters", "bf16 autocast"])
def test_the_decoder_only_formula_in_bf16(mode):
    """bf16 parameters (the paper preset's LLM cells, ``dtype: bfloat16``) and fp32 ones under
    bf16 autocast."""
    m = _causal(False)
    autocast = mode == "bf16 autocast"
    if not autocast:
        m = m.to(torch.bfloat16)
    st = Stack.of(m)
    for b, s, t in SHAPES:
        inp, mask, tgt = _batch(b, s, t, "left")
        fn = lambda: m.loss(inp, mask, tgt)
        measured = saved_bytes(_autocast(fn) if autocast else fn, m, (inp, mask, tgt))
        est = causal_activations(st, b, s + t, logit_positions=t, e=2, autocast=autocast)["held"]
        est += autocast_copies(m) if autocast else 0
        assert abs(est / measured - 1) <= 0.1, (b, s, t, est, measured)


def test_state_on_the_meta_device_equals_the_real_build():
    real = state_bytes(_causal(False))
    with torch.device("meta"):
        meta_model = _causal(False)
    assert all(p.is_meta for p in meta_model.parameters())
    assert state_bytes(meta_model) == real
    mb = state_memory_mb(_causal(False))
    assert round(real["weights"] / 2 ** 20, 3) == mb["weights_mb"]
    assert round((real["weights"] + real["gradients"] + real["optimizer"]) / 2 ** 20, 3) == mb["state_mb"]


def test_lora_trains_only_adapters_and_the_new_token_rows():
    with torch.device("meta"):
        m = CausalBackbone(300, 0, 1, CausalBackboneConfig(hidden=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                                           intermediate=256, lora=True, lora_r=4),
                           new_token_ids=[290, 291, 292])
    s = state_bytes(m)
    # q_proj (64 -> 64) and v_proj (64 -> 32) per layer: r x (in + out) each; 3 rows of 64
    adapters = 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert s["trainable"] == adapters + 3 * 64
    assert s["gradients"] == 4 * s["trainable"] and s["optimizer"] == 2 * s["gradients"]
    assert s["parameters"] > 50 * s["trainable"]


def test_the_decoder_only_cache_is_the_prompt_cache_repeated_per_beam():
    m = _causal(False).eval()
    st = Stack.of(m)
    inp, mask, _ = _batch(3, 20, 1, "left")
    with torch.no_grad():
        state = m.begin(inp, mask, 5)
    held = sum(t.numel() * t.element_size() for layer in state.cache.layers for t in (layer.keys, layer.values))
    assert held == kv_cache_causal(st, 3, 5, 20, 0, e=4)["cache"]


def test_a_module_without_a_transformer_has_no_formula():
    with pytest.raises(ValueError, match="Linear holds no transformers model"):
        Stack.of(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("method", ["tiger", "lcrec", "bigrec", "setrec-t5", "setrec-causal"])
def test_a_methods_estimate_is_what_its_widest_batch_keeps(method):
    """The method's own ``memory_estimate`` (its batch layout: prompts, identifier lengths,
    SETRec's set layout and item-token head) against the measurement of its loss on the widest
    of its real training batches (smoke sizes on the toy data, fp32 on the CPU)."""
    import numpy as np

    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.toy import toy_dataset
    from benchmarks.evaluation.evaluator import user_batch
    from benchmarks.registry import METHODS

    ds = toy_dataset()
    cls = METHODS.get(method)
    model = cls(build_config(cls.Config, {**cls.smoke_config, "batch_size": 16}),
                build_context(ds, needs=cls.needs, progress=False))
    model.train()
    batch = max(model.batches(np.random.default_rng(0)), key=lambda b: sum(t.numel() for t in b))
    measured = saved_bytes(lambda: model.loss(batch), model.module, tuple(batch))
    est = model.memory_estimate(batch, user_batch(ds, "test", ds.eval_users("test")[:8]),
                                e=4, mask_bytes=4, autocast=False)
    assert abs(est["held"] / measured - 1) <= 0.15, (est, measured)
    assert est["eval"] > 0 and est["formula"] in ("t5", "causal", "set-t5", "set-causal")
