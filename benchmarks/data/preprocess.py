"""RawData -> Dataset: rating filter, iterated k-core, chronological order, split, id maps.

The common protocol (LETTER Table 1, TIGER, LC-Rec, P5): 5-core repeated until stable; each
user's interactions sorted by timestamp (ties and timestamp-less formats keep file order,
stably; timestamps are on every interaction or on none, a mix is an error); leave-one-out (last -> test, second last -> validation, rest -> training).
SETRec's evaluation adds a GLOBAL chronological ratio split (all interactions cut by time,
e.g. 8:1:1), which leaves items that occur in no training interaction: cold items.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from benchmarks.data.dataset import Dataset
from benchmarks.data.raw import RawData
from benchmarks.errors import ConfigError, DataFormatError, EmptyDatasetError

log = logging.getLogger(__name__)

#: Bump when preprocessing changes what it produces: it is part of every cache key.
#: 2: the dataset keeps every interaction's timestamp (``Dataset.train_times`` ...).
#: 3: duplicate rows are counted and dropped by default (``dedupe: exact``).
PREPROCESS_VERSION = 3

Split = Literal["loo", "ratio", "fixed"]
#: ``dedupe`` values: drop rows repeating an earlier row's (user, item, timestamp); drop every
#: repeat of a (user, item) pair; drop nothing
Dedupe = Literal["exact", "user-item", "none"]
SPLITS, DEDUPE = get_args(Split), get_args(Dedupe)


@dataclass(frozen=True)
class PreprocessOptions:
    """How raw interactions become a split dataset. Every field is part of the cache key.

    - ``k_core``: iterated k-core on users and items (0 or 1 disables); repeats count.
    - ``split``: ``loo`` (leave-one-out), ``ratio`` (global chronological, needs timestamps)
      or ``fixed`` (the split the files ship, e.g. SETRec's dicts; chosen automatically for
      pre-split data, which is never re-filtered).
    - ``ratio``: train/valid/test shares of the global chronological split.
    - ``max_history``: the history cap (20 in every paper this suite follows).
    - ``min_rating``: keep interactions with rating >= this (None keeps all, as the papers do).
    - ``dedupe``: ``exact`` (default) drops a row that repeats an earlier row's user, item AND
      timestamp (the same event written twice: left in, a doubled last row makes the validation
      item the test item); ``user-item`` drops every repeat of a (user, item) pair, keeping the
      first in time order; ``none`` keeps every row. Repeats at another time (a user who
      comes back to an item, as on Yelp) are the data and kept by ``exact``; without
      timestamps no two rows are known to be one event, so ``exact`` drops nothing there.
      Whatever is chosen, the repeats are counted (``Dataset.info["duplicates"]``, ``data
      stats``) and logged.
    """

    k_core: int = 5
    split: Split = "loo"
    ratio: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_history: int = 20
    min_rating: float | None = None
    dedupe: Dedupe = "exact"

    def __post_init__(self):
        if isinstance(self.dedupe, bool) or self.dedupe not in DEDUPE:
            hint = " (the boolean form is gone: true is now 'user-item', false 'none')" \
                if isinstance(self.dedupe, bool) else ""
            raise ConfigError(f"dedupe: expected one of {', '.join(DEDUPE)}, got {self.dedupe!r}{hint}")
        if self.split not in SPLITS:
            raise ConfigError(f"split: expected one of {', '.join(SPLITS)}, got {self.split!r}")
        if len(self.ratio) != 3 or any(r < 0 for r in self.ratio) or not np.isclose(sum(self.ratio), 1):
            raise ConfigError(f"ratio: expected three non-negative shares summing to 1, got {self.ratio}")
        if self.max_history < 1:
            raise ConfigError(f"max_history: expected >= 1, got {self.max_history}")
        object.__setattr__(self, "ratio", tuple(float(r) for r in self.ratio))

    def to_dict(self) -> dict:
        return asdict(self)


def _natural_order(raw_ids: np.ndarray) -> np.ndarray:
    """Sort raw ids numerically when all are integers, else lexicographically."""
    ids = np.asarray(raw_ids, dtype=object)
    if all(re.fullmatch(r"-?\d+", str(x)) for x in ids):
        return ids[np.argsort(np.array([int(x) for x in ids]), kind="stable")]
    return np.array(sorted(ids, key=str), dtype=object)


def k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Iterate until every user and item has >= k interactions (repeats count)."""
    if k <= 1:
        return df
    while True:
        ucount = df["user"].map(df["user"].value_counts())
        icount = df["item"].map(df["item"].value_counts())
        keep = (ucount >= k) & (icount >= k)
        if keep.all():
            return df
        df = df[keep]
        if df.empty:
            return df


def count_duplicates(df: pd.DataFrame, timed: bool) -> dict[str, int]:
    """Repeats among the rows read: ``same_user_item_time`` rows repeat an earlier row's user,
    item and timestamp (0 without timestamps: no two rows are known to be one event);
    ``same_user_item`` rows repeat an earlier row's user and item (at any time)."""
    exact = int(df.duplicated(["user", "item", "timestamp"]).sum()) if timed else 0
    return {"same_user_item_time": exact, "same_user_item": int(df.duplicated(["user", "item"]).sum())}


