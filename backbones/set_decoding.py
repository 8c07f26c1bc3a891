"""Set-identifier decoding on T5 and on decoder-only LMs: histories whose items are SETS of
continuous tokens, and query-guided simultaneous generation (SETRec, Lin et al., SIGIR 2025).

This module knows vectors and token ids only (the set tokenizer that makes the item vectors is
:mod:`identifiers.setrec`; the harness wires the two in :mod:`benchmarks.methods.setrec`).

Layout. A user's history is flattened into one sequence::

    [prefix tokens] + for each history item its n tokens + [suffix tokens] (+ [queries]: causal LM)

- Shared positions: every token of an item gets ONE position, the item's, so nothing tells the
  model the order of the tokens inside an item. Items are numbered after the prefix by their
  rank among the user's REAL items; padding items are masked out and take no position, so left
  padding shifts nothing. The suffix follows the last real item.
- T5: the encoder reads the sequence (bidirectional). Its relative position bias is computed from
  those per-token positions: the attention modules that own the bias (the first layer's, T5
  shares it across layers) are switched to a subclass whose ``compute_bias`` reads the positions
  set for the current call (parameters untouched; without positions it is the parent's method).
  The decoder's inputs are the ``n_query`` learnable query vectors (normal, std 0.02), all at
  position 0, each attending only to itself (identity self-attention mask) and to the whole
  encoder output.
- Decoder-only (Qwen2 / LLaMA): a 4-D additive mask, causal ACROSS items and bidirectional INSIDE
  an item; the queries come after the suffix, see the whole history and, among the queries, only
  themselves; they share one position (the one after the suffix).

ONE forward pass yields the ``n_query`` output vectors [B, n_query, d]: no step-by-step decoding,
no beam search. :func:`ground` scores every item for every query with one batched matrix product.

Ablations (constructor flags): ``sparse_mask=False`` -> T5's queries attend to each other (plain
full attention in the decoder) and the decoder-only LM gets a plain causal mask over the whole
sequence (tokens of an item and the queries see their predecessors only); ``shared_positions=
False`` -> every token its own position; ``intra_item="self"`` (decoder-only) -> a token sees
only itself among its item's tokens (what the SETRec authors' Qwen code does; the paper's
Figure 5 and our default make an item's tokens see each other).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Attention

from backbones.causal import CausalBackbone, CausalBackboneConfig
from backbones.t5 import T5BackboneConfig

PROMPT, ITEM, QUERY = 0, 1, 2


# --------------------------------------------------------------------------- layout
@dataclass
class SetLayout:
    """A flattened batch: ``embeds`` [B, L, d]; ``valid`` [B, L] (False: padding items);
    ``positions`` [B, L]; ``unit`` [L] (tokens of one item share a unit; every prompt token is
    its own unit; all queries one unit, the last); ``kind`` [L] (PROMPT / ITEM / QUERY)."""

    embeds: torch.Tensor
    valid: torch.Tensor
    positions: torch.Tensor
    unit: torch.Tensor
    kind: torch.Tensor


def set_layout(items: torch.Tensor, item_mask: torch.Tensor, prefix: torch.Tensor | None = None,
               suffix: torch.Tensor | None = None, queries: torch.Tensor | None = None,
               shared_positions: bool = True) -> SetLayout:
    """Flatten ``items`` [B, H, n, d] (``item_mask`` [B, H], True for real items) between the
    ``prefix`` [P, d] and ``suffix`` [S, d] embeddings, then the ``queries`` [Q, d]; see the
    module docstring for the positions."""
    b, h, n, d = items.shape
    dev = items.device
    item_mask = item_mask.bool()
    p = 0 if prefix is None else prefix.shape[0]
    s = 0 if suffix is None else suffix.shape[0]
    q = 0 if queries is None else queries.shape[0]
    parts = []
    if p:
        parts.append(prefix.unsqueeze(0).expand(b, -1, -1))
    parts.append(items.reshape(b, h * n, d))
    if s:
        parts.append(suffix.unsqueeze(0).expand(b, -1, -1))
    if q:
        parts.append(queries.unsqueeze(0).expand(b, -1, -1))
    embeds = torch.cat([x.to(items.dtype) for x in parts], 1)

    rank = item_mask.long().cumsum(1) - 1                                  # [B, H]
    n_real = item_mask.long().sum(1, keepdim=True)                         # [B, 1]
    within = torch.arange(n, device=dev)
    if shared_positions:
        item_pos = (p + rank).unsqueeze(2).expand(b, h, n)
        after = p + n_real
    else:
        item_pos = p + rank.unsqueeze(2) * n + within
        after = p + n_real * n
    item_pos = torch.where(item_mask.unsqueeze(2), item_pos, torch.zeros_like(item_pos)).reshape(b, h * n)
    pos = [torch.arange(p, device=dev).expand(b, p), item_pos, after + torch.arange(s, device=dev)]
    if q:
        offsets = torch.zeros(q, dtype=torch.long, device=dev) if shared_positions else torch.arange(q, device=dev)
        pos.append(after + s + offsets)
    positions = torch.cat(pos, 1)

    valid = torch.cat([torch.ones(b, p, dtype=torch.bool, device=dev),
                       item_mask.unsqueeze(2).expand(b, h, n).reshape(b, h * n),
                       torch.ones(b, s + q, dtype=torch.bool, device=dev)], 1)
    unit = torch.cat([torch.arange(p, device=dev),
                      (p + torch.arange(h, device=dev)).repeat_interleave(n),
                      p + h + torch.arange(s, device=dev),
                      torch.full((q,), p + h + s, dtype=torch.long, device=dev)])
    kind = torch.cat([torch.full((p,), PROMPT, device=dev), torch.full((h * n,), ITEM, device=dev),
                      torch.full((s,), PROMPT, device=dev), torch.full((q,), QUERY, device=dev)]).long()
    return SetLayout(embeds, valid, positions, unit, kind)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, Lq, Lk] (True = may attend) -> additive float mask [B, 1, Lq, Lk]."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def causal_set_mask(layout: SetLayout, sparse: bool = True, intra_item: str = "bidirectional") -> torch.Tensor:
    """bool [B, L, L] for the decoder-only LM (True = row may attend to column).

    Sparse: a token sees every token of earlier units; inside its own unit, an item token sees
    the item's other tokens (``intra_item="bidirectional"``) or only itself (``"self"``), a query
    only itself. Not sparse: plain causal. Padding keys are hidden; every token sees itself (no
    empty rows)."""
    if intra_item not in ("bidirectional", "self"):
        raise ValueError(f"intra_item must be 'bidirectional' or 'self', got {intra_item!r}")
    length = layout.unit.shape[0]
    idx = torch.arange(length, device=layout.unit.device)
    diag = idx[:, None] == idx[None, :]
    if sparse:
        u = layout.unit
        allowed = u[None, :] < u[:, None]
        if intra_item == "bidirectional":
            allowed = allowed | ((u[None, :] == u[:, None]) & (layout.kind == ITEM)[:, None])
    else:
        allowed = idx[None, :] <= idx[:, None]
    allowed = allowed.unsqueeze(0) & layout.valid.unsqueeze(1)
    return allowed | diag


def ground(outputs: torch.Tensor, item_tokens: torch.Tensor) -> torch.Tensor:
    """s_q(i) = o_q . t_q(i) for all queries and items in ONE batched matrix product.

    ``outputs`` [B, Q, d] (the queries' outputs), ``item_tokens`` [Q, N, d] (token q of every
    item) -> scores [Q, B, N]."""
    return torch.bmm(outputs.transpose(0, 1), item_tokens.transpose(1, 2))


# --------------------------------------------------------------------------- T5
class _SharedPositionBias(T5Attention):
    """T5 attention whose relative position bias follows per-token positions when they are set
    (``set_positions`` [B or 1, L]); else the parent's behaviour."""

    set_positions: torch.Tensor | None = None

    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        pos = self.set_positions
        if pos is None:
            return super().compute_bias(query_length, key_length, device, past_seen_tokens)
        # rows with the same positions (the same number of real items) share one bias: computed
        # once per distinct row, then gathered (far cheaper to back-propagate than B lookups)
        uniq, inverse = torch.unique(pos, dim=0, return_inverse=True)
        relative = uniq[:, None, :] - uniq[:, :, None]              # memory - context: [U, Lq, Lk]
        bucket = self._relative_position_bucket(relative, bidirectional=not self.is_decoder,
                                                num_buckets=self.relative_attention_num_buckets,
                                                max_distance=self.relative_attention_max_distance)
        bias = self.relative_attention_bias(bucket).permute(0, 3, 1, 2)   # [U, heads, Lq, Lk]
        return bias if uniq.shape[0] == pos.shape[0] == 1 else bias[inverse]


