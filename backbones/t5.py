"""T5 encoder-decoder backbone (TIGER's architecture), from a config or a checkpoint.

Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER, NeurIPS 2023): a T5
trained from scratch on the flattened semantic ids of the user's history, generating the next
item's ids. Defaults are TIGER's sizes: 4 encoder + 4 decoder layers, d_model 128, 6 heads of
64, feed-forward 1024, dropout 0.1, ReLU feed-forward (T5 v1.0).

``checkpoint``: a pretrained T5 instead, a local ``save_pretrained`` folder or a hub name such as
``google-t5/t5-small`` (:mod:`backbones.hub`): its weights are loaded and the embedding matrix resized to the harness's vocabulary (its text tokenizer plus the
identifier tokens).

Decoding shares the encoder across beams. In a beam search every input has ``beams`` decoder
rows, and all of them cross-attend to the SAME encoder output; transformers' generate (and a
plain cache) expands the encoder output ``beams`` times, projects cross-attention keys/values
for every copy and reorders those copies at every step. Here the decoder's cross-attention
layers are switched (a subclass swap of ``T5LayerCrossAttention``, parameters untouched) to
fold the beams of an input into the query-length axis: queries [B*beams, 1, d] are viewed as
[B, beams, d] against keys/values projected ONCE from the un-expanded encoder output [B, L, d],
and only the self-attention cache is reordered. T5's cross-attention has no position bias, so
this is exactly the same computation (the beam-search tests compare it with transformers'
``generate``). Exact global ranking uses the same trick with the candidates in place of beams.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Attention, T5LayerCrossAttention

from backbones.base import Backbone, GenerativeBackbone, tempered_cross_entropy
from backbones.hub import from_pretrained
from backbones.set_decoding import additive, set_layout
from benchmarks.registry import register_backbone


@dataclass
class T5BackboneConfig:
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    checkpoint: str | None = None


def cache_kw(model: torch.nn.Module) -> str:
    """The keyword a transformers model's forward takes its key/value cache by."""
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def out_cache(out) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class _GroupedCrossAttention(T5LayerCrossAttention):
    """Cross-attention in which ``groups`` consecutive decoder rows share one encoder row.
    ``groups = None``: the parent's behaviour (training, transformers' own generate)."""

    groups: int | None = None
    enc_mask: torch.Tensor | None = None

    def forward(self, hidden_states, key_value_states, attention_mask=None, position_bias=None, *args, **kwargs):
        if self.groups is None:
            return super().forward(hidden_states, key_value_states, attention_mask, position_bias, *args, **kwargs)
        rows, q, d = hidden_states.shape
        folded = hidden_states.reshape(rows // self.groups, self.groups * q, d)
        res = super().forward(folded, key_value_states, self.enc_mask, None, *args, **kwargs)
        return (res[0].reshape(rows, q, d), position_bias) + tuple(res[2:])


@contextlib.contextmanager
def grouped_cross_attention(model, groups: int, encoder_mask: torch.Tensor, dtype: torch.dtype):
    """Within the block, ``groups`` decoder rows share each encoder row (see module doc)."""
    layers = [blk.layer[1] for blk in model.decoder.block]
    additive = (1.0 - encoder_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    for layer in layers:
        layer.groups, layer.enc_mask = groups, additive
    try:
        yield
    finally:
        for layer in layers:
            layer.groups, layer.enc_mask = None, None


@dataclass
class _T5State:
    encoder_outputs: Any        # one row per input (not per beam)
    mask: torch.Tensor          # [B, L] encoder mask
    beams: int = 1
    cache: Any = None


class T5Backbone(GenerativeBackbone):
    input_side = "right"

    def __init__(self, vocab_size: int, pad_id: int, eos_id: int, cfg: T5BackboneConfig):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        if cfg.checkpoint:
            self.model = from_pretrained(T5ForConditionalGeneration, cfg.checkpoint)
            self.model.resize_token_embeddings(vocab_size)
        else:
            conf = T5Config(vocab_size=vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
                            num_layers=cfg.n_layers, num_decoder_layers=cfg.n_layers,
                            num_heads=cfg.n_heads, dropout_rate=cfg.dropout,
                            feed_forward_proj="relu", pad_token_id=pad_id, eos_token_id=eos_id,
                            decoder_start_token_id=pad_id, tie_word_embeddings=True)
            self.model = T5ForConditionalGeneration(conf)
        self.model.config.pad_token_id = pad_id
        self.model.config.decoder_start_token_id = pad_id
        self.model.config.eos_token_id = eos_id
        self.pad_id = pad_id
        self.vocab_size = vocab_size
        self._kw = cache_kw(self.model)
        for blk in self.model.decoder.block:
            blk.layer[1].__class__ = _GroupedCrossAttention

    def _decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(targets[:, :1], self.pad_id)
        return torch.cat([start, targets[:, :-1]], dim=1)

    def loss(self, inputs, input_mask, targets, temperature=1.0):
        logits = self.model(input_ids=inputs, attention_mask=input_mask,
                            decoder_input_ids=self._decoder_inputs(targets), use_cache=False).logits
        return tempered_cross_entropy(logits, targets, self.pad_id, temperature)

    def begin(self, inputs, input_mask, beams):
        enc = self.model.get_encoder()(input_ids=inputs, attention_mask=input_mask)
        return _T5State(enc, input_mask, beams=beams)

    def step(self, state: _T5State, tokens):
        first = tokens is None
        if first:   # every beam starts from the same start token: decode one row per input
            tokens = torch.full((state.mask.shape[0],), self.pad_id, dtype=torch.long, device=state.mask.device)
        groups = 1 if first else state.beams
        with grouped_cross_attention(self.model, groups, state.mask, state.encoder_outputs.last_hidden_state.dtype):
            out = self.model(encoder_outputs=state.encoder_outputs, attention_mask=None,
                             decoder_input_ids=tokens.unsqueeze(1), use_cache=True, **{self._kw: state.cache})
        state.cache = out_cache(out)
        logits = out.logits[:, -1]
        if first and state.beams > 1:
            state.cache.self_attention_cache.batch_repeat_interleave(state.beams)
            logits = logits.repeat_interleave(state.beams, dim=0)
        return logits

    def reorder(self, state: _T5State, index):
        # rows move only among the beams of one input, which share the encoder row: the
        # cross-attention cache (one row per input) stays, the self-attention cache moves
        state.cache.self_attention_cache.reorder_cache(index)

    def candidate_logprobs(self, inputs, input_mask, candidates):
        """[B, C] log p(candidate | input): every pair teacher-forced in one decoder pass, the
        C candidates of an input sharing its encoder row."""
        enc = self.model.get_encoder()(input_ids=inputs, attention_mask=input_mask)
        b, c = inputs.shape[0], candidates.shape[0]
        targets = candidates.repeat(b, 1)
        with grouped_cross_attention(self.model, c, input_mask, enc.last_hidden_state.dtype):
            logits = self.model(encoder_outputs=enc, attention_mask=None,
                                decoder_input_ids=self._decoder_inputs(targets), use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
        return (logp * (targets != self.pad_id)).sum(1).view(b, c)


# --------------------------------------------------------------------------- set identifiers (SETRec)
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
    """T5 encoder-decoder for set identifiers (:mod:`backbones.set_decoding` has the layout).

    The encoder reads the flattened history (bidirectional). Its relative position bias is
    computed from the per-token positions of the layout: the attention modules that own the
    bias (the first layer's, T5 shares it across layers) are switched to a subclass whose
    ``compute_bias`` reads the positions set for the current call (parameters untouched;
    without positions it is the parent's method). The decoder's inputs are the ``n_query``
    learnable query vectors (normal, std 0.02), all at position 0, each attending only to
    itself (identity self-attention mask; all queries with ``sparse_mask=False``) and to the
    whole encoder output.

    ``cfg``: :class:`backbones.t5.T5BackboneConfig` (TIGER's sizes from scratch by default, or a
    ``checkpoint`` such as google-t5/t5-small); ``vocab_size``: the text vocabulary of a from-scratch
    model (only the prompt tokens are ever embedded)."""

    #: read by the training loop's ``gradient_checkpointing`` (benchmarks.training)
    gradient_checkpointing_unsupported = ("the position bias follows positions set for the duration of one "
                                          "forward call, which a recomputation in the backward pass would not see")

    def __init__(self, cfg: T5BackboneConfig, n_query: int, vocab_size: int = 2, *,
                 sparse_mask: bool = True, shared_positions: bool = True):
        super().__init__()
        from transformers import T5Config, T5ForConditionalGeneration

        if cfg.checkpoint:
            self.model = from_pretrained(T5ForConditionalGeneration, cfg.checkpoint)
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


# --------------------------------------------------------------------------- the registered backbone
@register_backbone("t5")
class T5(Backbone):
    """T5 encoder-decoder (TIGER's architecture; t5-small and the like from a checkpoint)."""

    Config = T5BackboneConfig
    smoke_config = {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16, "d_ff": 64}

    @classmethod
    def sequence_model(cls, config, vocab_size, pad_id, eos_id, new_token_ids=()):
        return T5Backbone(vocab_size, pad_id, eos_id, config)

    @classmethod
    def set_model(cls, config, n_query, vocab_size, *, sparse_mask=True, shared_positions=True,
                  intra_item="bidirectional"):
        # the encoder is bidirectional: every token sees its whole item whatever intra_item says
        return SetT5(config, n_query, vocab_size, sparse_mask=sparse_mask, shared_positions=shared_positions)