def _dedupe(df: pd.DataFrame, mode: str, timed: bool, name: str,
            counts: dict[str, int]) -> tuple[pd.DataFrame, dict]:
    """Apply ``dedupe`` to the time-ordered rows (the first row of each repeated group is
    kept); log the repeats ``counts`` found at read time; return them with ``dropped``."""
    before = len(df)
    if mode == "exact" and timed:
        df = df.drop_duplicates(["user", "item", "timestamp"], keep="first")
    elif mode == "user-item":
        df = df.drop_duplicates(["user", "item"], keep="first")
    counts = {**counts, "dropped": before - len(df), "dedupe": mode}
    exact, pairs = counts["same_user_item_time"], counts["same_user_item"]
    # the same event twice is a warning; a repeat at another time (or without a time) is data
    if exact:
        what = (f"dropped (dedupe: {mode})" if mode != "none" else
                "kept (dedupe: none): a doubled last row makes that user's validation item the test item")
        log.warning("dataset %r: %d rows repeat an earlier row's user, item and timestamp: %s",
                    name, exact, what)
    if pairs > exact:
        fate = "dropped (dedupe: user-item)" if mode == "user-item" else \
            f"kept (dedupe: {mode}; 'user-item' drops them)"
        log.info("dataset %r: %d rows repeat an earlier (user, item) pair%s: %s", name,
                    pairs - exact, " at another time" if timed else " (no timestamps to tell a "
                    "repeat visit from a row written twice)", fate)
    return df, counts


class _Steps:
    """What each filtering step dropped (interactions, users, items), for the log and
    ``Dataset.info["filtering"]``: no step drops anything without a count."""

    def __init__(self, df: pd.DataFrame):
        self.read = len(df)
        self._last = df
        self.dropped: dict[str, dict[str, int]] = {}

    def record(self, step: str, df: pd.DataFrame) -> pd.DataFrame:
        before = self._last
        self.dropped[step] = {"interactions": len(before) - len(df),
                              "users": before["user"].nunique() - df["user"].nunique(),
                              "items": before["item"].nunique() - df["item"].nunique()}
        self._last = df
        return df

    def summary(self) -> str:
        parts = [f"{d['interactions']} by {step} ({d['users']} users, {d['items']} items gone)"
                 for step, d in self.dropped.items() if d["interactions"]]
        return (f"{self.read} interactions read, {len(self._last)} kept"
                + (f"; dropped {', '.join(parts)}" if parts else ""))

    def to_dict(self) -> dict:
        return {"read": self.read, "kept": len(self._last), "dropped": self.dropped}


@dataclass
class _Built:
    train: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    test: list = field(default_factory=list)


