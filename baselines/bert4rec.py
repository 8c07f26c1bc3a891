"""BERT4Rec: sequential recommendation with a bidirectional Transformer and the Cloze task.

Sun, Liu, Wu, Pei, Lin, Ou, Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019.

Architecture (the paper's Sec. 3): item embeddings (ids 1..N; 0 = padding; N + 1 = the
[mask] token) plus learned position embeddings, layer norm and dropout, then ``n_layers``
post-norm Transformer blocks with UNMASKED (bidirectional) multi-head self-attention over the
non-padding positions and a GELU feed-forward net; the output layer is the paper's Eq. 7:
P(v) = softmax(GELU(h W_P + b_P) E^T + b_O) with a layer norm after the GELU (as the authors'
code) and the input item table E shared with the output.

Training (Cloze). Training sequences are cut into windows of ``max_history + 1`` items from
the end backwards (``Dataset.training_windows``). Every epoch each window is masked afresh:
max(1, round(ρ n)) of its n items, chosen uniformly, are replaced by [mask] (the authors'
scripts always use [mask], no random/keep replacements); with probability ``last_mask_prob``
a window is instead masked at its LAST item only — the paper's extra samples that match the
prediction setting (the authors' data generator adds one such sample per 10 Cloze copies, a
share of about 0.1). Loss: full softmax cross-entropy over all items at the masked positions.

Prediction: the user's last ``max_history`` items with [mask] appended (length
``max_history + 1``); the [mask] position's distribution scores all items.

Defaults: d = 64, 2 layers, 2 heads, inner 4d = 256 (the paper); ρ = 0.2 and dropout 0.2 /
attention dropout 0.2 are the authors' ML-1m settings (their Beauty settings are ρ = 0.6,
dropout 0.5, attention dropout 0.2: the fidelity and paper presets use those on Beauty/Yelp).
Optimiser: AdamW with decoupled weight decay 0.01 (not on biases and layer norms) and gradient
clipping at norm 1, as BERT. Learning rate 1e-3 instead of the paper's 1e-4: the paper trains
400k steps with linear decay; here training is bounded by epochs and early stopping on the
validation NDCG@10, where 1e-4 does not converge in a practical number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig


@dataclass
class BERT4RecConfig(TrainConfig):
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    mask_prob: float = 0.2         # ρ: share of a window's items replaced by [mask]
    last_mask_prob: float = 0.1    # share of windows masked at their last item only
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01     # decoupled (AdamW), not on biases / layer norms
    grad_clip: float | None = 1.0
    epochs: int = 200
    patience: int = 10


class BidirectionalBlock(nn.Module):
    """Post-norm Transformer encoder block (BERT): self-attention over non-padding keys."""

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden))
        self.ln2 = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = self.ln1(x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d))))
        return self.ln2(x + self.drop(self.ff(x)))


class BERT4RecNet(nn.Module):
    def __init__(self, n_items: int, max_len: int, cfg: BERT4RecConfig):
        super().__init__()
        if cfg.hidden % cfg.n_heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by n_heads ({cfg.n_heads})")
        self.n_items = n_items
        self.mask_id = n_items + 1
        self.item = nn.Embedding(n_items + 2, cfg.hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, cfg.hidden)
        self.ln = nn.LayerNorm(cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(BidirectionalBlock(cfg.hidden, cfg.n_heads, cfg.inner, cfg.dropout,
                                                       cfg.attn_dropout) for _ in range(cfg.n_layers))
        self.head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.LayerNorm(cfg.hidden))
        self.out_bias = nn.Parameter(torch.zeros(n_items + 1))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):  # BERT: truncated normal, std 0.02
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, n] left-padded (may hold [mask]) -> hidden states [B, n, d]."""
        n = seq.shape[1]
        x = self.item(seq) + self.pos(torch.arange(self.pos.num_embeddings - n, self.pos.num_embeddings,
                                                   device=seq.device)).unsqueeze(0)
        x = self.drop(self.ln(x))
        key_mask = (seq > 0)[:, None, None, :]            # [B, 1, 1, n]
        for blk in self.blocks:
            x = blk(x, key_mask)
        return x

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states [..., d] -> scores over ids 0..n_items [..., n_items + 1] (0 = -inf)."""
        out = self.head(h) @ self.item.weight[:self.n_items + 1].T + self.out_bias
        out[..., 0] = float("-inf")
        return out


def cloze_mask(windows: np.ndarray, rng: np.random.Generator, mask_prob: float,
               last_mask_prob: float) -> np.ndarray:
    """bool [W, n]: which positions of the left-padded ``windows`` to replace by [mask].

    Each row masks max(1, round(mask_prob * n_real)) of its real items chosen uniformly; with
    probability ``last_mask_prob`` a row masks only its last item instead."""
    real = windows > 0
    n_real = real.sum(1)
    k = np.maximum(1, np.rint(mask_prob * n_real)).astype(np.int64)
    keys = rng.random(windows.shape)
    keys[~real] = 2.0                                     # padding sorts last, never chosen
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    mask = ranks < k[:, None]
    last = rng.random(len(windows)) < last_mask_prob
    mask[last] = False
    mask[last, -1] = True                                 # windows are left-padded: last = real
    return mask


@register_method("bert4rec")
class BERT4Rec(TorchRecommender):
    """BERT4Rec (see the module docstring for the architecture, the Cloze task and defaults)."""

    family = "traditional"
    smoke_config = {"epochs": 3, "hidden": 16, "inner": 32, "n_layers": 1, "batch_size": 32}
    Config = BERT4RecConfig

    def build(self) -> nn.Module:
        self.max_len = self.dataset.max_history + 1
        _, self.windows = self.dataset.training_windows(self.dataset.max_history)
        return BERT4RecNet(self.n_items, self.max_len, self.config)

    def optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.module.named_parameters():
            (no_decay if p.ndim < 2 or name.endswith("bias") else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": self.config.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=self.config.lr)

    def n_batches(self) -> int:
        return -(-len(self.windows) // self.config.batch_size)

    def batches(self, rng):
        for idx in self.shuffled_slices(rng, len(self.windows)):
            win = self.windows[idx]
            mask = cloze_mask(win, rng, self.config.mask_prob, self.config.last_mask_prob)
            inp = np.where(mask, self.n_items + 1, win)
            yield tuple(torch.from_numpy(x).to(self.device) for x in (inp, win, mask))

    def loss(self, batch) -> torch.Tensor:
        inp, win, mask = batch
        h = self.module(inp)[mask]                           # [P, d]
        return F.cross_entropy(self.module.logits(h), win[mask])

    def score(self, batch: UserBatch) -> torch.Tensor:
        hist = batch.history[:, -(self.max_len - 1):]
        if hist.shape[1] < self.max_len - 1:
            hist = F.pad(hist, (self.max_len - 1 - hist.shape[1], 0))
        seq = torch.cat([hist, torch.full_like(hist[:, :1], self.n_items + 1)], dim=1)
        return self.module.logits(self.module(seq)[:, -1])
