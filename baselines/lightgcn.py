"""LightGCN: simplified graph convolution for collaborative filtering.

He, Deng, Wang, Li, Zhang, Wang, "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020. Users and items are the nodes of the bipartite graph
of the TRAINING interactions (each distinct (user, item) pair one undirected edge; validation
and test interactions are never read). With adjacency A = [[0, R], [R^T, 0]] and degrees D,
the propagation matrix is Â = D^-1/2 A D^-1/2 (nodes of degree 0 — items seen only in held-out
interactions — get no edges: their rows stay zero). Layer k: E^(k+1) = Â E^(k), no feature
transform, no non-linearity, no self-loop; the final embeddings are the layer mean
E = Σ_k α_k E^(k) with α_k = 1 / (K + 1); score(u, i) = <e_u, e_i>. Â is a torch sparse
matrix (CSR) and each layer one sparse-dense product.

Loss: BPR, -log σ(score(u, i) - score(u, j)) for every training pair (u, i) with j drawn
uniformly from the items u has no training interaction with, plus λ/2 (‖e_u^(0)‖² +
‖e_i^(0)‖² + ‖e_j^(0)‖²) / batch on the ego (layer-0) embeddings of the batch (the paper's
Eq. 15 and the authors' code). Every training step propagates through the whole graph.

Scoring caches the propagated embeddings (one propagation per evaluation pass instead of one
per batch of users); ``train()`` and ``eval()`` drop the cache, and it is also recomputed
whenever a parameter has changed since it was built (e.g. ``load_state_dict``).

Paper defaults: d = 64, K = 3, Adam 1e-3, λ = 1e-4, batch 2048, embeddings N(0, 0.1²)
(the authors' PyTorch code).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.mf import BPRPairs
from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig


@dataclass
class LightGCNConfig(TrainConfig):
    dim: int = 64
    n_layers: int = 3          # K
    reg: float = 1e-4          # λ on the batch's ego embeddings
    batch_size: int = 2048
    lr: float = 1e-3
    epochs: int = 1000
    patience: int = 10


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the user-item bipartite graph as a coalesced sparse COO tensor of
    shape [n_users + n_items, n_users + n_items]; user u is node u, item i (1..n_items) is
    node n_users + i - 1. Repeated (u, i) pairs count once."""
    keys = np.unique(users.astype(np.int64) * (n_items + 1) + items.astype(np.int64))
    u, i = keys // (n_items + 1), keys % (n_items + 1)
    n = n_users + n_items
    rows = np.concatenate([u, n_users + i - 1])
    cols = np.concatenate([n_users + i - 1, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.zeros(n)
    inv_sqrt[deg > 0] = deg[deg > 0] ** -0.5
    vals = inv_sqrt[rows] * inv_sqrt[cols]
    adj = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])),
                                  torch.from_numpy(vals).float(), (n, n),
                                  check_invariants=True)
    return adj.coalesce()


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a SYMMETRIC sparse CSR matrix A; the gradient A^T g = A g reuses A (torch's
    own sparse backward transposes A every step, several times slower on CPU)."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, ctx.adj @ grad


class LightGCNNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, n_layers: int, adj: torch.Tensor):
        super().__init__()
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)   # row 0 = padding, not a node
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.register_buffer("adj", adj, persistent=False)                  # COO (inspection)
        with warnings.catch_warnings():   # "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            csr = adj.to_sparse_csr()
        self.register_buffer("adj_csr", csr, persistent=False)  # for the products

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> final user embeddings [n_users, d], item embeddings [n_items + 1, d] (row 0 = 0)."""
        e = torch.cat([self.user.weight, self.item.weight[1:]])
        total = e
        for _ in range(self.n_layers):
            e = _SymmetricSpMM.apply(self.adj_csr, e)
            total = total + e
        total = total / (self.n_layers + 1)
        users, items = total[:self.n_users], total[self.n_users:]
        return users, F.pad(items, (0, 0, 1, 0))


@register_method("lightgcn")
class LightGCN(BPRPairs, TorchRecommender):
    """LightGCN (see the module docstring for the graph, the loss and the scoring cache)."""

    family = "traditional"
    sequential = False          # ranks without reading the sequence (the refit protocol option)
    smoke_config = {"epochs": 3, "dim": 8, "batch_size": 256}
    Config = LightGCNConfig

    def build(self) -> nn.Module:
        ds = self.dataset
        self._init_pairs()
        adj = normalized_adjacency(ds.n_users, self.n_items, self.pairs_u, self.pairs_i)
        self._cache: tuple | None = None
        return LightGCNNet(ds.n_users, self.n_items, self.config.dim, self.config.n_layers, adj)

    def loss(self, batch) -> torch.Tensor:
        u, i, j = batch
        users, items = self.module.propagate()
        eu = users[u]
        x = (eu * (items[i] - items[j])).sum(-1)
        m = self.module
        reg = (m.user(u).pow(2).sum() + m.item(i).pow(2).sum() + m.item(j).pow(2).sum()) / (2 * len(u))
        return -F.logsigmoid(x).mean() + self.config.reg * reg

    # ------------------------------------------------------------------ scoring with a cache
    def _version(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.module.parameters())

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (users, items); cached while the module is in eval mode and unchanged."""
        if self.module.training:
            with torch.no_grad():
                return self.module.propagate()
        if self._cache is None or self._cache[0] != self._version():
            with torch.no_grad():
                self._cache = (self._version(), *self.module.propagate())
        return self._cache[1], self._cache[2]

    def train(self) -> "LightGCN":
        self._cache = None
        return super().train()

    def eval(self) -> "LightGCN":
        self._cache = None
        return super().eval()

    def score(self, batch: UserBatch) -> torch.Tensor:
        users, items = self.final_embeddings()
        return users[batch.users] @ items.T
