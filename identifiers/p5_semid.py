"""P5-SemID: semantic indexing by the item's category path, then its index in the category.

Hua, Xu, Ge, Zhang, SIGIR-AP 2023 (semantic indexing, "SemID"): an item's identifier is its
path in the category tree followed by a number that tells the items of the leaf category
apart. It is the P5-CID mechanism (:func:`identifiers.p5_cid.tree_tokens`) over the category
tree instead of the co-occurrence clustering tree.

The path is the item's ``categories`` field split on ", " (the readers keep the categories of
the first path first, in order, e.g. "Beauty, Skin Care, Face, Creams & Moisturizers"),
truncated to ``max_depth`` levels; a category name at depth l becomes ``<c{l}_{k}>`` with k its
index among the names seen at that depth (sorted), and the position inside the leaf ``<p_{j}>``
(item-id order). Items without categories get the path ("(none)",). A dataset without a
categories field is an error: this scheme needs one.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers
from identifiers.p5_cid import token_order, tree_tokens


@dataclass
class SemIDConfig:
    field: str = "categories"
    max_depth: int = 4


@register_identifier("p5-semid")
class SemanticID(IdentifierScheme):
    """P5-SemID: category path + index inside the leaf category."""

    kind = "codes"
    family = "id"
    Config = SemIDConfig
    content_based = True        # the category path is item content

    def build(self) -> ItemIdentifiers:
        values = self.dataset.item_text.get(self.config.field)
        if values is None:
            raise ValueError(f"p5-semid: dataset {self.dataset.name!r} has no {self.config.field!r} "
                             f"field (it has {sorted(self.dataset.item_text)})")
        names = [tuple((v or "(none)").split(", ")[:self.config.max_depth]) for v in values]
        index = [dict() for _ in range(self.config.max_depth)]
        for depth in range(self.config.max_depth):
            for k, name in enumerate(sorted({p[depth] for p in names if len(p) > depth})):
                index[depth][name] = k
        paths = [tuple(index[d][name] for d, name in enumerate(p)) for p in names]
        tokens, levels = tree_tokens(paths)
        leaves: dict[tuple, int] = {}
        for p in paths:
            leaves[p] = leaves.get(p, 0) + 1
        return ItemIdentifiers(self.name, "codes", tokens,
                               vocab=sorted({t for lv in levels for t in lv}, key=token_order),
                               levels=levels, stats={"leaves": len(leaves),
                                                     "max_leaf_size": max(leaves.values()),
                                                     "categories_per_level": [len(ix) for ix in index]})
