"""ID identifiers (P5): numeric item ids, and the single-token ID variant.

Hua, Xu, Ge, Zhang, "How to Index Item IDs for Recommendation Foundation Models", SIGIR-AP 2023
(the P5 indexing study), and Geng et al., "Recommendation as Language Processing (P5)", RecSys
2022.

- ``id`` writes item numbers as DIGIT tokens (``<0>`` .. ``<9>``, one vocabulary shared by all
  positions; the harness appends an end token, since "12" is a prefix of "123"). Indexing:
  ``sequential`` numbers items 1, 2, 3 ... in order of first appearance when the TRAINING
  sequences are read user by user (the P5 study's sequential indexing: items that co-occur in a
  user's sequence get nearby numbers and share digit prefixes); items that never occur in
  training are numbered after them, in id order. ``random`` numbers items by a seeded random
  permutation (the study's random indexing). P5 tokenises numbers with SentencePiece into
  multi-digit pieces; single digits are the choice here (a fixed, scheme-owned vocabulary of 10
  tokens, independent of any backbone's tokenizer).
- ``id-token`` gives every item one new token ``<item_k>`` (k = its sequential or random number):
  the "single-token identifier" of the SETRec paper's taxonomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers

DIGITS = [f"<{d}>" for d in range(10)]


@dataclass
class IDConfig:
    indexing: str = "sequential"     # "sequential" | "random"

    def __post_init__(self):
        if self.indexing not in ("sequential", "random"):
            raise ValueError(f"indexing must be 'sequential' or 'random', got {self.indexing!r}")


def item_numbers(dataset, indexing: str, seed: int) -> np.ndarray:
    """int64 [n_items + 1]: the number (1..N) each item gets; index 0 unused."""
    n = dataset.n_items
    if indexing == "random":
        order = np.random.default_rng(seed).permutation(n) + 1
    else:
        seen: dict[int, None] = {}
        for seq in dataset.train:
            for item in seq.tolist():
                seen.setdefault(item, None)
        order = np.array(list(seen) + [i for i in range(1, n + 1) if i not in seen], dtype=np.int64)
    numbers = np.zeros(n + 1, dtype=np.int64)
    numbers[order] = np.arange(1, n + 1)
    return numbers


@register_identifier("id")
class NumericID(IdentifierScheme):
    """P5 ID identifiers: item numbers as digit tokens (sequential or random indexing)."""

    kind = "codes"
    family = "id"
    Config = IDConfig

    def build(self) -> ItemIdentifiers:
        numbers = item_numbers(self.dataset, self.config.indexing, self.seed)
        tokens = [tuple(DIGITS[int(d)] for d in str(numbers[i])) for i in range(1, self.dataset.n_items + 1)]
        return ItemIdentifiers(self.name, "codes", tokens, vocab=list(DIGITS),
                               stats={"indexing": self.config.indexing,
                                      "max_length": max(len(t) for t in tokens)})


@register_identifier("id-token")
class SingleTokenID(IdentifierScheme):
    """One new vocabulary token per item (sequential or random numbering)."""

    kind = "codes"
    family = "id"
    Config = IDConfig

    def build(self) -> ItemIdentifiers:
        numbers = item_numbers(self.dataset, self.config.indexing, self.seed)
        vocab = [f"<item_{k}>" for k in range(1, self.dataset.n_items + 1)]
        tokens = [(vocab[numbers[i] - 1],) for i in range(1, self.dataset.n_items + 1)]
        return ItemIdentifiers(self.name, "codes", tokens, vocab=vocab, levels=[vocab],
                               n_semantic_levels=1, stats={"indexing": self.config.indexing})
