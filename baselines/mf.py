"""BPR-MF: matrix factorisation trained with Bayesian Personalised Ranking.

Rendle, Freudenthaler, Gantner, Schmidt-Thieme. "BPR: Bayesian Personalized Ranking from
Implicit Feedback", UAI 2009. score(u, i) = <p_u, q_i>; loss = -log σ(score(u, i) - score(u, j))
for a training pair (u, i) and an item j drawn uniformly from the items u has not interacted
with in training, plus an L2 penalty on the embeddings of the batch (the paper's λ).
Defaults: 64-d embeddings, Adam 1e-3, batch 2048 (RecBole's BPR defaults; the paper uses SGD
with tuned λ and does not fix a dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig


@dataclass
class MFConfig(TrainConfig):
    dim: int = 64
    reg: float = 1e-4          # λ: L2 weight on the batch's embeddings
    batch_size: int = 2048
    lr: float = 1e-3
    epochs: int = 300
    patience: int = 10


class _MF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        nn.init.xavier_normal_(self.user.weight)
        nn.init.xavier_normal_(self.item.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()


def sample_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int,
                     positive_keys: np.ndarray) -> np.ndarray:
    """Uniform items in 1..n_items that are not a training item of the user; ``positive_keys``
    = sorted ``user * (n_items + 1) + item`` of the training pairs. Redraws collisions (a few
    rounds: collisions are rare when the data are sparse)."""
    neg = rng.integers(1, n_items + 1, size=len(users))
    for _ in range(20):
        keys = users * (n_items + 1) + neg
        pos = np.searchsorted(positive_keys, keys)
        hit = (pos < len(positive_keys)) & (positive_keys[np.minimum(pos, len(positive_keys) - 1)] == keys)
        if not hit.any():
            break
        neg[hit] = rng.integers(1, n_items + 1, size=int(hit.sum()))
    return neg


class BPRPairs:
    """Training (user, item) pairs with one uniformly sampled unseen negative each: the
    batches of the BPR models (MF, LightGCN). Call :meth:`_init_pairs` in ``build``."""

    def _init_pairs(self) -> None:
        ds = self.dataset
        self.pairs_u = np.concatenate([np.full(len(s), u, np.int64) for u, s in enumerate(ds.train)])
        self.pairs_i = np.concatenate([np.asarray(s, np.int64) for s in ds.train])
        self.pos_keys = np.unique(self.pairs_u * (self.n_items + 1) + self.pairs_i)

    def n_batches(self) -> int:
        return -(-len(self.pairs_u) // self.config.batch_size)

    def batches(self, rng):
        for idx in self.shuffled_slices(rng, len(self.pairs_u)):
            u, i = self.pairs_u[idx], self.pairs_i[idx]
            j = sample_negatives(rng, u, self.n_items, self.pos_keys)
            yield tuple(torch.from_numpy(x).to(self.device) for x in (u, i, j))


@register_method("mf")
class MF(BPRPairs, TorchRecommender):
    """BPR matrix factorisation (see the module docstring)."""

    family = "traditional"
    sequential = False          # ranks without reading the sequence (the refit protocol option)
    smoke_config = {"epochs": 3, "dim": 8, "batch_size": 256}
    Config = MFConfig

    def build(self) -> nn.Module:
        self._init_pairs()
        return _MF(self.dataset.n_users, self.n_items, self.config.dim)

    def loss(self, batch) -> torch.Tensor:
        u, i, j = batch
        pu, qi, qj = self.module.user(u), self.module.item(i), self.module.item(j)
        x = (pu * (qi - qj)).sum(-1)
        reg = (pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()) / len(u)
        return -nn.functional.logsigmoid(x).mean() + self.config.reg * reg

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.module.user(batch.users) @ self.module.item.weight.T
