"""Hierarchical k-means semantic ids: a worked example of a genrec-bench identifier plugin.

Cluster the items' text embeddings into ``branching`` clusters with k-means, then each
cluster again, ``depth`` times; an item's identifier is its path of cluster indices, one token
range per level (``<k0_3> <k1_0> ...``), plus a last token numbering the items that share
the whole path. (The "semantic structured identifiers" of DSI, Tay et al. 2022, and the
hierarchical-clustering ids of several generative recommenders.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from identifiers.base import IdentifierScheme, ItemIdentifiers


@dataclass
class KMeansTreeConfig:
    branching: int = 16     # clusters per node
    depth: int = 2          # clustering levels before the numbering token


class KMeansTreeID(IdentifierScheme):
    """Hierarchical k-means over item text embeddings (+ a numbering token)."""

    kind = "codes"
    family = "codebook"
    Config = KMeansTreeConfig
    needs = frozenset({"text"})
    smoke_config = {"branching": 3, "depth": 2}

    def build(self) -> ItemIdentifiers:
        from sklearn.cluster import KMeans

        emb = self.features.text_embeddings()[1:]          # [n_items, d]; row 0 is padding
        n = len(emb)
        paths = np.zeros((n, self.config.depth), dtype=np.int64)
        groups = [np.arange(n)]
        for level in range(self.config.depth):
            nxt = []
            for idx in groups:
                k = min(self.config.branching, len(idx))
                labels = (KMeans(k, n_init=4, random_state=self.seed).fit_predict(emb[idx])
                          if k > 1 else np.zeros(len(idx), dtype=np.int64))
                paths[idx, level] = labels
                nxt += [idx[labels == c] for c in range(k)]
            groups = [g for g in nxt if len(g)]
        last = {}
        tokens = []
        for i in range(n):
            key = tuple(paths[i])
            j = last.get(key, 0)
            last[key] = j + 1
            tokens.append(tuple(f"<k{l}_{c}>" for l, c in enumerate(key)) + (f"<k{self.config.depth}_{j}>",))
        levels = [[f"<k{l}_{c}>" for c in range(self.config.branching)] for l in range(self.config.depth)]
        levels.append([f"<k{self.config.depth}_{j}>" for j in range(max(last.values()))])
        return ItemIdentifiers(self.name, "codes", tokens, vocab=[t for lv in levels for t in lv],
                               levels=levels, n_semantic_levels=self.config.depth,
                               stats={"largest_leaf": max(last.values())})
