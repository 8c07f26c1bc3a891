"""The preprocessed dataset every method sees: contiguous ids, chronological splits, samples.

Conventions (shared by every plugin):
- items are numbered 1..n_items; 0 is PADDING and never a real item;
- users are numbered 0..n_users-1;
- ``train[u]`` is user u's chronological training sequence (uncapped);
- ``valid[u]`` / ``test[u]`` are the user's target items for that split (one each under
  leave-one-out; any number, possibly none, under a global temporal split);
- histories fed to models are capped at ``max_history`` (20) most recent items and LEFT-padded
  with 0 (most recent item last): validation history = training items, test history =
  training + validation items;
- ``train_times[u]`` / ``valid_times[u]`` / ``test_times[u]``: the timestamp (float64 seconds)
  of every interaction, aligned with ``train`` / ``valid`` / ``test``; all three None where the
  data has no timestamps (the row order is then the only time information).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _pack(seqs: list[np.ndarray], dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.concatenate(seqs).astype(dtype) if seqs and indptr[-1] else np.zeros(0, dtype)
    return flat, indptr


def _unpack(flat: np.ndarray, indptr: np.ndarray) -> list[np.ndarray]:
    return [flat[indptr[i]:indptr[i + 1]] for i in range(len(indptr) - 1)]


def left_pad(seqs: list[np.ndarray], length: int, dtype=np.int64) -> np.ndarray:
    """Stack the last ``length`` items of each sequence, left-padded with 0 -> [B, length]
    (int64 by default; ``dtype=np.float64`` for timestamps)."""
    out = np.zeros((len(seqs), length), dtype=dtype)
    for row, s in enumerate(seqs):
        s = s[-length:] if length else s[:0]
        if len(s):
            out[row, length - len(s):] = s
    return out


@dataclass
class Dataset:
    """A preprocessed, split dataset. Build one with :func:`benchmarks.data.load_dataset`."""

    name: str
    n_items: int
    item_ids: list[str]                 # raw id of item i at index i-1
    user_ids: list[str]                 # raw id of user u at index u
    train: list[np.ndarray]
    valid: list[np.ndarray]
    test: list[np.ndarray]
    item_text: dict[str, list[str | None]] = field(default_factory=dict)  # field -> value per item (index i-1)
    max_history: int = 20
    split: str = "loo"                  # "loo" | "ratio" | "fixed"
    info: dict = field(default_factory=dict)   # source, options, cache key, counts ...
    train_times: list[np.ndarray] | None = None   # seconds per interaction, aligned with train
    valid_times: list[np.ndarray] | None = None
    test_times: list[np.ndarray] | None = None

    def __post_init__(self):
        given = [getattr(self, f"{s}_times") is not None for s in ("train", "valid", "test")]
        if any(given) and not all(given):
            raise ValueError("train_times, valid_times and test_times: give all three or none")
        if all(given):
            for s in ("train", "valid", "test"):
                seqs, times = getattr(self, s), getattr(self, f"{s}_times")
                if len(times) != len(seqs) or any(len(t) != len(q) for t, q in zip(times, seqs)):
                    raise ValueError(f"{s}_times must hold one timestamp per interaction of {s}")

    # ----------------------------------------------------------------- basic facts
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def has_timestamps(self) -> bool:
        return self.train_times is not None

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.train) + sum(len(s) for s in self.valid)
                   + sum(len(s) for s in self.test))

    def item_train_counts(self) -> np.ndarray:
        """Training interaction count per item id -> int64 [n_items + 1] (index 0 = padding)."""
        flat, _ = _pack(self.train)
        return np.bincount(flat, minlength=self.n_items + 1).astype(np.int64)

    def warm_mask(self) -> np.ndarray:
        """bool [n_items + 1]: True for items that occur in at least one training interaction."""
        m = self.item_train_counts() > 0
        m[0] = False
        return m

    def cold_mask(self) -> np.ndarray:
        m = ~self.warm_mask()
        m[0] = False
        return m

    def popularity_groups(self, n_groups: int = 4, edges: list[float] | None = None) -> np.ndarray:
        """Group id per item (1 = most popular ... G; 0 for padding) -> int64 [n_items + 1].

        Items are sorted by training count, descending (ties: lower id first). By default the
        sorted items are cut into ``n_groups`` groups of (nearly) equal ITEM count; ``edges``
        instead gives cumulative item-share cut points in (0, 1), e.g. [0.2, 0.5] -> 3 groups
        holding the top 20 %, the next 30 % and the rest of the items.
        """
        counts = self.item_train_counts()[1:]
        order = np.lexsort((np.arange(self.n_items), -counts))  # by -count, then id
        if edges is None:
            cuts = [round(self.n_items * g / n_groups) for g in range(1, n_groups)]
        else:
            if any(not 0 < e < 1 for e in edges) or list(edges) != sorted(edges):
                raise ValueError(f"popularity edges must increase strictly inside (0, 1), got {edges}")
            cuts = [round(self.n_items * e) for e in edges]
        group = np.zeros(self.n_items + 1, dtype=np.int64)
        bounds = [0, *cuts, self.n_items]
        for g in range(len(bounds) - 1):
            group[order[bounds[g]:bounds[g + 1]] + 1] = g + 1
        return group

    # ----------------------------------------------------------------- histories and samples
    def history(self, split: str, users: np.ndarray | None = None) -> list[np.ndarray]:
        """Uncapped chronological history per user for ranking in ``split`` ('valid'/'test')."""
        users = np.arange(self.n_users) if users is None else users
        if split == "valid":
            return [self.train[u] for u in users]
        if split == "test":
            return [np.concatenate([self.train[u], self.valid[u]]) for u in users]
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def history_times(self, split: str, users: np.ndarray | None = None) -> list[np.ndarray]:
        """The timestamps of :meth:`history`'s items (same order and lengths)."""
        if not self.has_timestamps:
            raise ValueError(f"dataset {self.name!r} has no timestamps")
        users = np.arange(self.n_users) if users is None else users
        if split == "valid":
            return [self.train_times[u] for u in users]
        if split == "test":
            return [np.concatenate([self.train_times[u], self.valid_times[u]]) for u in users]
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def target_times(self, split: str) -> list[np.ndarray]:
        """The timestamps of :meth:`targets`' items (HELD-OUT information: see
        ``benchmarks.protocol.UserBatch.target_time``)."""
        if not self.has_timestamps:
            raise ValueError(f"dataset {self.name!r} has no timestamps")
        if split in ("valid", "test"):
            return getattr(self, f"{split}_times")
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def history_matrix(self, split: str, users: np.ndarray | None = None) -> np.ndarray:
        """Histories capped at ``max_history``, left-padded with 0 -> int64 [B, max_history]."""
        return left_pad(self.history(split, users), self.max_history)

    def targets(self, split: str) -> list[np.ndarray]:
        if split == "valid":
            return self.valid
        if split == "test":
            return self.test
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")

    def eval_users(self, split: str) -> np.ndarray:
        """Users with at least one target in ``split`` and a non-empty history (a user whose
        first interaction falls in the split, possible on a global-time-line split, has nothing
        to condition on and is not evaluated: :meth:`stats` counts them,
        ``<split>_users_without_history``)."""
        hist = self.history(split)
        return np.array([u for u, t in enumerate(self.targets(split)) if len(t) and len(hist[u])],
                        dtype=np.int64)

    def users_without_history(self, split: str) -> int:
        """Users with a target in ``split`` and an empty history: those :meth:`eval_users` leaves out."""
        return int(sum(1 for t in self.targets(split) if len(t))) - len(self.eval_users(split))

    def training_samples(self, max_history: int | None = None,
                         last_n: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every prefix of every training sequence as (users [S], histories [S, H], targets [S]).

        history = the <= H items before position t, target = item t, for t >= 1 (the common
        protocol of TIGER / LC-Rec / LETTER). ``last_n`` keeps only each user's last n prefixes
        (a quick-scale option; recorded in the cell config by whoever sets it).
        """
        h = self.max_history if max_history is None else max_history
        users, hists, targets = [], [], []
        for u, seq in enumerate(self.train):
            start = 1 if last_n is None else max(1, len(seq) - last_n)
            for t in range(start, len(seq)):
                users.append(u)
                hists.append(seq[max(0, t - h):t])
                targets.append(seq[t])
        return (np.asarray(users, np.int64), left_pad(hists, h), np.asarray(targets, np.int64))

    def _window_bounds(self, length: int) -> list[tuple[int, int, int]]:
        """(user, start, end) of every training window, each user's most recent first."""
        out = []
        for u, seq in enumerate(self.train):
            end = len(seq)
            while end >= 2:
                start = max(0, end - length - 1)
                out.append((u, start, end))
                end = start + 1  # next window ends at this window's first item (its input)
                if start == 0:
                    break
        return out

    def training_windows(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Training sequences cut into windows of ``length + 1`` items for per-position losses.

        Returns (users [W], windows [W, length + 1]) left-padded with 0. Windows are cut from
        the END of each sequence backwards with stride ``length``, so every training target
        (position >= 1) is predicted exactly once; a target at the start of an earlier window
        sees fewer than ``length`` history items (sequence models' usual trade-off). Each
        user's most recent window comes first among that user's windows.
        """
        bounds = self._window_bounds(length)
        users = np.asarray([u for u, _, _ in bounds], np.int64)
        return users, left_pad([self.train[u][a:b] for u, a, b in bounds], length + 1)

    def training_window_times(self, length: int) -> np.ndarray:
        """The timestamps of :meth:`training_windows`' items -> float64 [W, length + 1]
        (0 at padding)."""
        if not self.has_timestamps:
            raise ValueError(f"dataset {self.name!r} has no timestamps")
        return left_pad([self.train_times[u][a:b] for u, a, b in self._window_bounds(length)],
                        length + 1, dtype=np.float64)

    def with_validation_in_training(self) -> "Dataset":
        """A copy whose training sequences end with each user's validation items (and no
        validation split): what the ``refit`` protocol option retrains non-sequential methods
        on before they rank the test split. Test targets and test histories are unchanged."""
        import dataclasses

        train = [np.concatenate([t, v]) for t, v in zip(self.train, self.valid)]
        empty = [np.zeros(0, np.int64) for _ in self.valid]
        times = {}
        if self.has_timestamps:
            times = {"train_times": [np.concatenate([t, v]) for t, v in zip(self.train_times, self.valid_times)],
                     "valid_times": [np.zeros(0, np.float64) for _ in self.valid]}
        return dataclasses.replace(self, train=train, valid=empty, **times,
                                   info={**self.info, "validation_in_training": True})

    # ----------------------------------------------------------------- stats and storage
    def stats(self) -> dict:
        n_inter = self.n_interactions
        lens = np.array([len(self.train[u]) + len(self.valid[u]) + len(self.test[u])
                         for u in range(self.n_users)])
        warm = self.warm_mask()
        dup = self.info.get("duplicates", {})
        return {
            "dataset": self.name,
            "split": self.split,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "mean_seq_len": round(float(lens.mean()), 3) if len(lens) else 0.0,
            "density": round(n_inter / max(1, self.n_users * self.n_items), 6),
            "train_interactions": int(sum(len(s) for s in self.train)),
            "valid_interactions": int(sum(len(s) for s in self.valid)),
            "test_interactions": int(sum(len(s) for s in self.test)),
            "valid_users": int(len(self.eval_users("valid"))),
            "test_users": int(len(self.eval_users("test"))),
            # users with targets there but no history before them: not evaluated (eval_users)
            **{f"{split}_users_without_history": self.users_without_history(split) for split in ("valid", "test")},
            "warm_items": int(warm.sum()),
            "cold_items": int(self.n_items - warm.sum()),
            "users_over_history_cap": int((lens > self.max_history + 1).sum()),
            # repeats among the rows read (preprocess.count_duplicates) and what dedupe dropped
            "duplicate_rows": dup.get("same_user_item_time"),
            "repeated_user_item": dup.get("same_user_item"),
            "dropped_duplicates": dup.get("dropped"),
            # a held-out item that is also the other split's target (a repeat, or a leak)
            "users_valid_item_is_test_item": int(sum(
                bool(len(v) and len(t) and np.isin(v, t).any()) for v, t in zip(self.valid, self.test))),
            "item_text_fields": sorted(self.item_text),
        }

    def save(self, directory: Path) -> None:
        """Write the dataset into ``directory`` (the caller renames it into place atomically)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for split in ("train", "valid", "test"):
            arrays[f"{split}_items"], arrays[f"{split}_indptr"] = _pack(getattr(self, split))
            if self.has_timestamps:
                arrays[f"{split}_times"] = _pack(getattr(self, f"{split}_times"), np.float64)[0]
        np.savez(directory / "splits.npz", **arrays)
        meta = {"name": self.name, "n_items": self.n_items, "item_ids": self.item_ids,
                "user_ids": self.user_ids, "item_text": self.item_text,
                "max_history": self.max_history, "split": self.split, "info": self.info}
        (directory / "dataset.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> "Dataset":
        meta = json.loads((directory / "dataset.json").read_text())
        with np.load(directory / "splits.npz", allow_pickle=False) as z:
            splits = {s: _unpack(z[f"{s}_items"], z[f"{s}_indptr"]) for s in ("train", "valid", "test")}
            if "train_times" in z.files:
                splits.update({f"{s}_times": _unpack(z[f"{s}_times"], z[f"{s}_indptr"])
                               for s in ("train", "valid", "test")})
        return cls(name=meta["name"], n_items=meta["n_items"], item_ids=meta["item_ids"],
                   user_ids=meta["user_ids"], item_text=meta["item_text"],
                   max_history=meta["max_history"], split=meta["split"], info=meta["info"], **splits)
