"""Synthetic catalogs of any size for the scale benchmark (``benchmarks.bench_scale``).

A catalog of ``n_items`` items and ``users_per_item * n_items`` users (plus the coverage users
below), generated from a seed:

- Item popularity: every item gets a Pareto weight (tail exponent ``popularity_exponent``,
  1.5 by default: a power law with a finite mean, so the SHAPE of the popularity
  distribution does not change with the catalog's size); fresh draws pick items in
  proportion to their weight.
- Planted sequential structure: a fixed random successor map ``succ`` (one cycle through all
  items). Each user's sequence starts at a popularity draw; every next item is the previous
  item's successor with probability ``follow`` (0.5), else a fresh popularity draw. A
  sequential model can learn "j follows i"; items on one stretch of the cycle co-occur.
- Sequence lengths: ``min_length`` + a geometric number of extra items (mean total
  ``mean_length``, 9 by default, Amazon Beauty's 8.9), capped at ``max_length``.
- Coverage: an item drawn fewer than ``min_length`` (5) times gets one extra user per missing
  occurrence, whose sequence walks the successor cycle from that item for ``min_length``
  steps. So every item and every user has at least 5 interactions and the suite's 5-core
  filter keeps the whole catalog: the preprocessed dataset has exactly ``n_items`` items.
- Timestamps: each user starts at a random second of a ~30-year span and takes one step
  every 600 s (users interleave on the global time line).
- Item "text" embeddings: random unit vectors of MiniLM's width (384), so that a text
  encoder is not what a scale measurement measures (``bench_scale.SyntheticFeatures`` serves
  them in place of the encoder's). Like a sentence encoder's, they have a low intrinsic dimension:
  a Gaussian ``text_rank``-dimensional (32) latent through a fixed random 384 x 32 map, plus
  isotropic noise of a tenth of that scale, normalised (isotropic 384-d noise has nothing an
  RQ-VAE can learn: its codes collapse, and LC-Rec's reassignment then refuses the catalog).
- CF embeddings: random 64-d vectors written like a paper's published CF file (row r = raw
  item id r), found by ``FeatureStore.cf_embeddings`` through ``info["cf_embeddings_file"]``.
- Codes: uniformly random ``code_levels`` x ``codebook_size`` codes per item, written as a
  LETTER-style ``index.json`` (read by the ``published-codes`` identifier through
  ``info["codes_file"]``): what a well-spread RQ-VAE tokenizer produces, without training one.

Raw ids are ``"0" .. "n-1"`` for items and users (item raw id r is item id r + 1 after
preprocessing, the natural order). The catalog is written once under the suite's cache
(``<cache>/synthetic/<name>-<key>/``, the key hashing every parameter and
:data:`SYNTHETIC_VERSION`), into a temporary folder renamed into place when complete:
``raw.npz`` (user, item, timestamp per interaction), ``text.npy`` ([n + 1, 384], row 0 zeros),
``cf.npy``, ``codes.index.json``, ``dataset/`` (the preprocessed :class:`Dataset`) and
``meta.json`` (the parameters and generation statistics; its presence marks a complete folder).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.cache import cache_dir
from benchmarks.data.dataset import Dataset
from benchmarks.data.preprocess import PREPROCESS_VERSION, PreprocessOptions, preprocess
from benchmarks.data.raw import RawData
from benchmarks.errors import ConfigError
from benchmarks.utils import atomic_write_json, stable_hash

#: bump when the generator's output changes for the same parameters (part of the cache key)
SYNTHETIC_VERSION = 2
#: the text encoder name the synthetic embeddings stand in for (recorded, never loaded)
SYNTHETIC_ENCODER = "synthetic-random-384"


@dataclass(frozen=True)
class SyntheticSpec:
    """Every parameter of a synthetic catalog (all part of its cache key)."""

    n_items: int
    users_per_item: float = 1.0
    mean_length: float = 9.0
    min_length: int = 5
    max_length: int = 50
    popularity_exponent: float = 1.5
    follow: float = 0.5
    text_dim: int = 384
    text_rank: int = 32
    cf_dim: int = 64
    code_levels: int = 3
    codebook_size: int = 256
    seed: int = 0

    def __post_init__(self):
        checks = [("n_items", self.n_items >= 10, "an integer >= 10"),
                  ("users_per_item", self.users_per_item > 0, "a number > 0"),
                  ("min_length", self.min_length >= 5, "an integer >= 5 (the 5-core filter)"),
                  ("mean_length", self.mean_length >= self.min_length, f"a number >= min_length ({self.min_length})"),
                  ("max_length", self.max_length >= self.mean_length, f"an integer >= mean_length ({self.mean_length})"),
                  ("popularity_exponent", self.popularity_exponent > 1, "a number > 1 (a finite mean)"),
                  ("follow", 0 <= self.follow <= 1, "a probability in [0, 1]"),
                  ("text_dim", self.text_dim >= 1, "an integer >= 1"),
                  ("text_rank", 0 <= self.text_rank <= self.text_dim, f"an integer in 0 .. text_dim ({self.text_dim})"),
                  ("cf_dim", self.cf_dim >= 1, "an integer >= 1"),
                  ("code_levels", 1 <= self.code_levels <= 25, "an integer in 1 .. 25"),
                  ("codebook_size", self.codebook_size >= 2, "an integer >= 2")]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"synthetic catalog {key}: expected {expected}, got {getattr(self, key)!r}")

    @property
    def name(self) -> str:
        return f"synthetic-{self.n_items}"

    def key(self) -> str:
        return stable_hash({"spec": asdict(self), "version": SYNTHETIC_VERSION,
                            "preprocess": PREPROCESS_VERSION})


def generate_interactions(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(user, item, timestamp) per interaction (0-based raw ids, int64 / float64) and the
    generation statistics; see the module docstring for the process."""
    rng = np.random.default_rng(spec.seed)
    n = spec.n_items
    n_users = max(1, int(round(n * spec.users_per_item)))
    weights = rng.pareto(spec.popularity_exponent, n) + 1.0
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cycle = rng.permutation(n)
    succ = np.empty(n, np.int64)
    succ[cycle] = np.roll(cycle, -1)

    def draw(size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), n - 1)

    extra_mean = spec.mean_length - spec.min_length
    extra = rng.geometric(1.0 / (extra_mean + 1.0), n_users) - 1 if extra_mean > 0 else np.zeros(n_users, np.int64)
    lengths = np.minimum(spec.min_length + extra, spec.max_length).astype(np.int64)
    start = np.zeros(n_users + 1, np.int64)
    start[1:] = np.cumsum(lengths)
    items = np.empty(start[-1], np.int64)
    prev = draw(n_users)
    items[start[:-1]] = prev
    followed = 0
    for step in range(1, int(lengths.max())):
        active = np.flatnonzero(lengths > step)
        follow = rng.random(len(active)) < spec.follow
        nxt = np.where(follow, succ[prev[active]], draw(len(active)))
        items[start[active] + step] = nxt
        prev[active] = nxt
        followed += int(follow.sum())
    # coverage users: one successor walk of min_length items per missing occurrence
    deficit = np.maximum(spec.min_length - np.bincount(items, minlength=n), 0)
    heads = np.repeat(np.arange(n), deficit)
    walks = np.empty((len(heads), spec.min_length), np.int64)
    if len(heads):
        walks[:, 0] = heads
        for step in range(1, spec.min_length):
            walks[:, step] = succ[walks[:, step - 1]]
    all_lengths = np.concatenate([lengths, np.full(len(heads), spec.min_length, np.int64)])
    all_items = np.concatenate([items, walks.reshape(-1)])
    total_users = len(all_lengths)
    # raw user ids in a random order, so that coverage users are not all at the end
    raw_user = rng.permutation(total_users)
    users = np.repeat(raw_user, all_lengths)
    t0 = rng.integers(0, 10 ** 9, total_users).astype(np.float64)
    first = np.zeros(total_users + 1, np.int64)
    first[1:] = np.cumsum(all_lengths)
    position = np.arange(len(all_items)) - np.repeat(first[:-1], all_lengths)
    times = np.repeat(t0, all_lengths) + 600.0 * position
    counts = np.bincount(all_items, minlength=n)
    top = np.sort(counts)[::-1]
    stats = {"users": int(total_users), "sequence_users": int(n_users), "coverage_users": int(len(heads)),
             "interactions": int(len(all_items)), "mean_length": round(float(all_lengths.mean()), 3),
             "successor_steps_share": round((followed + len(heads) * (spec.min_length - 1))
                                            / max(1, len(all_items) - total_users), 4),
             "item_count_min": int(top[-1]), "item_count_median": float(np.median(counts)),
             "item_count_max": int(top[0]),
             "top_1pct_items_share": round(float(top[:max(1, n // 100)].sum() / top.sum()), 4)}
    return users, all_items, times, stats


def _random_unit_rows(rng: np.random.Generator, n: int, d: int, rank: int = 0,
                      chunk: int = 65536) -> np.ndarray:
    """[n + 1, d] float32: row 0 zeros, rows 1..n random unit vectors (written chunk by
    chunk): isotropic for ``rank`` 0, else a Gaussian ``rank``-d latent through a fixed random
    [rank, d] map plus isotropic noise at a tenth of its scale."""
    out = np.zeros((n + 1, d), np.float32)
    basis = rng.standard_normal((rank, d), dtype=np.float32) / np.sqrt(rank) if rank else None
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = rng.standard_normal((m, d), dtype=np.float32)
        if basis is not None:
            x = rng.standard_normal((m, rank), dtype=np.float32) @ basis + 0.1 * x
        out[1 + s:1 + s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _write_codes(path: Path, rng: np.random.Generator, spec: SyntheticSpec) -> None:
    """LETTER's ``index.json`` format: raw item id -> one ``<x_k>`` token per level."""
    codes = rng.integers(0, spec.codebook_size, (spec.n_items, spec.code_levels))
    letters = "abcdefghijklmnopqrstuvwxyz"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("{")
        for r, row in enumerate(codes.tolist()):
            toks = ", ".join(f'"<{letters[lvl]}_{c}>"' for lvl, c in enumerate(row))
            fh.write(f'{"," if r else ""}"{r}": [{toks}]')
        fh.write("}")


@dataclass
class SyntheticCatalog:
    """A written synthetic catalog (see the module docstring for its files)."""

    spec: SyntheticSpec
    folder: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def meta(self) -> dict:
        return json.loads((self.folder / "meta.json").read_text())

    @property
    def codes_file(self) -> Path:
        return self.folder / "codes.index.json"

    @property
    def cf_file(self) -> Path:
        return self.folder / "cf.npy"

    @property
    def options(self) -> PreprocessOptions:
        """The suite's default preprocessing (5-core, leave-one-out, history cap 20)."""
        return PreprocessOptions()

    def raw(self) -> RawData:
        """The interactions as a reader returns them: string ids, in generation order."""
        with np.load(self.folder / "raw.npz", allow_pickle=False) as z:
            users, items, times = z["user"], z["item"], z["timestamp"]
        inter = pd.DataFrame({"user": users.astype(str).astype(object), "item": items.astype(str).astype(object),
                              "timestamp": times})
        return RawData(inter, None, source=f"synthetic catalog {self.folder}")

    def dataset(self) -> Dataset:
        """The preprocessed dataset (cached when the catalog was written)."""
        return Dataset.load(self.folder / "dataset")

    def text_embeddings(self) -> np.ndarray:
        """float32 [n_items + 1, text_dim], row 0 zeros, row i = item id i."""
        return np.load(self.folder / "text.npy", allow_pickle=False)


def _finish_dataset(ds: Dataset, spec: SyntheticSpec, folder: Path) -> Dataset:
    """Record what the suite reads from a dataset's info: cache key, CF and codes files."""
    ds.info.update({"cache_key": spec.key(), "format": "synthetic",
                    "cf_embeddings_file": str(folder / "cf.npy"),
                    "codes_file": str(folder / "codes.index.json")})
    return ds


def synthetic_root() -> Path:
    return cache_dir() / "synthetic"


def build_catalog(spec: SyntheticSpec, root: Path | None = None) -> SyntheticCatalog:
    """The catalog of ``spec``: read from the cache, or generated and written there first."""
    root = Path(root) if root is not None else synthetic_root()
    folder = root / f"{spec.name}-{spec.key()}"
    if (folder / "meta.json").is_file():
        return SyntheticCatalog(spec, folder)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.name}-tmp-"))
    try:
        users, items, times, stats = generate_interactions(spec)
        np.savez(tmp / "raw.npz", user=users, item=items, timestamp=times)
        rng = np.random.default_rng([spec.seed, 1])
        np.save(tmp / "text.npy", _random_unit_rows(rng, spec.n_items, spec.text_dim, spec.text_rank),
                allow_pickle=False)
        np.save(tmp / "cf.npy", _random_unit_rows(rng, spec.n_items, spec.cf_dim)[1:], allow_pickle=False)
        _write_codes(tmp / "codes.index.json", rng, spec)
        del users, items, times
        cat = SyntheticCatalog(spec, tmp)
        ds = preprocess(cat.raw(), spec.name, cat.options)
        if ds.n_items != spec.n_items or ds.item_ids != [str(r) for r in range(spec.n_items)]:
            raise RuntimeError(f"synthetic catalog {spec.name}: preprocessing kept {ds.n_items} of "
                               f"{spec.n_items} items; every item should survive the 5-core filter")
        _finish_dataset(ds, spec, folder).save(tmp / "dataset")
        stats.update({"dataset_users": ds.n_users, "dataset_items": ds.n_items,
                      "dataset_interactions": ds.n_interactions})
        atomic_write_json(tmp / "meta.json", {"spec": asdict(spec), "key": spec.key(),
                                              "version": SYNTHETIC_VERSION, "stats": stats})
        try:
            os.replace(tmp, folder)
        except OSError:          # another process finished the same catalog first
            if not (folder / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SyntheticCatalog(spec, folder)