def _split_groups(df: pd.DataFrame, n_users: int, label: np.ndarray | None,
                  column: str = "iid", dtype=np.int64) -> _Built:
    """Per-user chronological lists per split of ``column`` (item ids, or timestamps);
    ``label`` (0/1/2 per row) or leave-one-out."""
    out = _Built()
    users = df["uid"].to_numpy()
    values = df[column].to_numpy()
    order = np.argsort(users, kind="stable")  # df is already chronological: stable keeps it
    users, values = users[order], values[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    lab = None if label is None else label[order]
    empty = np.zeros(0, dtype)
    for u in range(n_users):
        seq = values[bounds[u]:bounds[u + 1]].astype(dtype)
        if lab is None:
            out.train.append(seq[:-2])
            out.valid.append(seq[-2:-1])
            out.test.append(seq[-1:])
        else:
            lu = lab[bounds[u]:bounds[u + 1]]
            out.train.append(seq[lu == 0] if len(seq) else empty)
            out.valid.append(seq[lu == 1] if len(seq) else empty)
            out.test.append(seq[lu == 2] if len(seq) else empty)
    return out


def _check_timestamps(raw: RawData, name: str) -> None:
    """Timestamps on every interaction (time order) or on none (file order); a mix is refused
    (the readers already refuse it with file and line; this covers any other RawData): one
    missing timestamp must not switch time ordering off for every user."""
    missing = raw.missing_timestamps()
    if 0 < missing < len(raw.interactions):
        ts = raw.interactions["timestamp"].to_numpy(dtype=np.float64)
        first = int(np.argmax(~np.isfinite(ts)))
        row = raw.interactions.iloc[first]
        raise DataFormatError(raw.source or f"dataset {name!r}",
                              "a finite timestamp on every interaction or on none",
                              got=f"{missing} of {len(ts)} without one, the first at row "
                                  f"{first + 1} in file order (user {row['user']}, item {row['item']})")


def preprocess(raw: RawData, name: str, options: PreprocessOptions | None = None) -> Dataset:
    """Filter, order and split ``raw`` into a :class:`Dataset` (see the module docstring)."""
    opt = options or PreprocessOptions()
    if raw.interactions.empty:
        raise EmptyDatasetError(f"dataset {name!r}: no interaction read from {raw.source or 'its files'}")
    _check_timestamps(raw, name)
    split = "fixed" if raw.presplit else opt.split
    if split == "fixed" and not raw.presplit:
        raise ConfigError(f"split 'fixed' needs files that ship a split; {name!r} does not")
    if split == "ratio" and not raw.has_timestamps:
        raise ConfigError(f"the global chronological split needs timestamps; dataset {name!r} "
                          "has none (its format gives only the order inside each user)")
    df = raw.interactions.copy()
    for col in ("user", "item"):
        df[col] = df[col].astype(str)
    df["_order"] = np.arange(len(df))
    steps = _Steps(df)
    found = count_duplicates(df, raw.has_timestamps)   # at read time, before any filter
    if opt.min_rating is not None:
        if "rating" not in df:
            raise ConfigError(f"min_rating is set but dataset {name!r} has no ratings")
        unrated = int(df["rating"].isna().sum())
        if unrated:   # NaN >= x is false: they would vanish without a word
            raise ConfigError(f"dataset {name!r}: min_rating is set but {unrated} of {len(df)} interactions "
                              f"have no rating ({raw.source or 'its files'}); fill them in or drop min_rating")
        df = steps.record(f"min_rating {opt.min_rating}", df[df["rating"] >= opt.min_rating])

    # chronological order: by timestamp where the format has them, ties in file order
    if raw.has_timestamps:
        df = df.sort_values(["timestamp", "_order"], kind="stable")
    df, duplicates = _dedupe(df, opt.dedupe, raw.has_timestamps, name, found)
    steps.record(f"dedupe {opt.dedupe}", df)
    if split != "fixed":
        df = steps.record(f"k-core {opt.k_core}", k_core(df, opt.k_core))
        if split == "loo":  # leave-one-out needs train >= 1, valid and test per user
            df = steps.record("users with < 3 interactions (leave-one-out)",
                              df[df["user"].map(df["user"].value_counts()) >= 3])
    log.info("dataset %r: %s", name, steps.summary())
    if df.empty:
        raise EmptyDatasetError(
            f"dataset {name!r}: no interaction left after filtering "
            f"(k_core={opt.k_core}, min_rating={opt.min_rating}, split={split}) of the "
            f"{len(raw.interactions)} read from {raw.source or 'its files'}")

    item_ids = _natural_order(df["item"].unique())
    user_ids = _natural_order(df["user"].unique())
    df["iid"] = df["item"].map(pd.Series(np.arange(1, len(item_ids) + 1), index=item_ids)).astype(np.int64)
    df["uid"] = df["user"].map(pd.Series(np.arange(len(user_ids)), index=user_ids)).astype(np.int64)

    label = None
    if split == "fixed":
        codes = {"train": 0, "valid": 1, "test": 2}
        bad = ~df["split"].isin(list(codes))
        if bad.any():
            raise ConfigError(f"dataset {name!r}: split labels must be train/valid/test, "
                              f"got {df.loc[bad, 'split'].iloc[0]!r}")
        label = df["split"].map(codes).to_numpy()
    elif split == "ratio":
        n = len(df)
        cut1 = int(round(n * opt.ratio[0]))
        cut2 = int(round(n * (opt.ratio[0] + opt.ratio[1])))
        label = np.zeros(n, np.int64)
        label[cut1:cut2] = 1
        label[cut2:] = 2
    built = _split_groups(df, len(user_ids), label)
    times: dict = {}
    if raw.has_timestamps:
        t = _split_groups(df, len(user_ids), label, "timestamp", np.float64)
        times = {"train_times": t.train, "valid_times": t.valid, "test_times": t.test}

    item_text: dict[str, list] = {}
    if raw.items is not None and len(raw.items.columns):
        items = raw.items.copy()
        items.index = items.index.astype(str)
        items = items[~items.index.duplicated(keep="first")].reindex(item_ids)
        for col in items.columns:
            vals = [None if (v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "")
                    else str(v) for v in items[col].tolist()]
            if any(v is not None for v in vals):
                item_text[str(col)] = vals

    info = {"source": raw.source, "options": opt.to_dict(), "split": split,
            "raw_interactions": int(len(raw.interactions)),
            "has_timestamps": raw.has_timestamps, "duplicates": duplicates,
            "filtering": steps.to_dict(),
            "preprocess_version": PREPROCESS_VERSION}
    if "warm_items" in raw.extras:  # published warm/cold lists: record how they compare
        info["published_warm_items"] = len(raw.extras["warm_items"])
        info["published_cold_items"] = len(raw.extras.get("cold_items", []))
    return Dataset(name=name, n_items=len(item_ids), item_ids=[str(x) for x in item_ids],
                   user_ids=[str(x) for x in user_ids], train=built.train, valid=built.valid,
                   test=built.test, item_text=item_text, max_history=opt.max_history,
                   split=split, info=info, **times)
