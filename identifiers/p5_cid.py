"""P5-CID: collaborative indexing by recursive spectral clustering of item co-occurrence.

Hua, Xu, Ge, Zhang, "How to Index Item IDs for Recommendation Foundation Models", SIGIR-AP
2023 (collaborative indexing, "CID"). The co-occurrence graph is built from TRAINING sequences
only: the weight of items (i, j) is the number of users whose training sequence holds both (a
binary user x item matrix B gives A = BᵀB; each item also gets a self-loop of weight 1 so that
items without co-occurrences — cold items — keep a non-zero degree). Spectral clustering splits
the items into ``n_clusters`` (20) clusters, recursively, until a cluster holds at most
``max_leaf`` items (500 in the P5 study); the identifier is the path of cluster indices
followed by the item's position inside its leaf.

Tokens: level l's cluster k is ``<c{l}_{k}>`` (each level its own range, as in the codebook
schemes); the leaf position j is ``<p_{j}>``. Leaves sit at different depths, so identifiers
have different lengths (the harness appends an end token). Where spectral clustering cannot
split a cluster that is still too large (all items in one label, e.g. a disconnected block),
the cluster is cut into ``n_clusters`` equal chunks by item id instead; the stats count those.
Positions inside a leaf follow item id order. Spectral clustering (:func:`spectral_labels`) is
scikit-learn's ``SpectralClustering(affinity="precomputed", assign_labels="cluster_qr")`` with
the seed, computed with a Lanczos eigen-solver instead of scikit-learn's shift-invert one (whose
sparse LU factorisation fills in to a near-dense matrix: 351 s for 10k items, cubic-like
growth); the eigenvectors, and so the labels, are the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers

log = logging.getLogger(__name__)


@dataclass
class CIDConfig:
    n_clusters: int = 20
    max_leaf: int = 500

    def __post_init__(self):
        if self.n_clusters < 2 or self.max_leaf < 1:
            raise ValueError(f"n_clusters must be >= 2 and max_leaf >= 1, got {self.n_clusters}, {self.max_leaf}")


def cooccurrence_graph(train: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """A [n_items, n_items] (0-based item = id - 1): users sharing both items, plus self-loops."""
    rows = np.concatenate([np.full(len(s), u) for u, s in enumerate(train)]) if train else np.zeros(0)
    cols = np.concatenate(train) - 1 if train else np.zeros(0)
    b = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(train), n_items))
    b.data[:] = 1.0                     # binary: repeats inside a sequence count once
    a = (b.T @ b).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    return (a + sp.identity(n_items, format="csr")).tocsr()


def spectral_labels(affinity: sp.spmatrix, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster labels [n] of the nodes of a symmetric sparse ``affinity`` graph: what
    scikit-learn's ``SpectralClustering(n_clusters, affinity="precomputed",
    assign_labels="cluster_qr", random_state=seed)`` computes, step by step: the normalised
    Laplacian L (scipy's, diagonal entries set to 1 as scikit-learn's embedding does), the
    eigenvectors of its ``n_clusters`` smallest eigenvalues, each row divided by the node's
    degree term, then cluster_qr. The eigenvectors come from ARPACK's Lanczos iteration on L
    itself (``which="SA"``, machine-precision tolerance, scikit-learn's starting vector: uniform
    in [-1, 1] from ``RandomState(seed)``) instead of the shift-invert mode scikit-learn uses,
    which factorises L + 1e-5 I with a sparse LU whose fill-in makes it near-dense (time and
    memory superlinear in the items). Each Lanczos step is one sparse product, linear in the
    graph's edges. The subspace agrees with the shift-invert one to round-off, and cluster_qr
    depends on the subspace only, so the labels are the same. One rule is made explicit: a
    node without an edge to another node of the graph (a self-loop at most) has an embedding
    row that is zero up to round-off, so its label was decided by the solver's round-off; its
    row is set to exactly zero, which puts it in cluster_qr's first cluster."""
    from scipy.sparse.csgraph import laplacian
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster._spectral import cluster_qr

    adj = sp.csr_matrix(affinity, dtype=np.float64)
    lap, dd = laplacian(adj, normed=True, return_diag=True)
    lap = sp.coo_matrix(lap)
    lap.data[lap.row == lap.col] = 1.0
    v0 = np.random.RandomState(seed).uniform(-1, 1, adj.shape[0])
    _, vectors = eigsh(lap.tocsr(), k=n_clusters, which="SA", tol=0, v0=v0)
    embedding = vectors / dd[:, None]
    row = np.repeat(np.arange(adj.shape[0]), np.diff(adj.indptr))
    edge = (adj.data != 0) & (adj.indices != row)      # stored, non-zero, off the diagonal
    embedding[np.bincount(row[edge], minlength=adj.shape[0]) == 0] = 0.0
    return cluster_qr(embedding)


