"""T5 encoder-decoder backbone (TIGER's architecture), from a config or a local checkpoint.

Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER, NeurIPS 2023): a T5
trained from scratch on the flattened semantic ids of the user's history, generating the next
item's ids. Defaults are TIGER's sizes: 4 encoder + 4 decoder layers, d_model 128, 6 heads of
64, feed-forward 1024, dropout 0.1, ReLU feed-forward (T5 v1.0).

``checkpoint``: a local path to a pretrained T5 (e.g. t5-small) instead: its weights are loaded
and the embedding matrix resized to the harness's vocabulary (its text tokenizer plus the
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
from transformers.models.t5.modeling_t5 import T5LayerCrossAttention

from backbones.base import GenerativeBackbone, tempered_cross_entropy


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
            self.model = T5ForConditionalGeneration.from_pretrained(cfg.checkpoint)
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
