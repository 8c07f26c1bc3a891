"""GPU memory of a training step and of an evaluation batch, estimated from shapes.

Nothing here needs the weights: :func:`state_bytes` counts a module's tensors by shape and
dtype, so a module built on the meta device (``with torch.device("meta"):``, no memory
allocated) is counted like a real one, and the activation and cache formulas read only the
transformer's sizes (:class:`Stack`, from its transformers config). :func:`saved_bytes` is the
measurement the formulas are tested against: what one forward pass really leaves alive for
the backward pass.

**Training state** (:func:`state_bytes`): weights (parameters and buffers, each in its dtype),
one gradient per trainable parameter (its dtype) and AdamW's two moments per trainable
parameter (torch keeps them in the parameter's dtype: fp32 for fp32 parameters, LoRA adapters
and trained token rows; frozen base weights have neither).

**Activations of one training step** (notation: b batch, s tokens, h hidden, a heads of d
dims, g key/value heads, f feed-forward width, V vocabulary, e the activation element's bytes
(4 fp32, 2 bf16 / fp16), m a dropout mask element's bytes (1 on CUDA, whose dropout keeps a
bool mask; e on the CPU, which keeps the scaled mask), [p] a term present only with dropout
p > 0). The terms are what autograd saves, op by op, in transformers' T5 and Qwen2 / LLaMA:

- RMS norm, per token: its input in fp32 (4h), the inverse RMS (4) and the normalised value
  in the activation dtype (e·h); its consumer keeps its output (e·h): ``norm = 4h + 4 + 2eh``.
- decoder-only layer (SDPA attention over a padded batch: the 4-D mask is given, so the
  key/value heads are repeated to ``a`` before the kernel, which keeps q, k, v, its output
  and a log-sum-exp per head; the output is copied once for ``o_proj``), per token:
  ``2·norm + e(4ad + h) + 4a + 4ef`` (SwiGLU keeps gate, up, silu(gate) and their product: 4f).
  Once per model: the ids (8bs), RoPE's cos and sin (2·b·s·d·e), the mask (b·s²·e), the
  final norm (``4h + 4 + eh`` per token), the LM head's input at the kept positions and the
  fp32 log-softmax of the target positions (b·T·V·4).
- T5 layer (eager attention with the position bias; ReLU feed-forward), per query token with
  k keys: ``norm + 3ade + ak(4 + [m + e]) + ade + [hm]`` per attention block (q, k, v, the
  fp32 softmax, [its dropout mask and the dropped weights], the context, [the output's
  dropout mask]), ``norm + f(e + [m + e]) + [hm]`` for the feed-forward; an encoder layer has
  one attention block (k = s), a decoder layer a self-attention (k = t) and a
  cross-attention (k = s; its keys and values from the encoder output, 2·a·d·e·s per layer
  and example). Once per stack: the ids, [the embedding's dropout mask], the position
  buckets (8s², int64), the final norm, and the decoder's causal mask and LM head as above.

With ``gradient_checkpointing`` (non-reentrant, per transformer layer) the forward keeps
every layer's input hidden states (b·s·h·e per layer), what lies outside the layers, and the
tensors handed from layer to layer (T5's position biases, a·q·k·e per attention kind); the
backward recomputes one layer at a time, so the peak adds one layer's activations.

**Evaluation** (:func:`kv_cache_causal`, :func:`kv_cache_t5`): beam search over a batch of B
users. The decoder-only backbone (``backbones/causal.py`` ``begin``) encodes each prompt once
and then repeats its key/value cache per beam (``batch_repeat_interleave``), so the cache is
``layers · 2 · g · d · B · beams · (prompt + target) · e``; T5 keeps the encoder output and the
cross-attention keys / values once per user (``backbones/t5.py`` folds the beams into the
query axis) and a self-attention cache of ``layers · 2 · a · d · B · beams · t · e``. Both add
the fp32 logits of the B · beams rows and one layer's transient activations.

Under autocast (fp32 parameters, bf16 / fp16 compute) the casts add: a 2-byte copy of every
matrix a matmul reads (:func:`autocast_copies`), kept for the backward pass; in the decoder-only
model a fp32 residual stream (each norm's output fp32 and cast by its consumer, +2h); T5 keeps
fp32 activations whatever the autocast (measured), so its formula takes e = 4 there.

Not counted: the framework's workspace (cuBLAS, the CUDA context: about 0.5-1 GB per process)
and allocator fragmentation (the estimate keeps 1.5 GiB of an 80 GB card for them). The tests
(``tests/harness/test_memory.py``) compare the activation formulas with :func:`saved_bytes` on
tiny T5 and decoder-only models: fp32 with and without checkpointing, bf16 parameters, bf16
autocast, and each method's own estimate at its widest real batch.
"""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

