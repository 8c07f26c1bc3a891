"""Caser: convolutional sequence embedding recommendation.

Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018. The last ``L`` items' embeddings form an L x d "image". Horizontal
filters of heights h = 1..L (``n_h`` of each, width d) slide over it; each filter's outputs go
through ReLU and are max-pooled over positions (union-level patterns of h consecutive items).
``n_v`` vertical filters of shape L x 1 take weighted sums of the L rows (point-level
patterns). Both outputs are concatenated, dropped out (0.5) and mapped to a d-vector z by a
fully-connected layer with ReLU; the user's embedding P_u (trained from training sequences
only) is concatenated: y_i = W2_i . [z, P_u] + b2_i, with a separate output table W2.

Training. Every window of the user's TRAINING sequence: the ``L`` items before position t
(left-padded with 0 when fewer exist) predict the next ``T`` items t .. t+T-1 (the paper's
"skip" behaviour); every t >= 1 starts a window, so each training item is a target up to T
times and every target has at least one history item. Targets past the end of the sequence
are padding and masked out of the loss. Loss: the paper's binary cross-entropy with sampled
negatives, -log σ(y_target) - log(1 - σ(y_neg)), with ``n_neg`` negatives per target drawn
uniformly from the items the user has no training interaction with (the authors' code: 3 per
target); L2 via Adam's weight decay (1e-6), Adam 1e-3, batch 512, as the authors' code.

Paper defaults: L = 5, T = 3, d = 50, n_v = 4, n_h = 16, dropout 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.mf import sample_negatives
from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig


@dataclass
class CaserConfig(TrainConfig):
    L: int = 5                 # history window (Markov order)
    T: int = 3                 # targets predicted from each window
    dim: int = 50
    n_v: int = 4               # vertical filters
    n_h: int = 16              # horizontal filters per height 1..L
    dropout: float = 0.5
    n_neg: int = 3             # negatives per target
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1e-6
    epochs: int = 50
    patience: int = 10


def sequence_windows(train: list[np.ndarray], L: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users [W], inputs [W, L] left-padded, targets [W, T] right-padded with 0) from the
    training sequences only: one window per position t >= 1 of each sequence, input = the
    <= L items before t, targets = items t .. t+T-1 (those that exist)."""
    users, inputs, targets = [], [], []
    for u, seq in enumerate(train):
        n = len(seq)
        if n < 2:
            continue
        seq = np.asarray(seq, np.int64)
        padded = np.concatenate([np.zeros(L, np.int64), seq, np.zeros(T, np.int64)])
        t = np.arange(1, n)                                  # target start positions
        inputs.append(padded[(t[:, None] + np.arange(L)[None, :])])          # seq[t-L:t]
        targets.append(padded[(t[:, None] + L + np.arange(T)[None, :])])    # seq[t:t+T]
        users.append(np.full(n - 1, u, np.int64))
    if not users:
        return np.zeros(0, np.int64), np.zeros((0, L), np.int64), np.zeros((0, T), np.int64)
    return np.concatenate(users), np.concatenate(inputs), np.concatenate(targets)


def training_pair_keys(train: list[np.ndarray], n_items: int) -> np.ndarray:
    """Sorted ``user * (n_items + 1) + item`` of every training pair (for negative sampling)."""
    users = np.concatenate([np.full(len(s), u, np.int64) for u, s in enumerate(train)])
    items = np.concatenate([np.asarray(s, np.int64) for s in train])
    return np.unique(users * (n_items + 1) + items)


class CaserNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: CaserConfig):
        super().__init__()
        d, L = cfg.dim, cfg.L
        self.L = L
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        # the convolutions written as matrix products (same maps as Conv2d, far faster on CPU):
        # vertical filter v: Σ_l w_v[v, l] E_l + b_v[v]; horizontal filter of height h: a linear
        # map of h consecutive rows (flattened) at every position, then max over positions
        self.w_v = nn.Parameter(torch.empty(cfg.n_v, L))
        self.b_v = nn.Parameter(torch.zeros(cfg.n_v))
        self.conv_h = nn.ModuleList(nn.Linear(h * d, cfg.n_h) for h in range(1, L + 1))
        nn.init.kaiming_uniform_(self.w_v, a=5 ** 0.5)   # Conv2d's default initialisation
        self.fc = nn.Linear(cfg.n_v * d + cfg.n_h * L, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Embedding(n_items + 1, 2 * d)   # W2
        self.bias = nn.Embedding(n_items + 1, 1)      # b2
        for emb in (self.user, self.item, self.out):  # N(0, 1/d) as the authors' code
            nn.init.normal_(emb.weight, 0.0, 1.0 / emb.embedding_dim)
        nn.init.zeros_(self.bias.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def user_vector(self, users: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """[B] users, [B, L] left-padded items -> x = [z, P_u], [B, 2d]."""
        e = self.item(seq)                                  # [B, L, d]
        o_v = (torch.einsum("bld,vl->bvd", e, self.w_v) + self.b_v[:, None]).flatten(1)  # [B, n_v d]
        o_h = []
        for h, conv in enumerate(self.conv_h, start=1):     # rows p .. p+h-1 -> [B, L-h+1, h d]
            rows = e.unfold(1, h, 1).transpose(2, 3).flatten(2)
            o_h.append(F.relu(conv(rows)).amax(dim=1))      # max-pool over positions: [B, n_h]
        z = F.relu(self.fc(self.drop(torch.cat([o_v, *o_h], dim=1))))
        return torch.cat([z, self.user(users)], dim=1)

    def forward(self, users: torch.Tensor, seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of ``items`` [B, K] -> [B, K]."""
        x = self.user_vector(users, seq)
        return torch.einsum("bd,bkd->bk", x, self.out(items)) + self.bias(items).squeeze(-1)


@register_method("caser")
class Caser(TorchRecommender):
    """Caser (see the module docstring for the architecture, windows and loss)."""

    family = "traditional"
    smoke_config = {"epochs": 3, "dim": 8, "n_h": 4, "n_v": 2, "batch_size": 64}
    Config = CaserConfig

    def build(self) -> nn.Module:
        cfg = self.config
        self.w_users, self.w_inputs, self.w_targets = sequence_windows(self.dataset.train, cfg.L, cfg.T)
        self.pos_keys = training_pair_keys(self.dataset.train, self.n_items)
        return CaserNet(self.dataset.n_users, self.n_items, cfg)

    def n_batches(self) -> int:
        return -(-len(self.w_users) // self.config.batch_size)

    def batches(self, rng):
        n_neg = self.config.n_neg * self.config.T
        for idx in self.shuffled_slices(rng, len(self.w_users)):
            u = self.w_users[idx]
            neg = sample_negatives(rng, np.repeat(u, n_neg), self.n_items, self.pos_keys).reshape(len(idx), n_neg)
            yield tuple(torch.from_numpy(x).to(self.device)
                        for x in (u, self.w_inputs[idx], self.w_targets[idx], neg))

    def loss(self, batch) -> torch.Tensor:
        u, seq, tgt, neg = batch
        y = self.module(u, seq, torch.cat([tgt, neg], dim=1))
        y_pos, y_neg = y[:, :tgt.shape[1]], y[:, tgt.shape[1]:]
        valid = tgt > 0
        return F.softplus(-y_pos)[valid].mean() + F.softplus(y_neg).mean()

    def score(self, batch: UserBatch) -> torch.Tensor:
        hist = batch.history[:, -self.config.L:]
        if hist.shape[1] < self.config.L:
            hist = F.pad(hist, (self.config.L - hist.shape[1], 0))
        x = self.module.user_vector(batch.users, hist)
        return x @ self.module.out.weight.T + self.module.bias.weight.T