@contextlib.contextmanager
def _positions(modules: list[_SharedPositionBias], positions: torch.Tensor):
    for m in modules:
        m.set_positions = positions
    try:
        yield
    finally:
        for m in modules:
            m.set_positions = None


class SetT5(nn.Module):
    """T5 encoder-decoder for set identifiers (see the module docstring).

    ``cfg``: :class:`backbones.t5.T5BackboneConfig` (TIGER's sizes from scratch by default, or a
    local ``checkpoint`` such as t5-small); ``vocab_size``: the text vocabulary of a from-scratch
    model (only the prompt tokens are ever embedded)."""

    def __init__(self, cfg: T5BackboneConfig, n_query: int, vocab_size: int = 2, *,
                 sparse_mask: bool = True, shared_positions: bool = True):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        if cfg.checkpoint:
            self.model = T5ForConditionalGeneration.from_pretrained(cfg.checkpoint)
        else:
            conf = T5Config(vocab_size=max(vocab_size, 2), d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                            num_layers=cfg.n_layers, num_decoder_layers=cfg.n_layers,
                            num_heads=cfg.n_heads, dropout_rate=cfg.dropout, feed_forward_proj="relu",
                            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                            tie_word_embeddings=True)
            self.model = T5ForConditionalGeneration(conf)
        self.hidden = int(self.model.config.d_model)
        self.n_query = n_query
        self.sparse_mask = sparse_mask
        self.shared_positions = shared_positions
        self.queries = nn.Parameter(torch.empty(n_query, self.hidden))
        nn.init.normal_(self.queries, mean=0.0, std=0.02)
        self._enc_bias, self._dec_bias = [], []
        for stack, out in ((self.model.encoder, self._enc_bias), (self.model.decoder, self._dec_bias)):
            for blk in stack.block:
                att = blk.layer[0].SelfAttention
                if att.has_relative_attention_bias:
                    att.__class__ = _SharedPositionBias
                    out.append(att)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(self, items: torch.Tensor, item_mask: torch.Tensor, prefix_ids: torch.Tensor | None = None,
                suffix_ids: torch.Tensor | None = None, return_encoder: bool = False):
        """``items`` [B, H, n, d] (history items, each a set of n token vectors), ``item_mask``
        [B, H] -> the queries' outputs [B, n_query, d] (and the encoder's hidden states
        [B, L, d] with ``return_encoder``)."""
        prefix = None if prefix_ids is None or not len(prefix_ids) else self.embed(prefix_ids)
        suffix = None if suffix_ids is None or not len(suffix_ids) else self.embed(suffix_ids)
        lay = set_layout(items, item_mask, prefix, suffix, None, self.shared_positions)
        b = items.shape[0]
        with _positions(self._enc_bias, lay.positions):
            enc = self.model.encoder(inputs_embeds=lay.embeds, attention_mask=lay.valid.long()).last_hidden_state
        q = self.queries.to(enc.dtype).unsqueeze(0).expand(b, -1, -1)
        if self.sparse_mask:
            self_mask = torch.eye(self.n_query, dtype=torch.bool, device=enc.device)
        else:
            self_mask = torch.ones(self.n_query, self.n_query, dtype=torch.bool, device=enc.device)
        self_mask = additive(self_mask.unsqueeze(0).expand(b, -1, -1), enc.dtype)
        zeros = torch.zeros(1, self.n_query, dtype=torch.long, device=enc.device)   # all queries at position 0
        with _positions(self._dec_bias, zeros):
            out = self.model.decoder(inputs_embeds=q, attention_mask=self_mask, encoder_hidden_states=enc,
                                     encoder_attention_mask=lay.valid.long(), use_cache=False).last_hidden_state
        return (out, enc) if return_encoder else out


