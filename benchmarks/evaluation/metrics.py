"""Recall@K and NDCG@K from top-K lists, per user, with any number of targets per user.

For a user with target set T and ranked list r_1 .. r_K (best first):
    Recall@K = |{r_1..r_K} ∩ T| / |T|
    NDCG@K   = DCG@K / IDCG@K,  DCG@K = Σ_{i ≤ K, r_i ∈ T} 1 / log2(i + 1),
               IDCG@K = Σ_{i ≤ min(|T|, K)} 1 / log2(i + 1)
With one target (leave-one-out) Recall@K is the hit rate and NDCG@K = 1 / log2(rank + 1).
Repeated targets count once; item 0 (padding) is never a hit.
"""

from __future__ import annotations

import numpy as np
import torch


def pad_targets(targets: list[np.ndarray]) -> torch.Tensor:
    """Distinct targets per user, right-padded with 0 -> int64 [B, T_max]."""
    uniq = [np.unique(t[t > 0]) for t in targets]
    width = max((len(t) for t in uniq), default=0)
    out = np.zeros((len(uniq), max(width, 1)), dtype=np.int64)
    for row, t in enumerate(uniq):
        out[row, :len(t)] = t
    return torch.from_numpy(out)


def hit_matrix(topk: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """bool [B, K]: whether the item at each rank is one of the user's targets."""
    eq = topk.unsqueeze(2) == targets.unsqueeze(1)          # [B, K, T]
    return (eq & (targets.unsqueeze(1) > 0)).any(dim=2) & (topk > 0)


def recall_ndcg(topk: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> dict[tuple[str, int], np.ndarray]:
    """Per-user Recall@k and NDCG@k for each k -> {("recall", k): [B], ("ndcg", k): [B]}.

    ``topk``: [B, K] item ids best first (K >= max(ks)); ``targets``: [B, T] padded with 0.
    Users without any target get NaN (callers drop them).
    """
    if topk.shape[1] < max(ks):
        raise ValueError(f"top-K lists have {topk.shape[1]} items, fewer than K={max(ks)}")
    hits = hit_matrix(topk, targets).double()                          # [B, K]
    n_t = (targets > 0).sum(dim=1).double()                            # [B]
    discount = 1.0 / torch.log2(torch.arange(2, topk.shape[1] + 2, dtype=torch.float64))
    out = {}
    for k in ks:
        h = hits[:, :k]
        recall = h.sum(1) / n_t
        dcg = (h * discount[:k]).sum(1)
        ideal_len = torch.clamp(n_t, max=k).long()
        idcg = torch.cumsum(discount[:k], 0)[torch.clamp(ideal_len - 1, min=0)]
        ndcg = dcg / idcg
        nan = torch.full_like(recall, float("nan"))
        out[("recall", k)] = torch.where(n_t > 0, recall, nan).numpy()
        out[("ndcg", k)] = torch.where(n_t > 0, ndcg, nan).numpy()
    return out
