"""SASRec: self-attentive sequential recommendation.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018. Item embeddings plus
LEARNED position embeddings, dropout, ``n_layers`` blocks of causal multi-head self-attention
and a point-wise feed-forward net, each with a residual connection and layer norm (the paper's
Eq. 4-6, layer norm applied to the block inputs as in the authors' code); the last position's
output scored against the (shared) item embedding table.

Loss. The paper trains with binary cross-entropy on one sampled negative per position. We use
full softmax cross-entropy over all items (``loss="ce"``, the default): it is what RecBole,
whose SASRec the LETTER authors' baseline numbers follow, trains with by default, and with full
ranking evaluation it is the stronger and less seed-sensitive choice. ``loss="bce"`` gives the
paper's objective with uniform negatives.

Training data. Training sequences are cut into windows of ``max_history + 1`` items from the end
backwards (``Dataset.training_windows``) and every position of a window is a training target
(teacher forcing); positions whose input is padding are ignored, so each target is predicted
from at least one history item and at most ``max_history`` — the common protocol's "every
prefix, history <= 20" up to the window boundaries.

The trained item embedding table (``item_embeddings()``) is what LETTER and SETRec use as CF
embeddings (``hidden`` = their dimension, 32 for LETTER).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from baselines.mf import sample_negatives
from benchmarks.config import build_config
from benchmarks.protocol import Context, UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SASRecConfig(TrainConfig):
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    inner: int = 256           # feed-forward width
    dropout: float = 0.3       # embedding / residual dropout
    attn_dropout: float = 0.3
    loss: str = "ce"           # "ce" (full softmax) or "bce" (paper: one negative per position)
    batch_size: int = 256
    lr: float = 1e-3
    epochs: int = 200
    patience: int = 10


class CausalBlock(nn.Module):
    """Pre-norm causal self-attention + feed-forward, both residual."""

    def __init__(self, hidden: int, heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(inner, hidden))
        self.drop = nn.Dropout(dropout)
        self.attn_dropout = attn_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SASRecNet(nn.Module):
    """``item_table`` (optional, [n_items + 1, d]): a FROZEN item table used instead of the
    learned one, through a learned linear projection when d != hidden (LETTER Table 3)."""

    def __init__(self, n_items: int, max_len: int, cfg: SASRecConfig, item_table=None):
        super().__init__()
        if cfg.hidden % cfg.n_heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by n_heads ({cfg.n_heads})")
        self.item = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(CausalBlock(cfg.hidden, cfg.n_heads, cfg.inner, cfg.dropout,
                                                cfg.attn_dropout) for _ in range(cfg.n_layers))
        self.ln = nn.LayerNorm(cfg.hidden)
        self.apply(self._init)
        self.fixed = item_table is not None
        if self.fixed:
            table = torch.as_tensor(item_table, dtype=torch.float32).clone()
            table[0] = 0.0
            self.register_buffer("fixed_items", table)
            self.proj = (nn.Identity() if table.shape[1] == cfg.hidden
                         else nn.Linear(table.shape[1], cfg.hidden, bias=False))
            self.item.weight.requires_grad_(False)

    def item_weight(self) -> torch.Tensor:
        """The item table used for inputs and scores, [n_items + 1, hidden]."""
        return self.proj(self.fixed_items) if self.fixed else self.item.weight

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, L] left-padded -> hidden states [B, L, d] (causal; padding keys masked)."""
        b, n = seq.shape
        pad = seq == 0
        x = self.item_weight()[seq] * (self.ln.normalized_shape[0] ** 0.5)
        x = x + self.pos(torch.arange(n, device=seq.device)).unsqueeze(0)
        x = self.drop(x) * (~pad).unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        # a position attends to earlier non-padding positions, and always to itself (no empty rows)
        mask = causal.unsqueeze(0) & (~pad).unsqueeze(1) | torch.eye(n, dtype=torch.bool, device=seq.device)
        mask = mask.unsqueeze(1)  # [B, 1, L, L]
        for blk in self.blocks:
            x = blk(x, mask) * (~pad).unsqueeze(-1)
        return self.ln(x)


@register_method("sasrec")
class SASRec(TorchRecommender):
    """SASRec (see the module docstring for the architecture, loss and training windows)."""

    family = "traditional"
    smoke_config = {"epochs": 3, "hidden": 16, "inner": 32, "n_layers": 1, "batch_size": 32}
    Config = SASRecConfig

    def __init__(self, config: SASRecConfig, ctx, item_table=None):
        self._item_table = item_table   # read by build(); see SASRecNet
        super().__init__(config, ctx)

    def build(self) -> nn.Module:
        if self.config.loss not in ("ce", "bce"):
            raise ValueError(f"SASRec loss must be 'ce' or 'bce', got {self.config.loss!r}")
        self.window_users, self.windows = self.dataset.training_windows(self.dataset.max_history)
        if self.config.loss == "bce":
            pu = np.concatenate([np.full(len(s), u, np.int64) for u, s in enumerate(self.dataset.train)])
            self._pos_keys = np.unique(pu * (self.n_items + 1) + np.concatenate(self.dataset.train))
        return SASRecNet(self.n_items, self.dataset.max_history, self.config, self._item_table)

    def n_batches(self) -> int:
        return -(-len(self.windows) // self.config.batch_size)

    def batches(self, rng):
        for idx in self.shuffled_slices(rng, len(self.windows)):
            win = torch.from_numpy(self.windows[idx]).to(self.device)
            neg = None
            if self.config.loss == "bce":
                users = np.repeat(self.window_users[idx], win.shape[1] - 1)
                neg = sample_negatives(rng, users, self.n_items, self._pos_keys)
                neg = torch.from_numpy(neg.reshape(len(idx), -1)).to(self.device)
            yield win, neg

    def loss(self, batch) -> torch.Tensor:
        win, neg = batch
        inp, tgt = win[:, :-1], win[:, 1:]
        valid = (inp > 0) & (tgt > 0)
        h = self.module(inp)[valid]                       # [P, d]
        emb = self.module.item_weight()
        if self.config.loss == "ce":
            logits = h @ emb.T
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, tgt[valid])
        pos = (h * emb[tgt[valid]]).sum(-1)
        ng = (h * emb[neg[valid]]).sum(-1)
        return (F.softplus(-pos) + F.softplus(ng)).mean()

    def user_states(self, history: torch.Tensor) -> torch.Tensor:
        return self.module(history)[:, -1]

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.user_states(batch.history) @ self.module.item_weight().T

    def item_embeddings(self) -> np.ndarray:
        """The trained item table [n_items + 1, hidden] (row 0 = padding): CF embeddings."""
        return self.module.item_weight().detach().cpu().numpy().copy()


def train_cf_embeddings(dataset, overrides: dict, *, device: str = "cpu", seed: int = 0,
                        progress: bool = True, validator=None) -> np.ndarray:
    """CF item embeddings: float32 [n_items + 1, hidden] (row 0 zeros), the item table of a
    SASRec (``overrides``: its config fields) trained on ``dataset`` with early stopping on
    ``validator``. The FeatureStore's CF trainer (``FeatureStore.cf_embeddings``)."""
    cfg = build_config(SASRecConfig, overrides)
    model = SASRec(cfg, Context(dataset=dataset, features=None, device=device, seed=seed, progress=progress))
    log.info("training SASRec (hidden=%d) for CF embeddings of %s", cfg.hidden, dataset.name)
    model.fit(validator)
    emb = model.item_embeddings().astype(np.float32)
    emb[0] = 0.0
    return emb