GIB = 2 ** 30


# --------------------------------------------------------------------------- state
def _nbytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds by shape and dtype (meta tensors too); a sparse one (COO, CSR)
    its values and indices."""
    size = lambda x: x.numel() * x.element_size()
    if t.layout == torch.sparse_coo:
        if not t.is_meta:
            t = t.coalesce()
        return size(t._values()) + size(t._indices())
    if t.layout == torch.sparse_csr:
        return size(t.values()) + size(t.crow_indices()) + size(t.col_indices())
    return size(t)


def state_bytes(module: nn.Module) -> dict:
    """Counts and bytes of the training state of ``module`` (real or on the meta device):
    ``parameters``, ``trainable`` (elements), ``weights`` (parameters + buffers), ``gradients``
    and ``optimizer`` (AdamW's two moments), bytes in each tensor's dtype."""
    params = list(module.parameters())
    trainable = [p for p in params if p.requires_grad]
    weights = sum(_nbytes(t) for t in [*params, *module.buffers()])
    grads = sum(_nbytes(p) for p in trainable)
    return {"parameters": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in trainable),
            "weights": weights, "gradients": grads, "optimizer": 2 * grads}


# --------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Stack:
    """The sizes of a transformers model that its activations depend on."""

    kind: str             # "t5" (encoder-decoder) | "causal" (decoder-only)
    hidden: int
    layers: int           # encoder layers (T5) or decoder layers (causal)
    heads: int
    head_dim: int
    kv_heads: int
    ffn: int
    vocab: int
    decoder_layers: int = 0
    dropout: float = 0.0

    @classmethod
    def of(cls, module: nn.Module) -> "Stack":
        """The first transformers model inside ``module`` (a backbone, a PEFT wrapper), read
        from its config; a ValueError where there is none or its family is neither."""
        for m in module.modules():
            conf = getattr(m, "config", None)
            if conf is None or not hasattr(conf, "model_type"):
                continue
            if conf.model_type == "t5":
                return cls("t5", conf.d_model, conf.num_layers, conf.num_heads, conf.d_kv, conf.num_heads,
                           conf.d_ff, conf.vocab_size, conf.num_decoder_layers, float(conf.dropout_rate))
            if hasattr(conf, "num_key_value_heads") and hasattr(conf, "intermediate_size"):
                heads = conf.num_attention_heads
                head_dim = getattr(conf, "head_dim", None) or conf.hidden_size // heads
                return cls("causal", conf.hidden_size, conf.num_hidden_layers, heads, head_dim,
                           conf.num_key_value_heads or heads, conf.intermediate_size, conf.vocab_size,
                           dropout=float(getattr(conf, "attention_dropout", 0.0) or 0.0))
            raise ValueError(f"{type(m).__name__}: model_type {conf.model_type!r} is neither T5 nor a "
                             f"Qwen2 / LLaMA-style decoder: no activation formula for it")
        raise ValueError(f"{type(module).__name__} holds no transformers model: no activation formula for it")


def _norm(h: int, e: int, autocast: bool = False) -> int:
    """Bytes one RMS norm keeps per token, its consumer's copy of the output included; under
    autocast the residual stream stays fp32, so the output is fp32 and its consumer casts it."""
    return 4 * h + 4 + (4 * h + 2 * h if autocast else 2 * e * h)


def autocast_copies(module: nn.Module) -> int:
    """Bytes of the low-precision copies autocast makes of a module's fp32 matrices (every
    2-D parameter a matmul reads; kept for the backward pass): 2 bytes per element."""
    return sum(2 * p.numel() for p in module.parameters() if p.dtype == torch.float32 and p.dim() == 2)


# --------------------------------------------------------------------------- activations
def causal_activations(st: Stack, batch: int, seq: int, *, logit_positions: int, e: int,
                       checkpointing: bool = False, lm_head: bool = True, autocast: bool = False) -> dict:
    """Bytes a decoder-only model's training forward over ``batch`` x ``seq`` tokens keeps
    (``held``) and the backward's peak on top of the state (``peak``); ``logit_positions``: the
    target positions the loss reads (the LM head runs on those alone: ``logits_to_keep`` lists them).
    ``lm_head=False``: a stack without the head (SETRec's; its loss is the method's).
    ``autocast``: fp32 parameters computing in ``e`` (add :func:`autocast_copies`)."""
    b, s, h, a, d, f = batch, seq, st.hidden, st.heads, st.head_dim, st.ffn
    tokens = b * s
    layer = tokens * (2 * _norm(h, e, autocast) + e * (4 * a * d + h) + 4 * a + 4 * e * f)
    ea = 4 if autocast else e            # what stays in the parameters' fp32 under autocast
    once = 8 * tokens + 2 * tokens * d * ea + b * s * s * ea + tokens * (4 * h + 4 + ea * h)
    if lm_head:
        once += b * logit_positions * h * e + b * logit_positions * (st.vocab * 4 + 8) + 4
    if not checkpointing:
        held = st.layers * layer + once
        return {"held": held, "peak": held}
    held = st.layers * tokens * h * e + once
    return {"held": held, "peak": held + layer}


def _t5_attention(b: int, q: int, k: int, st: Stack, e: int, m: int, cross: bool) -> int:
    """One T5 attention block with ``q`` query and ``k`` key positions (keys and values of a
    cross-attention counted by the caller's k: projected from the encoder output)."""
    a, d, h = st.heads, st.head_dim, st.hidden
    drop = st.dropout > 0
    per_q = _norm(h, e) + a * d * e * (1 if cross else 3) + a * k * (4 + ((m + e) if drop else 0)) \
        + a * d * e + (h * m if drop else 0)
    kv = 2 * a * d * e * b * k if cross else 0
    return b * q * per_q + kv


def _t5_ffn(b: int, n: int, st: Stack, e: int, m: int) -> int:
    drop = st.dropout > 0
    return b * n * (_norm(st.hidden, e) + st.ffn * (e + ((m + e) if drop else 0)) + (st.hidden * m if drop else 0))


def t5_activations(st: Stack, batch: int, enc_len: int, dec_len: int, *, e: int, mask_bytes: int,
                   checkpointing: bool = False, lm_head: bool = True, autocast: bool = False) -> dict:
    """Bytes a T5's training forward (encoder ``enc_len``, decoder ``dec_len`` tokens) keeps
    (``held``) and its backward's peak on top of the state (``peak``); ``mask_bytes``: bytes of
    a dropout-mask element (1 on CUDA, ``e`` on the CPU). ``autocast`` (fp32 parameters,
    low-precision compute): transformers' T5 keeps its activations in fp32 all the same
    (attention and norms in fp32, each linear's input kept and cast), so ``e`` is 4; add
    :func:`autocast_copies`."""
    e = 4 if autocast else e
    b, s, t, h, a = batch, enc_len, dec_len, st.hidden, st.heads
    m, drop = mask_bytes, st.dropout > 0
    enc_layer = _t5_attention(b, s, s, st, e, m, False) + _t5_ffn(b, s, st, e, m)
    dec_layer = (_t5_attention(b, t, t, st, e, m, False) + _t5_attention(b, t, s, st, e, m, True)
                 + _t5_ffn(b, t, st, e, m))
    final = lambda n: b * n * (4 * h + 4 + e * h + (h * m if drop else 0))   # final norm [+ dropout mask]
    once = (8 * b * s + (b * s * h * m if drop else 0) + 8 * s * s + final(s) + b * s * h * e
            + 8 * b * t + (b * t * h * m if drop else 0) + 8 * t * t + t * t + final(t))
    if lm_head:
        once += b * t * h * e + b * t * (st.vocab * 4 + 8) + 4
    if not checkpointing:
        held = st.layers * enc_layer + st.decoder_layers * dec_layer + once
        return {"held": held, "peak": held}
    handed = a * (s * s + t * t + t * s) * e            # the position biases passed between layers
    held = (st.layers * b * s + st.decoder_layers * b * t) * h * e + handed + once
    return {"held": held, "peak": held + max(enc_layer, dec_layer)}


# --------------------------------------------------------------------------- evaluation
def kv_cache_causal(st: Stack, batch: int, beams: int, prompt: int, target: int, e: int) -> dict:
    """Bytes of a decoder-only beam search over ``batch`` prompts of ``prompt`` tokens:
    ``cache`` (the prompt's cache repeated per beam, grown by ``target`` steps), ``logits``
    (fp32, every beam row: the step's logits, its log-softmax and the scores) and ``prefill``
    (one layer's activations over the prompts, no gradients, and the mask)."""
    st_rows = batch * beams
    cache = st.layers * 2 * st.kv_heads * st.head_dim * st_rows * (prompt + target) * e
    logits = 3 * st_rows * st.vocab * 4
    prefill = batch * prompt * (3 * st.hidden + 2 * st.ffn + 2 * st.heads * st.head_dim) * e \
        + batch * prompt * prompt * e + batch * st.vocab * 4
    return {"cache": cache, "logits": logits, "prefill": prefill, "total": cache + logits + prefill}


def kv_cache_t5(st: Stack, batch: int, beams: int, enc_len: int, target: int, e: int) -> dict:
    """Bytes of a T5 beam search: ``cache`` (the encoder output and the cross-attention keys /
    values once per user, the self-attention cache per beam), ``logits`` as for the
    decoder-only model, ``prefill`` (one encoder layer's activations with its score matrix)."""
    a, d, h = st.heads, st.head_dim, st.hidden
    cross = batch * enc_len * h * e + st.decoder_layers * 2 * a * d * batch * enc_len * e
    self_cache = st.decoder_layers * 2 * a * d * batch * beams * target * e
    logits = 3 * batch * beams * st.vocab * 4
    prefill = batch * enc_len * (3 * h + st.ffn + 3 * a * d) * e + batch * a * enc_len * enc_len * (4 + e)
    return {"cache": cross + self_cache, "logits": logits, "prefill": prefill,
            "total": cross + self_cache + logits + prefill}


# --------------------------------------------------------------------------- measurement
def _live_objects() -> list:
    with warnings.catch_warnings():     # isinstance on some deprecated torch objects warns
        warnings.simplefilter("ignore")
        return [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]


def saved_bytes(forward: Callable[[], Any], module: nn.Module, inputs: tuple = ()) -> int:
    """MEASURED bytes that ``forward()`` leaves alive for the backward pass: every tensor
    autograd saves (``torch.autograd.graph.saved_tensors_hooks``) plus every tensor created
    during the call that is still alive after it (what a non-reentrant checkpoint keeps:
    its layers' inputs), unique storages, ``module``'s parameters and buffers and ``inputs``
    excluded. A real forward (not the meta device)."""
    own = {ptr for t in [*module.parameters(), *module.buffers(), *inputs] for ptr, _ in _storages(t)}
    gc.collect()
    before = {id(o) for o in _live_objects()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor):
        for ptr, n in _storages(t):
            kept.setdefault(ptr, n)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    gc.collect()
    for o in _live_objects():
        if id(o) not in before and not o.is_meta:
            for ptr, n in _storages(o):
                kept.setdefault(ptr, n)
    del out
    return sum(n for ptr, n in kept.items() if ptr not in own and ptr != 0)


def _storages(t: torch.Tensor) -> list[tuple[int, int]]:
    """(address, bytes) of the storages a tensor uses: a sparse one's values and indices."""
    if t.layout == torch.sparse_coo:
        parts = [t._values(), t._indices()]
    elif t.layout == torch.sparse_csr:
        parts = [t.values(), t.crow_indices(), t.col_indices()]
    elif t.layout == torch.strided:
        parts = [t]
    else:
        return []
    return [(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in parts]
