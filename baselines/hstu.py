"""HSTU: Hierarchical Sequential Transduction Units, as a traditional (item-ID) baseline.

Zhai et al., "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers for
Generative Recommendations", ICML 2024, Sec. 3 (Eqs. 1-3) and the public-data setting of
Sec. 4.1.1, as the authors' research code implements it (meta-recsys/generative-recommenders,
``research/``; configs ``configs/*/hstu-*-final.gin``). Plain PyTorch on LEFT-padded [B, L]
tensors; no fbgemm jagged ops, no Triton.

Input. An item table of width d (the hidden width), truncated-normal init (std 0.02, cut at
±2 std), id 0 = padding: x_t = √d · E[item_t] + P[t], dropout, zeroed at padding. P is a learned
absolute position table; t counts from the user's OLDEST kept item (the repo right-pads, so
position 0 is the first item: counting the valid items before a position gives the same index
under left padding). P ends up Xavier-normal: the repo draws it truncated-normal, then its
model-level ``reset_params`` re-initialises every parameter outside the HSTU stack and the item
table with Xavier normal.

Block (pre-norm, residual), ``n_blocks`` times:
  1. X̃ = LayerNorm(X) without affine parameters (eps 1e-6);
  2. U, V, Q, K = split(SiLU(X̃ W)), W one bias-free d x (2·h·dv + 2·h·dqk) matrix, N(0, 0.02);
  3. per head A = SiLU(QKᵀ + B_pos + B_time) / n, masked causally (lower triangle and the
     diagonal) and to valid keys. No softmax, no 1/√d;
  4. Y = X + W_o · Dropout(U ⊙ LayerNorm(A V)); heads concatenated (h·dv) before that
     LayerNorm (no affine); W_o: h·dv -> d with bias, Xavier-uniform weight, PyTorch's default
     bias init (the repo leaves it so).
Padded rows are zeroed after every block (W_o's bias would make them non-zero). The user
embedding is the L2-normalised output at the last position (eps 1e-6).

Relative attention bias (one module per block, shared by the heads):
  - position: B_pos[i, j] = w[N - 1 + j - i], 2N - 1 learned scalars, N(0, 0.02). N is FIXED by
    the configuration, not by the batch's width (a Toeplitz matrix in the configured length:
    RecBole3.0's port reads N from the input width, so its offsets move with the padding);
  - time (where the dataset has timestamps and ``time_bias`` is on): one learned scalar per
    bucket b = clamp(⌊ln max(|t_q(i) - t_j|, 1) / 0.301⌋, 0, 128) (129 scalars; t in seconds),
    where t_q(i) is the time of query i (``time_query`` below) and t_j that of key j.

Lengths. The suite's histories are capped at ``max_history`` (20) items. The repo's padded
length counts the history and its output slots (200 + 11 = 211 on ML-1M); ours counts the
history and the next item's slot: N = max_history + 1, used for the position table, the
relative offsets and (unless ``attn_norm`` is set) the normaliser n. n is never the batch's or
the user's own length.

Query time (``time_query``; the paper times each query by the item it predicts):
  - ``"self"`` (default, leak-free): every query, in training and at ranking, is timed by its
    own item, so B_time encodes the time from each earlier interaction to the latest known one.
    At ranking the last position is timed by the most recent HISTORY timestamp; nothing after
    the history is read, and training sees the same quantity ranking does.
  - ``"next"`` (the repo): query i is timed by item i + 1, so at ranking the last position reads
    the timestamp of the HELD-OUT interaction being predicted. The harness hands that timestamp
    over (``UserBatch.target_time``) only to a model configured so (``reads_target_time``).
Datasets without timestamps (LETTER's Beauty / Yelp files) run with the position bias only; the
fit log's ``notes`` says which bias ran.

Objective. Every position t predicts item t + 1; logit = cos(u_t, e_item) / τ (τ = 0.05; the
target and negative embeddings are L2-normalised rows of the same item table, eps 1e-6).
``loss="sampled"`` (the paper's sampled softmax): ``n_negatives`` (128, the ML configs; Books
512) negatives drawn uniformly with replacement from all items, independently per position; a
negative equal to the positive gets logit -5e4; the CE of the positive, averaged over valid
positions. ``loss="full"``: softmax CE over all items (what the suite's SASRec trains with).
The run records which (``loss`` in the config, and the fit log's ``notes``).

Training rows (``train_rows``). The repo trains on one row per user, the most recent 200 items
plus the target, which covers nearly the whole sequence of an ML-1M user. At the suite's cap of
20 the same rule would drop most training targets, so the default ``"windows"`` cuts each
training sequence into windows of max_history + 1 items (``Dataset.training_windows``, as the
suite's SASRec): every training target is predicted once. ``"last"`` keeps only each user's
most recent window (the repo's row). Only training interactions are ever read.

Optimiser and selection: AdamW, lr 1e-3, betas (0.9, 0.98), weight decay 0, no warm-up or
schedule, batch 128 (the repo). The repo trains a fixed 101 epochs (Books: 201) and reports per
epoch; the suite's protocol early-stops on validation NDCG@10 and restores the best state
(``patience``). Evaluation follows the suite (full ranking, history items rankable); the repo
removes history items (``filter_invalid_ids``).

Defaults are the ML-1M config (d 50, 2 blocks, 1 head, dqk = dv = 50, dropout 0.2, 128
negatives). The paper preset uses the Books config on Amazon-style data (d 64, 4 blocks, 4 heads,
dqk = dv = 16, dropout 0.5, 512 negatives, 201 epochs): no small-Amazon config was published.
Not ported: attention dropout (unused on this path), ``concat_ua`` (off), TF32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.errors import ConfigError
from benchmarks.protocol import UserBatch
from benchmarks.registry import register_method
from benchmarks.training import TorchRecommender, TrainConfig

LOSSES = ("sampled", "full")
TIME_QUERIES = ("self", "next")
TRAIN_ROWS = ("windows", "last")
#: the logit of a sampled negative that equals the positive (the repo's value)
SAME_AS_POSITIVE = -5e4


@dataclass
class HSTUConfig(TrainConfig):
    hidden: int = 50               # d: item embedding width = model width
    n_blocks: int = 2
    n_heads: int = 1
    dqk: int = 50                  # per-head query / key width
    dv: int = 50                   # per-head value (and U) width
    dropout: float = 0.2           # on the input and before W_o
    loss: str = "sampled"          # "sampled" (paper) | "full" (softmax over all items)
    n_negatives: int = 128         # sampled softmax: uniform negatives per position
    temperature: float = 0.05      # τ of the cosine logits
    time_bias: bool = True         # relative time bias where the dataset has timestamps
    time_query: str = "self"       # "self" (leak-free) | "next" (repo: reads the held-out time)
    time_buckets: int = 128        # buckets 0..time_buckets of ⌊ln Δ / bucket_width⌋
    bucket_width: float = 0.301
    attn_norm: float | None = None  # n in SiLU(.)/n; None = max_history + 1
    train_rows: str = "windows"    # "windows" (every training target) | "last" (repo: one row per user)
    eps: float = 1e-6              # LayerNorm and L2-normalisation epsilon
    betas: tuple[float, float] = (0.9, 0.98)
    epochs: int = 101
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10

    def validate(self) -> None:
        """Raise ConfigError naming the first field the model cannot run with."""
        choices = {"loss": LOSSES, "time_query": TIME_QUERIES, "train_rows": TRAIN_ROWS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"hstu {key}: expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, key)!r}")
        for key in ("hidden", "n_blocks", "n_heads", "dqk", "dv", "n_negatives", "time_buckets",
                    "batch_size"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ConfigError(f"hstu {key}: expected a positive integer, got {getattr(self, key)!r}")
        for key in ("temperature", "bucket_width", "eps"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"hstu {key}: expected a positive number, got {getattr(self, key)!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"hstu dropout: expected a value in [0, 1), got {self.dropout!r}")
        if self.attn_norm is not None and not self.attn_norm > 0:
            raise ConfigError(f"hstu attn_norm: expected None or a positive number, got {self.attn_norm!r}")
        if len(self.betas) != 2:
            raise ConfigError(f"hstu betas: expected two numbers, got {self.betas!r}")


# --------------------------------------------------------------------------- building blocks
def time_bucket(delta: torch.Tensor, width: float = 0.301, n_buckets: int = 128) -> torch.Tensor:
    """Bucket of each time difference (seconds): clamp(⌊ln max(|Δ|, 1) / width⌋, 0, n_buckets)."""
    b = torch.floor(torch.log(delta.abs().clamp_min(1.0)) / width)
    return b.clamp(0, n_buckets).long()


class RelativeBias(nn.Module):
    """One block's relative attention bias: a learned scalar per position offset j - i in a
    FIXED length ``n_positions`` (2N - 1 of them), plus, with ``n_buckets``, a learned scalar per
    time bucket (n_buckets + 1 of them). Both N(0, 0.02)."""

    def __init__(self, n_positions: int, n_buckets: int | None):
        super().__init__()
        self.n_positions = n_positions
        self.pos_w = nn.Parameter(torch.empty(2 * n_positions - 1).normal_(0.0, 0.02))
        self.time_w = (nn.Parameter(torch.empty(n_buckets + 1).normal_(0.0, 0.02))
                       if n_buckets is not None else None)

    def position(self, length: int) -> torch.Tensor:
        """[length, length]: B_pos[i, j] = w[N - 1 + j - i]."""
        if length > self.n_positions:
            raise ValueError(f"sequence length {length} exceeds the configured {self.n_positions} positions")
        i = torch.arange(length, device=self.pos_w.device)
        return self.pos_w[self.n_positions - 1 + i[None, :] - i[:, None]]

    def forward(self, length: int, buckets: torch.Tensor | None) -> torch.Tensor:
        """[1 or B, length, length]; ``buckets`` [B, length, length] (None: position only)."""
        bias = self.position(length).unsqueeze(0)
        if self.time_w is not None:
            if buckets is None:
                raise ValueError("this bias has a time part: pass the time buckets")
            bias = bias + self.time_w[buckets]
        return bias


class HSTUBlock(nn.Module):
    """One HSTU layer (see the module docstring, steps 1-4)."""

    def __init__(self, d: int, heads: int, dqk: int, dv: int, dropout: float, eps: float):
        super().__init__()
        self.d, self.heads, self.dqk, self.dv, self.eps = d, heads, dqk, dv, eps
        self.uvqk = nn.Parameter(torch.empty(d, 2 * heads * dv + 2 * heads * dqk).normal_(0.0, 0.02))
        self.out = nn.Linear(heads * dv, d)
        nn.init.xavier_uniform_(self.out.weight)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor, norm: float) -> torch.Tensor:
        """x [B, L, d]; mask bool [B, L, L] (query, key); bias [1 or B, L, L]."""
        b, n, _ = x.shape
        h = self.heads
        proj = F.silu(F.layer_norm(x, (self.d,), eps=self.eps) @ self.uvqk)
        u, v, q, k = proj.split([h * self.dv, h * self.dv, h * self.dqk, h * self.dqk], dim=-1)
        scores = torch.einsum("bnhd,bmhd->bhnm", q.view(b, n, h, self.dqk), k.view(b, n, h, self.dqk))
        att = F.silu(scores + bias.unsqueeze(1)) / norm * mask.unsqueeze(1)
        av = torch.einsum("bhnm,bmhd->bnhd", att, v.view(b, n, h, self.dv)).reshape(b, n, h * self.dv)
        y = u * F.layer_norm(av, (h * self.dv,), eps=self.eps)
        return x + self.out(self.drop(y))


class HSTUNet(nn.Module):
    """Item table, absolute positions, ``n_blocks`` HSTU blocks with their relative biases."""

    def __init__(self, n_items: int, n_positions: int, cfg: HSTUConfig, use_time: bool):
        super().__init__()
        d = cfg.hidden
        self.d, self.n_positions, self.eps = d, n_positions, cfg.eps
        self.width, self.n_buckets = cfg.bucket_width, cfg.time_buckets
        self.norm = float(cfg.attn_norm if cfg.attn_norm is not None else n_positions)
        self.use_time = use_time
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        nn.init.trunc_normal_(self.item.weight, std=0.02, a=-0.04, b=0.04)
        self.pos = nn.Embedding(n_positions, d)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(HSTUBlock(d, cfg.n_heads, cfg.dqk, cfg.dv, cfg.dropout, cfg.eps)
                                    for _ in range(cfg.n_blocks))
        self.bias = nn.ModuleList(RelativeBias(n_positions, cfg.time_buckets if use_time else None)
                                  for _ in range(cfg.n_blocks))

    def item_table(self) -> torch.Tensor:
        """L2-normalised item embeddings [n_items + 1, d] (the targets' and negatives' side)."""
        return F.normalize(self.item.weight, dim=-1, eps=self.eps)

    def forward(self, seq: torch.Tensor, key_times: torch.Tensor | None = None,
                query_times: torch.Tensor | None = None) -> torch.Tensor:
        """seq [B, L] left-padded item ids -> hidden states [B, L, d] (0 at padding). With the
        time bias: ``key_times`` [B, L] (each item's timestamp) and ``query_times`` [B, L]
        (each query's time), float64 seconds."""
        b, n = seq.shape
        if n > self.n_positions:
            raise ValueError(f"sequence length {n} exceeds the configured {self.n_positions} positions")
        valid = seq > 0
        pos = (valid.long().cumsum(1) - 1).clamp_min(0)        # 0 = the oldest kept item
        x = self.item(seq) * self.d ** 0.5 + self.pos(pos)
        keep = valid.unsqueeze(-1).to(x.dtype)
        x = self.drop(x) * keep
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        mask = causal.unsqueeze(0) & valid.unsqueeze(1)
        buckets = None
        if self.use_time:
            if key_times is None or query_times is None:
                raise ValueError("HSTU with the time bias needs key_times and query_times")
            delta = query_times.unsqueeze(2).double() - key_times.unsqueeze(1).double()
            buckets = time_bucket(delta, self.width, self.n_buckets)
        for block, rel in zip(self.blocks, self.bias):
            x = block(x, mask, rel(n, buckets), self.norm) * keep
        return x


def sampled_softmax_loss(h: torch.Tensor, table: torch.Tensor, positives: torch.Tensor,
                         negatives: torch.Tensor, temperature: float,
                         dense: bool | None = None) -> torch.Tensor:
    """The paper's sampled softmax: h [P, d] (normalised), table [n_items + 1, d] (normalised),
    positives [P], negatives [P, R]; a negative equal to its positive gets logit -5e4; mean CE
    of the positive.

    Two routes to the same logits (equal values and gradients): gathering each position's R
    negative rows (R·d floats copied per position, and scattered back in the backward pass),
    or one matrix product with the whole table and a gather of the sampled columns (n·d
    multiply-adds per position). The product is used where the catalogue is at most R·d items
    (e.g. ML-100K's 1,349 < 128 · 50): a dense product moves far less memory per item than the
    gather, which only wins on catalogues much larger than the sample (Books' 700k).
    ``dense`` forces a route (None: by that size rule)."""
    if dense is None:
        dense = table.shape[0] <= negatives.shape[1] * table.shape[1]
    if dense:
        logits = h @ table.T / temperature
        pos = logits.gather(1, positives.unsqueeze(1))
        neg = logits.gather(1, negatives)
    else:
        pos = (h * table[positives]).sum(-1, keepdim=True) / temperature
        neg = torch.einsum("pd,prd->pr", h, table[negatives]) / temperature
    neg = neg.masked_fill(negatives == positives.unsqueeze(1), SAME_AS_POSITIVE)
    return -F.log_softmax(torch.cat([pos, neg], 1), dim=1)[:, 0].mean()


def full_softmax_loss(h: torch.Tensor, table: torch.Tensor, positives: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Softmax cross-entropy over all items 1..n (row 0 of ``table`` is padding)."""
    return F.cross_entropy(h @ table[1:].T / temperature, positives - 1)


# --------------------------------------------------------------------------- the recommender
@register_method("hstu")
class HSTU(TorchRecommender):
    """HSTU (Zhai et al., ICML 2024): pointwise SiLU attention with relative position / time bias."""

    family = "traditional"
    Config = HSTUConfig
    smoke_config = {"epochs": 3, "hidden": 16, "dqk": 8, "dv": 8, "n_heads": 2, "n_blocks": 1,
                    "n_negatives": 16, "batch_size": 32}

    def build(self) -> nn.Module:
        cfg = self.config
        cfg.validate()
        ds = self.dataset
        self.use_time = bool(cfg.time_bias and ds.has_timestamps)
        self.length = ds.max_history
        users, self.windows = ds.training_windows(self.length)
        self.window_times = ds.training_window_times(self.length) if self.use_time else None
        if cfg.train_rows == "last":       # each user's most recent window comes first
            first = np.r_[True, users[1:] != users[:-1]] if len(users) else np.zeros(0, bool)
            self.windows = self.windows[first]
            if self.window_times is not None:
                self.window_times = self.window_times[first]
        return HSTUNet(self.n_items, self.length + 1, cfg, self.use_time)

    @property
    def reads_target_time(self) -> bool:
        return self.use_time and self.config.time_query == "next"

    def notes(self) -> str:
        """One sentence: which loss and which attention bias ran."""
        cfg = self.config
        loss = (f"sampled softmax over {cfg.n_negatives} uniform negatives per position"
                if cfg.loss == "sampled" else f"full softmax over all {self.n_items} items")
        if self.use_time:
            when = ("each query timed by its own item, leak-free" if cfg.time_query == "self" else
                    "each query timed by the item it predicts: the last position reads the "
                    "held-out interaction's timestamp")
            bias = f"relative position and time bias ({when})"
        elif cfg.time_bias:
            bias = "relative position bias only (the dataset has no timestamps)"
        else:
            bias = "relative position bias only (time_bias off)"
        return f"HSTU trained with {loss}; {bias}."

    def fit(self, validator=None) -> dict:
        log = super().fit(validator)
        log["notes"] = self.notes()
        return log

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.module.parameters(), lr=self.config.lr,
                                 betas=tuple(self.config.betas), weight_decay=self.config.weight_decay)

    def n_batches(self) -> int:
        return -(-len(self.windows) // self.config.batch_size)

    def batches(self, rng):
        cfg = self.config
        for idx in self.shuffled_slices(rng, len(self.windows)):
            win = torch.from_numpy(self.windows[idx]).to(self.device)
            times = (torch.from_numpy(self.window_times[idx]).to(self.device)
                     if self.window_times is not None else None)
            neg = None
            if cfg.loss == "sampled":
                neg = rng.integers(1, self.n_items + 1, size=(len(idx), self.length, cfg.n_negatives))
                neg = torch.from_numpy(neg).to(self.device)
            yield win, times, neg

    def _query_times(self, key_times: torch.Tensor, next_times: torch.Tensor) -> torch.Tensor:
        """Each query's time: its own item's (``self``) or the next item's (``next``)."""
        return next_times if self.config.time_query == "next" else key_times

    def loss(self, batch) -> torch.Tensor:
        win, times, neg = batch
        inp, tgt = win[:, :-1], win[:, 1:]
        key_t = query_t = None
        if times is not None:
            key_t, query_t = times[:, :-1], self._query_times(times[:, :-1], times[:, 1:])
        valid = (inp > 0) & (tgt > 0)
        h = F.normalize(self.module(inp, key_t, query_t)[valid], dim=-1, eps=self.config.eps)
        table = self.module.item_table()
        if self.config.loss == "full":
            return full_softmax_loss(h, table, tgt[valid], self.config.temperature)
        return sampled_softmax_loss(h, table, tgt[valid], neg[valid], self.config.temperature)

    def user_states(self, batch: UserBatch) -> torch.Tensor:
        """L2-normalised output at the last position [B, d]."""
        key_t = query_t = None
        if self.use_time:
            if batch.times is None:
                raise ValueError("hstu was trained with the time bias (the dataset has timestamps): "
                                 "the UserBatch must carry the history's times "
                                 "(benchmarks.evaluation.user_batch builds it)")
            key_t = batch.times.to(self.device)
            nxt = key_t
            if self.config.time_query == "next":
                if batch.target_time is None:
                    raise ValueError("hstu time_query='next' needs UserBatch.target_time "
                                     "(the held-out interaction's timestamp)")
                nxt = torch.cat([key_t[:, 1:], batch.target_time.to(key_t).unsqueeze(1)], 1)
            query_t = self._query_times(key_t, nxt)
        h = self.module(batch.history.to(self.device), key_t, query_t)[:, -1]
        return F.normalize(h, dim=-1, eps=self.config.eps)

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.user_states(batch) @ self.module.item_table().T / self.config.temperature
