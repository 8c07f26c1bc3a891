"""Set-identifier decoding, the part every backbone shares: histories whose items are SETS of
continuous tokens, and query-guided simultaneous generation (SETRec, Lin et al., SIGIR 2025).

This module knows vectors and token ids only (the set tokenizer that makes the item vectors is
:mod:`identifiers.setrec`; the harness wires the two in :mod:`benchmarks.methods.setrec`). The
backbone-specific set models live with their backbone and use what is here:
:class:`backbones.t5.SetT5` and :class:`backbones.causal.SetCausalLM` (built through
``Backbone.set_model``).

Layout. A user's history is flattened into one sequence::

    [prefix tokens] + for each history item its n tokens + [suffix tokens] (+ [queries]: causal LM)

- Shared positions: every token of an item gets ONE position, the item's, so nothing tells the
  model the order of the tokens inside an item. Items are numbered after the prefix by their
  rank among the user's REAL items; padding items are masked out and take no position, so left
  padding shifts nothing. The suffix follows the last real item.
- T5: the encoder reads the sequence (bidirectional) with a relative position bias computed from
  those per-token positions; the decoder's inputs are the ``n_query`` learnable query vectors
  (see :class:`backbones.t5.SetT5`).
- Decoder-only (Qwen2 / LLaMA): a 4-D additive mask (:func:`causal_set_mask`), causal ACROSS
  items and bidirectional INSIDE an item; the queries come after the suffix, see the whole
  history and, among the queries, only themselves; they share one position (the one after the
  suffix).

ONE forward pass yields the ``n_query`` output vectors [B, n_query, d]: no step-by-step decoding,
no beam search. :func:`ground` scores every item for every query with one batched matrix product.

Ablations (constructor flags of the set models): ``sparse_mask=False`` -> T5's queries attend
to each other (plain full attention in the decoder) and the decoder-only LM gets a plain causal
mask over the whole sequence (tokens of an item and the queries see their predecessors only);
``shared_positions=False`` -> every token its own position; ``intra_item="self"``
(decoder-only) -> a token sees only itself among its item's tokens (what the SETRec authors'
Qwen code does; the paper's Figure 5 and our default make an item's tokens see each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