def tree_tokens(paths: list[tuple[int, ...]]) -> tuple[list[tuple[str, ...]], list[list[str]]]:
    """Cluster paths -> tokens: path element at depth l -> ``<c{l}_{k}>``, then the position in
    the leaf (items with the same path, in input order) -> ``<p_{j}>``. Returns the tokens per
    item and the token range of each position (the "levels")."""
    leaf_pos: dict[tuple, int] = {}
    tokens = []
    for path in paths:
        j = leaf_pos.get(path, 0)
        leaf_pos[path] = j + 1
        tokens.append(tuple(f"<c{l}_{k}>" for l, k in enumerate(path)) + (f"<p_{j}>",))
    depth = max(len(t) for t in tokens)
    levels = []
    for pos in range(depth):
        seen = {t[pos] for t in tokens if len(t) > pos}
        levels.append(sorted(seen, key=token_order))
    return tokens, levels


def token_order(tok: str) -> tuple:
    head, _, num = tok.strip("<>").rpartition("_")
    return (head, int(num)) if num.isdigit() else (head, 0)


@register_identifier("p5-cid")
class CollaborativeID(IdentifierScheme):
    """P5-CID: recursive spectral clustering of the training co-occurrence graph."""

    kind = "codes"
    family = "id"
    Config = CIDConfig
    smoke_config = {"n_clusters": 3, "max_leaf": 8}

    def _split(self, graph: sp.csr_matrix, idx: np.ndarray, rng_seed: int) -> np.ndarray:
        n = min(self.config.n_clusters, len(idx))
        sub = graph[idx][:, idx]
        try:
            labels = spectral_labels(sub, n, rng_seed)
        except Exception as exc:  # noqa: BLE001  (eigen-solver failures on degenerate graphs)
            log.warning("spectral clustering of %d items failed (%s): chunking", len(idx), exc)
            labels = np.zeros(len(idx), dtype=np.int64)
        # relabel by first appearance so cluster indices are stable and contiguous
        labels = np.asarray(labels, dtype=np.int64)
        _, first = np.unique(labels, return_index=True)
        order = np.argsort(first)
        remap = np.empty(int(labels.max()) + 1, dtype=np.int64)
        remap[labels[first[order]]] = np.arange(len(order))
        return remap[labels]

    def build(self) -> ItemIdentifiers:
        import warnings

        n = self.dataset.n_items
        graph = cooccurrence_graph(self.dataset.train, n)
        paths: list[tuple[int, ...]] = [()] * n
        chunked = 0
        stack = [(np.arange(n), ())]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # "graph is not fully connected"
            while stack:
                idx, prefix = stack.pop()
                if len(idx) <= self.config.max_leaf:
                    for i in idx:
                        paths[i] = prefix
                    continue
                labels = self._split(graph, idx, self.seed + len(prefix))
                if labels.max() == 0:            # no split happened: cut into equal chunks
                    chunked += 1
                    labels = np.arange(len(idx)) * min(self.config.n_clusters, len(idx)) // len(idx)
                for k in range(int(labels.max()) + 1):
                    stack.append((idx[labels == k], prefix + (k,)))
        tokens, levels = tree_tokens(paths)
        depths = [len(p) for p in paths]
        leaves = {}
        for p in paths:
            leaves[p] = leaves.get(p, 0) + 1
        return ItemIdentifiers(self.name, "codes", tokens, vocab=sorted({t for lv in levels for t in lv}, key=token_order),
                               levels=levels, stats={
                                   "max_depth": int(max(depths)), "mean_depth": float(np.mean(depths)),
                                   "leaves": len(leaves), "max_leaf_size": int(max(leaves.values())),
                                   "chunked_clusters": chunked, "graph_edges": int(graph.nnz - n)})