# --------------------------------------------------------------------------- decoder-only
class SetCausalLM(nn.Module):
    """A decoder-only LM (Qwen2 / LLaMA) for set identifiers (see the module docstring).

    ``cfg``: :class:`backbones.causal.CausalBackboneConfig`: a tiny model from a config (full
    training) or a local ``checkpoint`` with LoRA (``lora="auto"``; rank, alpha, dropout and
    target modules from the config). Only the transformer stack is kept (the LM head is never
    used: outputs are grounded against item tokens)."""

    def __init__(self, cfg: CausalBackboneConfig, n_query: int, vocab_size: int = 2, *,
                 sparse_mask: bool = True, shared_positions: bool = True, intra_item: str = "bidirectional"):
        super().__init__()
        from transformers import AutoModelForCausalLM

        if cfg.checkpoint:
            full = AutoModelForCausalLM.from_pretrained(cfg.checkpoint, dtype=getattr(torch, cfg.dtype))
        else:
            full = AutoModelForCausalLM.from_config(CausalBackbone._config(max(vocab_size, 2), 0, 0, cfg))
        stack = full.base_model
        use_lora = bool(cfg.checkpoint) if cfg.lora == "auto" else bool(cfg.lora)
        if use_lora:
            from peft import LoraConfig, get_peft_model

            stack = get_peft_model(stack, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout,
                                                     target_modules=list(cfg.lora_targets),
                                                     task_type="FEATURE_EXTRACTION"))
        self.lm = stack
        self.lora = use_lora
        self.hidden = int(full.config.hidden_size)
        self.n_query = n_query
        self.sparse_mask = sparse_mask
        self.shared_positions = shared_positions
        if intra_item not in ("bidirectional", "self"):
            raise ValueError(f"intra_item must be 'bidirectional' or 'self', got {intra_item!r}")
        self.intra_item = intra_item
        self.queries = nn.Parameter(torch.empty(n_query, self.hidden))
        nn.init.normal_(self.queries, mean=0.0, std=0.02)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def forward(self, items: torch.Tensor, item_mask: torch.Tensor, prefix_ids: torch.Tensor | None = None,
                suffix_ids: torch.Tensor | None = None, return_hidden: bool = False):
        """Like :meth:`SetT5.forward`; ``return_hidden`` also returns the hidden states of the
        whole flattened sequence [B, L, d] (queries last)."""
        dtype = self.dtype
        prefix = None if prefix_ids is None or not len(prefix_ids) else self.embed(prefix_ids)
        suffix = None if suffix_ids is None or not len(suffix_ids) else self.embed(suffix_ids)
        lay = set_layout(items.to(dtype), item_mask, prefix, suffix, self.queries.to(dtype), self.shared_positions)
        mask = additive(causal_set_mask(lay, self.sparse_mask, self.intra_item), dtype)
        hidden = self.lm(inputs_embeds=lay.embeds, attention_mask=mask, position_ids=lay.positions,
                         use_cache=False).last_hidden_state
        out = hidden[:, -self.n_query:].float()
        return (out, hidden) if return_hidden else out
