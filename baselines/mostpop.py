"""MostPop: every user gets the items ranked by training interaction count (the sanity floor)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.protocol import Recommender, UserBatch
from benchmarks.registry import register_method


@register_method("mostpop")
class MostPop(Recommender):
    """Score = number of training interactions of the item; identical for every user.

    Ties (many items share a count; every cold item has count 0) are broken by a seeded random
    jitter in [0, 0.5), never by item id: the harness's deterministic lower-id-first tie rule
    would otherwise make MostPop's cold-only row depend on how ids were assigned (by first
    appearance, i.e. time), not on popularity. Among tied items MostPop is a random ranking,
    which is what its cold row should measure."""

    family = "traditional"
    sequential = False          # ranks without reading the sequence (the refit protocol option)

    def fit(self, validator=None) -> dict:
        counts = self.dataset.item_train_counts().astype(np.float64)
        jitter = np.random.default_rng(self.ctx.seed).random(len(counts)) * 0.5
        self.popularity = torch.as_tensor(counts + jitter, dtype=torch.float32, device=self.device)
        return {"epochs": [], "notes": "counts of training interactions, ties broken at random (seeded)"}

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(batch), -1)
