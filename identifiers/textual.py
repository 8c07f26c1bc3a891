"""Textual identifiers (BIGRec, P5-TID): the item's title IS its identifier.

Bao et al., "A Bi-Step Grounding Paradigm for Large Language Models in Recommendation Systems"
(BIGRec, 2023); Hua et al., SIGIR-AP 2023 (P5-TID). The backbone's own text tokenizer turns a
title into tokens (``kind = "text"``); decoding is either trie-constrained over the titles'
token sequences (P5-TID) or free generation grounded to the nearest item by text-embedding
distance (BIGRec) — both in the generative backbone, not here.

Titles come from the dataset's text fields through ``template`` (default ``"{title}"``). Items
without a title fall back to ``"item <raw id>"`` (FeatureStore's documented fallback); a dataset
with no text at all is an error. Several items can share a title (Beauty: 27 titles shared by 55
items; Yelp: chains, "Starbucks" x 149): the first keeps the plain title and the others get a
numbered suffix ``"<title> (2)"``, ``"(3)"`` ... in item-id order, so identifiers stay unique;
the stats count shared titles and suffixed items.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers


@dataclass
class TextualConfig:
    template: str = "{title}"
    max_chars: int | None = None    # truncate long titles (None keeps them whole)


@register_identifier("textual")
class TextualID(IdentifierScheme):
    """Item titles as identifiers; shared titles get a numbered suffix."""

    kind = "text"
    family = "textual"
    Config = TextualConfig
    needs = frozenset({"text"})

    def build(self) -> ItemIdentifiers:
        if self.features is None:
            raise ValueError("the textual identifier needs a FeatureStore (item text)")
        texts = self.features.item_texts(self.config.template)
        if self.config.max_chars:
            texts = [t[:self.config.max_chars].rstrip() for t in texts]
        taken: set[str] = set()
        out = []
        for t in texts:   # the first keeps its title; later ones get the next free " (k)"
            cand, k = t, 1
            while cand in taken:
                k += 1
                cand = f"{t} ({k})"
            taken.add(cand)
            out.append((cand,))
        counts = Counter(texts)
        shared = {t: c for t, c in counts.items() if c > 1}
        fallback = sum(t == f"item {rid}" for t, rid in zip(texts, self.dataset.item_ids))
        return ItemIdentifiers(self.name, "text", out, stats={
            "shared_titles": len(shared),
            "items_with_shared_title": sum(shared.values()),
            "items_suffixed": sum(o[0] != t for o, t in zip(out, texts)),
            "items_without_title": int(fallback),
            "mean_chars": round(sum(len(o[0]) for o in out) / max(1, len(out)), 1)})
