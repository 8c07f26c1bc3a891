"""HGN: hierarchical gating networks for sequential recommendation.

Ma, Zhao, Tang, "Hierarchical Gating Networks for Sequential Recommendation", KDD 2019.
For user u with embedding p_u and the embeddings E = [e_1 .. e_L] of the last ``L`` items:
- feature gating: E_F = E ⊙ σ(W_g1 E + W_g2 p_u + b_g) (which latent features of each item
  matter to this user);
- instance gating: a_j = σ(w_g3 · e_F,j + (p_u W_g4)_j) with a position-specific W_g4 (d x L),
  and the group embedding s = Σ_j a_j e_F,j / Σ_j a_j (which items matter);
- prediction: y_k = p_u · q_k + s · q_k + Σ_j e_j · q_k + b_k, the last sum being the
  item-item product term; q_k and b_k are a separate output table and bias.
Left-padded positions (histories shorter than L) are excluded from the instance gates, so the
average runs over real items only; their embeddings are zero, so they add nothing to the
item-item product either.

Training. The windows of Caser (:func:`baselines.caser.sequence_windows`): the <= L training
items before position t predict the next ``T`` items, each paired with one negative drawn
uniformly from the items the user has no training interaction with; loss = BPR,
-log σ(y_target - y_negative), SUMMED over the batch as the authors' code does (with Adam the
sum only rescales the step, but it sets how strong the L2 weight decay 1e-3 is relative to the
data term); padded targets are masked out. Adam 1e-3, batch 4096 (the authors' code).

Paper defaults: L = 5, T = 3, d = 50.

``loss="ce"`` (not the paper's): softmax cross-entropy over ALL items for each of the window's
``T`` next items, averaged over the real targets, no negatives: the loss RecBole's HGN trains
with by default (its ``loss_type: CE``, one next item: ``T = 1``). It is here to separate the
loss from the model when our HGN is compared with RecBole's (results/parity/yelp-hgn); the
fidelity preset's ``hgn-ce`` entry runs it with RecBole's other settings (``T = 1``, no weight
decay). The output bias b_k is kept (RecBole's HGN has none; it is one more free parameter per
item, learnt like the others).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.caser import sequence_windows, training_pair_keys
from baselines.mf import sample_negatives
from benchmarks.errors import ConfigError
from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig


@dataclass
class HGNConfig(TrainConfig):
    L: int = 5
    T: int = 3
    dim: int = 50
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 1e-3     # λ (Adam's L2 penalty, as the authors' code)
    epochs: int = 200
    patience: int = 10
    loss: str = "bpr"              # "bpr" (the paper's, one negative per target) or "ce" (all items)


class HGNNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, cfg: HGNConfig):
        super().__init__()
        d, L = cfg.dim, cfg.L
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.gate_item = nn.Linear(d, d)               # W_g1, b_g
        self.gate_user = nn.Linear(d, d, bias=False)   # W_g2
        self.inst_item = nn.Parameter(torch.empty(d))  # w_g3
        self.inst_user = nn.Parameter(torch.empty(d, L))  # W_g4
        self.out = nn.Embedding(n_items + 1, d)        # q_k
        self.bias = nn.Embedding(n_items + 1, 1)       # b_k
        for emb in (self.user, self.item, self.out):
            nn.init.normal_(emb.weight, 0.0, 1.0 / emb.embedding_dim)
        nn.init.zeros_(self.bias.weight)
        nn.init.xavier_uniform_(self.inst_user)
        nn.init.xavier_uniform_(self.inst_item.view(d, 1))
        with torch.no_grad():
            self.item.weight[0].zero_()

    def user_parts(self, users: torch.Tensor, seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (p_u + s, Σ_j e_j), each [B, d]: the score of item k is their sum dotted with q_k."""
        real = (seq > 0).float()                                        # [B, L]
        e = self.item(seq)                                              # [B, L, d]
        p = self.user(users)                                            # [B, d]
        e_f = e * torch.sigmoid(self.gate_item(e) + self.gate_user(p).unsqueeze(1))
        a = torch.sigmoid(e_f @ self.inst_item + p @ self.inst_user) * real   # [B, L]
        s = (e_f * a.unsqueeze(-1)).sum(1) / a.sum(1, keepdim=True).clamp_min(1e-8)
        return p + s, e.sum(1)

    def forward(self, users: torch.Tensor, seq: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        ps, esum = self.user_parts(users, seq)
        return (torch.einsum("bd,bkd->bk", ps + esum, self.out(items))
                + self.bias(items).squeeze(-1))


@register_method("hgn")
class HGN(TorchRecommender):
    """HGN (see the module docstring for the gates, the windows and the loss)."""

    family = "traditional"
    smoke_config = {"epochs": 3, "dim": 8, "batch_size": 64}
    Config = HGNConfig

    def build(self) -> nn.Module:
        cfg = self.config
        if cfg.loss not in ("bpr", "ce"):
            raise ConfigError(f"{type(cfg).__qualname__}: field 'loss': expected 'bpr' (the paper's) or 'ce' "
                              f"(softmax over all items, RecBole's default), got {cfg.loss!r}")
        self.w_users, self.w_inputs, self.w_targets = sequence_windows(self.dataset.train, cfg.L, cfg.T)
        self.pos_keys = training_pair_keys(self.dataset.train, self.n_items)
        return HGNNet(self.dataset.n_users, self.n_items, cfg)

    def n_batches(self) -> int:
        return -(-len(self.w_users) // self.config.batch_size)

    def batches(self, rng):
        T = self.config.T
        for idx in self.shuffled_slices(rng, len(self.w_users)):
            u = self.w_users[idx]
            parts = (u, self.w_inputs[idx], self.w_targets[idx])
            if self.config.loss == "bpr":
                parts += (sample_negatives(rng, np.repeat(u, T), self.n_items, self.pos_keys).reshape(len(idx), T),)
            yield tuple(torch.from_numpy(x).to(self.device) for x in parts)

    def loss(self, batch) -> torch.Tensor:
        if self.config.loss == "ce":
            u, seq, tgt = batch
            logits = self._all_scores(u, seq)
            logits[:, 0] = float("-inf")          # the padding id is no item
            logp = F.log_softmax(logits.float(), dim=-1).gather(1, tgt)
            return -logp[tgt > 0].mean()
        u, seq, tgt, neg = batch
        y = self.module(u, seq, torch.cat([tgt, neg], dim=1))
        diff = y[:, :tgt.shape[1]] - y[:, tgt.shape[1]:]
        return F.softplus(-diff)[tgt > 0].sum()

    def score(self, batch: UserBatch) -> torch.Tensor:
        L = self.config.L
        hist = batch.history[:, -L:]
        if hist.shape[1] < L:
            hist = F.pad(hist, (L - hist.shape[1], 0))
        return self._all_scores(batch.users, hist)

    def _all_scores(self, users: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """y_k for every item k (column 0: padding), [B, n_items + 1]."""
        ps, esum = self.module.user_parts(users, seq)
        return (ps + esum) @ self.module.out.weight.T + self.module.bias.weight.T
