"""T5 encoder-decoder backbone (TIGER's architecture), from a config or a local checkpoint.

Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER, NeurIPS 2023): a T5
trained from scratch on the flattened semantic ids of the user's history, generating the next
item's ids. Defaults are TIGER's sizes: 4 encoder + 4 decoder layers, d_model 128, 6 heads of
64, feed-forward 1024, dropout 0.1, ReLU feed-forward (T5 v1.0).

``checkpoint``: a local path to a pretrained T5 (e.g. t5-small) instead: its weights are loaded
and the embedding matrix resized to the harness's vocabulary (its text tokenizer plus the
identifier tokens).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

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


@dataclass
class _T5State:
    encoder_outputs: Any
    mask: torch.Tensor
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

    def _decoder_inputs(self, targets: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(targets[:, :1], self.pad_id)
        return torch.cat([start, targets[:, :-1]], dim=1)

    def loss(self, inputs, input_mask, targets, temperature=1.0):
        logits = self.model(input_ids=inputs, attention_mask=input_mask,
                            decoder_input_ids=self._decoder_inputs(targets), use_cache=False).logits
        return tempered_cross_entropy(logits, targets, self.pad_id, temperature)

    def begin(self, inputs, input_mask, beams):
        enc = self.model.get_encoder()(input_ids=inputs, attention_mask=input_mask)
        hidden = enc.last_hidden_state.repeat_interleave(beams, dim=0)
        enc.last_hidden_state = hidden
        return _T5State(enc, input_mask.repeat_interleave(beams, dim=0))

    def step(self, state: _T5State, tokens):
        if tokens is None:
            tokens = torch.full((state.mask.shape[0],), self.pad_id, dtype=torch.long, device=state.mask.device)
        out = self.model(encoder_outputs=state.encoder_outputs, attention_mask=state.mask,
                         decoder_input_ids=tokens.unsqueeze(1), use_cache=True, **{self._kw: state.cache})
        state.cache = out_cache(out)
        return out.logits[:, -1]

    def reorder(self, state: _T5State, index):
        # rows are only ever reordered among the beams of one input, whose encoder outputs and
        # masks are identical: only the decoder cache needs reordering
        state.cache.reorder_cache(index)

    def candidate_logprobs(self, inputs, input_mask, candidates):
        """[B, C] log p(candidate | input): every pair teacher-forced in one decoder pass."""
        enc = self.model.get_encoder()(input_ids=inputs, attention_mask=input_mask).last_hidden_state
        b, c = inputs.shape[0], candidates.shape[0]
        hidden = enc.repeat_interleave(c, dim=0)
        mask = input_mask.repeat_interleave(c, dim=0)
        targets = candidates.repeat(b, 1)
        logits = self.model(encoder_outputs=(hidden,), attention_mask=mask,
                            decoder_input_ids=self._decoder_inputs(targets), use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(2, targets.unsqueeze(2)).squeeze(2)
        return (logp * (targets != self.pad_id)).sum(1).view(b, c)
