"""A tiny synthetic dataset with planted patterns, for tests and plugin contract checks.

``toy_raw(n_users=60, n_items=30, n_blocks=5)``: items are split into ``n_blocks`` contiguous
blocks; user u belongs to block u % n_blocks and walks that block in a cycle (item k is always
followed by the next item of its block), starting at a user-specific offset, for 8-14 steps.
So the next item is fully determined by the last one (a sequential model can learn it) and a
user's items all come from one block (a collaborative model can learn that). Items carry titles
and categories ("block b"), and timestamps increase along each sequence, users interleaved, so
the global chronological split also works.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks.data.dataset import Dataset
from benchmarks.data.preprocess import PreprocessOptions, preprocess
from benchmarks.data.raw import RawData

WORDS = ["red", "blue", "green", "amber", "violet", "silver", "golden", "black"]


def toy_raw(n_users: int = 60, n_items: int = 30, n_blocks: int = 5, seed: int = 0,
            n_late: int = 0) -> RawData:
    """``n_late`` extra items (ids n_items+1 ..) are each taken by 6 users AFTER every other
    interaction: under the global chronological split they are cold (never in training)."""
    rng = np.random.default_rng(seed)
    block = n_items // n_blocks
    rows = []
    for u in range(n_users):
        b = u % n_blocks
        start = int(rng.integers(block))
        length = int(rng.integers(8, 15))
        t0 = int(rng.integers(0, 1000))
        for step in range(length):
            item = b * block + (start + step) % block + 1
            rows.append((f"u{u}", str(item), float(t0 + 100 * step)))
    for j in range(n_late):
        for k in range(6):
            rows.append((f"u{(7 * j + k) % n_users}", str(n_items + j + 1), float(10 ** 6 + 10 * j + k)))
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    total = n_items + n_late
    items = pd.DataFrame({
        "title": [f"{WORDS[(i - 1) % len(WORDS)]} thing {i}" for i in range(1, total + 1)],
        "categories": [f"block {(i - 1) // block}" if i <= n_items else "late" for i in range(1, total + 1)],
    }, index=[str(i) for i in range(1, total + 1)], dtype=object)
    return RawData(inter, items, source="toy (benchmarks.data.toy)")


def toy_dataset(n_users: int = 60, n_items: int = 30, n_blocks: int = 5, seed: int = 0,
                split: str = "loo", max_history: int = 20) -> Dataset:
    """The toy data preprocessed like a real dataset (k-core 5, the given split)."""
    opts = PreprocessOptions(k_core=5, split=split, max_history=max_history)
    return preprocess(toy_raw(n_users, n_items, n_blocks, seed), "toy", opts)


def write_toy_recbole(folder, **kwargs) -> dict:
    """Write the toy data as RecBole atomic files (toy.inter, toy.item) into ``folder`` and
    return the matrix dataset entry that reads them."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = toy_raw(**kwargs)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t}" for u, i, t in raw.interactions.itertuples(index=False)]
    (folder / "toy.inter").write_text("\n".join(lines) + "\n")
    items = ["item_id:token\ttitle:token_seq\tcategories:token_seq"]
    items += [f"{i}\t{r.title}\t{r.categories.replace(' ', '_')}" for i, r in raw.items.iterrows()]
    (folder / "toy.item").write_text("\n".join(items) + "\n")
    return {"name": "toy", "format": "recbole", "path": str(folder)}
