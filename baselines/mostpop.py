"""MostPop: every user gets the items ranked by training interaction count (the sanity floor)."""

from __future__ import annotations

import torch

from benchmarks.protocol import Recommender, UserBatch
from benchmarks.registry import register_method


@register_method("mostpop")
class MostPop(Recommender):
    """Score = number of training interactions of the item; identical for every user."""

    family = "traditional"

    def fit(self, validator=None) -> dict:
        counts = self.dataset.item_train_counts()
        self.popularity = torch.as_tensor(counts, dtype=torch.float32, device=self.device)
        return {"epochs": [], "note": "counts of training interactions"}

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(batch), -1)
