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
"""

from __future__ import annotations

import abc
from typing import Any

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

    LETTER Eq. 6: -Σ_t log softmax(p(y_t) / τ); τ < 1 weighs hard negatives more."""
    flat = (logits.float() / temperature).reshape(-1, logits.shape[-1])
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
