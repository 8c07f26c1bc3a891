"""The interface every generative backbone offers to training and decoding.

A backbone maps an input token sequence (the encoded user history, or a prompt) to a
distribution over output token sequences (an item identifier). Backbones know token IDS only:
the harness turns identifiers into ids and hands over the vocabulary size and the special ids.

- ``loss(inputs, input_mask, targets, temperature)``: token cross-entropy of ``targets``
  (right-padded with ``pad_id``; pad positions ignored) given the inputs, with the logits
  divided by ``temperature`` (LETTER's ranking-guided loss; 1.0 = the plain generation loss).
- ``begin(inputs, input_mask, beams) -> state``, ``step(state, tokens) -> logits``,
  ``reorder(state, index)``: incremental decoding with a key/value cache over B x beams rows
  (``tokens=None`` at the first step); used by the beam search in
  :mod:`backbones.generation`.
- ``candidate_logprobs(inputs, input_mask, candidates)``: exact log-probability of every
  candidate sequence for every input, teacher-forced (global ranking).

A backbone FAMILY is one file that registers a :class:`Backbone` by name
(``@register_backbone("t5")``): its config dataclass (what a method's ``backbone_config`` must
fit) and the factories of the models the methods build from it, a :class:`GenerativeBackbone`
for sequence identifiers and, optionally, a set model for SETRec. Methods choose one by their
config's ``backbone`` field and never name a backbone class.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
from torch import nn


def pad_sequences(seqs: list[list[int]] | list[torch.Tensor], pad: int, side: str = "right",
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length id lists -> (ids [B, L], mask [B, L]) padded on ``side``."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), max(width, 1)), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), max(width, 1)), dtype=torch.long)
    for row, s in enumerate(seqs):
        s = torch.as_tensor(s, dtype=torch.long)
        if len(s) == 0:
            continue
        if side == "right":
            ids[row, :len(s)] = s
            mask[row, :len(s)] = 1
        else:
            ids[row, width - len(s):] = s
            mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def tempered_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, pad_id: int,
                           temperature: float = 1.0) -> torch.Tensor:
    """Mean token CE of ``targets`` [B, L] under ``logits / temperature`` [B, L, V], pads ignored.

    LETTER Eq. 6: -Σ_t log softmax(p(y_t) / τ); τ < 1 weighs hard negatives more. At τ = 1 the
    logits go in as they are (no division: a copy of the largest tensor of the step)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    flat = logits.reshape(-1, logits.shape[-1])
    return nn.functional.cross_entropy(flat, targets.reshape(-1), ignore_index=pad_id)


class GenerativeBackbone(nn.Module, abc.ABC):
    """Base class; see the module docstring."""

    pad_id: int
    vocab_size: int
    #: where inputs are padded ("right" for encoder-decoders, "left" for decoder-only LMs)
    input_side: str = "right"

    @abc.abstractmethod
    def loss(self, inputs: torch.Tensor, input_mask: torch.Tensor, targets: torch.Tensor,
             temperature: float = 1.0) -> torch.Tensor: ...

    @abc.abstractmethod
    def begin(self, inputs: torch.Tensor, input_mask: torch.Tensor, beams: int) -> Any: ...

    @abc.abstractmethod
    def step(self, state: Any, tokens: torch.Tensor | None) -> torch.Tensor: ...

    @abc.abstractmethod
    def reorder(self, state: Any, index: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def candidate_logprobs(self, inputs: torch.Tensor, input_mask: torch.Tensor,
                           candidates: torch.Tensor) -> torch.Tensor: ...


class Backbone(abc.ABC):
    """A registered backbone family: ``Config`` and the models built from one of its configs.

    ``sequence_model``: the :class:`GenerativeBackbone` over ``vocab_size`` token ids (``pad_id``,
    ``eos_id``; ``new_token_ids``: the ids the harness added to a checkpoint's vocabulary, which
    a LoRA-adapted model keeps trainable). ``set_model``: SETRec's set model
    (:mod:`backbones.set_decoding`) with ``n_query`` queries and a text vocabulary of
    ``vocab_size`` prompt tokens; a family without one raises NotImplementedError."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: ``Config`` overrides of a tiny, seconds-long model (contract tests, smoke configs)
    smoke_config: ClassVar[dict] = {}

    @classmethod
    @abc.abstractmethod
    def sequence_model(cls, config: Any, vocab_size: int, pad_id: int, eos_id: int,
                       new_token_ids: list[int] | tuple = ()) -> GenerativeBackbone: ...

    @classmethod
    def set_model(cls, config: Any, n_query: int, vocab_size: int, *, sparse_mask: bool = True,
                  shared_positions: bool = True, intra_item: str = "bidirectional") -> nn.Module:
        raise NotImplementedError(f"backbone {cls.name!r} has no set-identifier model (SETRec)")
