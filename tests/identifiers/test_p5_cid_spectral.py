"""P5-CID's spectral clustering: the Lanczos eigen-solver gives scikit-learn's labels.

:func:`identifiers.p5_cid.spectral_labels` replaced scikit-learn's ``SpectralClustering``
(shift-invert ARPACK, a sparse LU of the Laplacian) by Lanczos on the Laplacian itself. Old
and new are compared here on graphs where the clustering problem has one answer (the
eigenvalue after the n_clusters-th is larger than it): the labels, and a whole recursive
build's identifiers, must be the same. Nodes without an edge inside a (sub)graph, whose label
the old solver's round-off decided, now get cluster_qr's first cluster; the reference does the
same for them (and is the exact old call where there are none)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import identifiers.p5_cid as p5
from benchmarks.data.synthetic import SyntheticSpec, build_catalog


def _sklearn_labels(affinity, n_clusters, seed):
    """What P5-CID called before: scikit-learn's spectral clustering (shift-invert ARPACK), with
    the one rule the new code makes explicit: a node without an edge (its embedding row is
    round-off) gets an exactly zero row."""
    from sklearn.cluster import SpectralClustering
    from sklearn.cluster._spectral import cluster_qr
    from sklearn.manifold._spectral_embedding import _spectral_embedding

    adj = sp.csr_matrix(affinity, dtype=np.float64)
    isolated = (adj - sp.diags(adj.diagonal())).getnnz(axis=1) == 0
    if not isolated.any():   # the exact call P5-CID made
        return SpectralClustering(n_clusters=n_clusters, affinity="precomputed", random_state=seed,
                                  assign_labels="cluster_qr").fit_predict(adj)
    emb = _spectral_embedding(adj, n_components=n_clusters, random_state=np.random.RandomState(seed),
                              drop_first=False)
    emb[isolated] = 0.0
    return cluster_qr(emb)


def _first_appearance(labels):
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(labels.max() + 1, dtype=np.int64)
    rank[labels[np.sort(first)]] = np.arange(len(first))
    return rank[labels]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_catalog(SyntheticSpec(1000), tmp_path_factory.mktemp("synthetic")).dataset()


def test_labels_equal_scikit_learns_on_the_graph_and_on_subgraphs(catalog):
    graph = p5.cooccurrence_graph(catalog.train, catalog.n_items)
    rng = np.random.default_rng(0)
    cases = [(np.arange(catalog.n_items), 20, 0), (np.sort(rng.choice(catalog.n_items, 400, replace=False)), 5, 3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for idx, k, seed in cases:
            sub = graph[idx][:, idx]
            new, old = p5.spectral_labels(sub, k, seed), _sklearn_labels(sub, k, seed)
            assert np.array_equal(_first_appearance(np.asarray(new)), _first_appearance(np.asarray(old)))


def test_recursive_build_gives_the_identifiers_of_the_scikit_learn_solver(catalog, monkeypatch):
    cfg = p5.CIDConfig(n_clusters=10, max_leaf=60)
    new = p5.CollaborativeID(cfg, catalog, seed=0).build()
    monkeypatch.setattr(p5, "spectral_labels", _sklearn_labels)
    old = p5.CollaborativeID(cfg, catalog, seed=0).build()
    assert new.stats["max_depth"] >= 2            # the recursion went below the root
    assert new.tokens == old.tokens and new.stats == old.stats
