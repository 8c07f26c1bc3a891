"""Full-ranking evaluation of any Recommender, per split, per warm/cold subset, per popularity
group, with the throughput of producing the top-K lists.

Subsets (SETRec's evaluation; see the design notes "Cold-start and popularity groups"):
- ``all``: every user with a target in the split, ranked over all items;
- ``warm``: users with a warm target (an item seen in training), their warm targets only,
  ranked among warm items only (cold items can never be returned);
- ``cold``: likewise with cold items (never seen in training);
- ``pop1`` .. ``popG``: the ``all`` ranking, scored against the users' targets that fall in
  popularity group g (1 = most popular); plus ``share`` rows: the share of group g among the
  generated top-K items and among the targets (item generation bias, LETTER Fig. 3).
- ``global`` (with ``global_ranking``, for methods that decode, e.g. beam search): the same
  test users ranked by the EXACT score of every item instead (teacher-forced sequence
  log-probabilities); ``beam`` holds the decoded ranking of the same users, so the two rows
  compare beam search with global search (LETTER Fig. 3, SETRec's local-optima argument).
  ``global_users`` caps how many test users this costly ranking covers: a fixed sample per
  seed (drawn with the run's seed, so that runs over several seeds pool different users; seed
  0 draws the sample every earlier version drew for every seed).
Whether history items stay rankable is the run's named protocol
(:mod:`benchmarks.evaluation.protocols`: ``masked`` / ``unmasked``, ``auto`` decides from the
data), resolved once per dataset here and recorded in ``EvalResult.protocol``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from benchmarks.data.dataset import Dataset, left_pad
from benchmarks.evaluation import protocols
from benchmarks.evaluation.metrics import pad_targets, recall_ndcg
from benchmarks.protocol import (NaNScoreError, Recommender, UserBatch, check_ranked_scores,
                                 topk_from_scores)
from benchmarks.utils import PeakMemory, progress_bar, synchronize

SUBSETS = ("all", "warm", "cold", "popularity")


def user_batch(ds: Dataset, split: str, users: np.ndarray, target_time: bool = False) -> UserBatch:
    """The :class:`UserBatch` of ``users`` for ranking in ``split``: their histories capped at
    ``ds.max_history`` and, where the dataset has timestamps, the history's timestamps. With
    ``target_time`` (only for a method whose ``reads_target_time`` is set) also the timestamp
    of each user's first target in the split (held-out information)."""
    users = np.asarray(users, dtype=np.int64)
    hist = torch.from_numpy(left_pad(ds.history(split, users), ds.max_history))
    times = target = None
    if ds.has_timestamps:
        times = torch.from_numpy(left_pad(ds.history_times(split, users), ds.max_history, np.float64))
        if target_time:
            tt = ds.target_times(split)
            target = torch.tensor([float(tt[u][0]) if len(tt[u]) else 0.0 for u in users],
                                  dtype=torch.float64)
    elif target_time:
        raise ValueError(f"dataset {ds.name!r} has no timestamps: no target time to give")
    return UserBatch(torch.from_numpy(users), hist, times, target)


@dataclass
class EvalConfig:
    """How methods are evaluated (part of every cell's config).

    - ``ks``: cut-offs of Recall@K / NDCG@K;
    - ``batch_size``: users per ``rank`` call (also the throughput batch size);
    - ``protocol``: ``auto`` | ``masked`` | ``unmasked`` (see :mod:`benchmarks.evaluation.protocols`);
    - ``refit``: non-sequential methods refit on training + validation before the test ranking;
    - ``popularity_groups`` / ``popularity_edges``: see ``Dataset.popularity_groups``;
    - ``subsets``: which of all / warm / cold / popularity to report;
    - ``valid_sample``: early stopping validates on this many randomly chosen validation
      users (fixed per seed) instead of all;
    - ``valid_rows``: the users of the reported validation rows: ``all`` (default) or
      ``sample`` (the early-stopping sample, where there is one: the final validation
      ranking then costs what one early-stopping check does; each row's ``n_users`` says
      which). Test rows always use every test user.
    - ``global_ranking`` / ``global_users``: the beam-vs-global rows (see the module doc).
    """

    ks: tuple[int, ...] = (5, 10)
    batch_size: int = 256
    protocol: str = "auto"
    refit: bool = False
    popularity_groups: int = 4
    popularity_edges: tuple[float, ...] | None = None
    subsets: tuple[str, ...] = SUBSETS
    valid_sample: int | None = None
    valid_rows: str = "all"
    global_ranking: bool = False
    global_users: int | None = None

    def __post_init__(self):
        self.ks = tuple(int(k) for k in self.ks)
        if self.popularity_edges is not None:
            self.popularity_edges = tuple(self.popularity_edges)
        self.subsets = tuple(self.subsets)
        protocols.check_name(self.protocol)
        if self.valid_rows not in ("all", "sample"):
            from benchmarks.errors import ConfigError
            raise ConfigError(f"evaluation.valid_rows: expected 'all' or 'sample', got {self.valid_rows!r}")
        bad = set(self.subsets) - set(SUBSETS)
        if bad:
            from benchmarks.errors import ConfigError
            raise ConfigError(f"evaluation.subsets: unknown {sorted(bad)}; known: {', '.join(SUBSETS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EvalResult:
    rows: list[dict] = field(default_factory=list)        # split, subset, metric, k, value, n_users
    per_user: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)   # (split, subset, name)
    throughput: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)    # protocols.Resolved.to_dict()


class Evaluator:
    """Evaluates recommenders on one dataset. Build once per dataset and reuse."""

    def __init__(self, dataset: Dataset, config: EvalConfig | None = None, seed: int = 0):
        self.ds = dataset
        self.cfg = config or EvalConfig()
        self.k = max(self.cfg.ks)
        self.protocol = protocols.resolve(self.cfg.protocol, dataset, self.cfg.refit)
        self.warm = torch.from_numpy(dataset.warm_mask())
        self.cold = torch.from_numpy(dataset.cold_mask())
        self.groups = dataset.popularity_groups(self.cfg.popularity_groups,
                                                list(self.cfg.popularity_edges) if self.cfg.popularity_edges else None)
        self.n_groups = int(self.groups.max())
        self.seed = seed
        self._valid_sample = None
        if self.cfg.valid_sample:
            users = dataset.eval_users("valid")
            if len(users) > self.cfg.valid_sample:
                rng = np.random.default_rng(seed)
                self._valid_sample = np.sort(rng.choice(users, self.cfg.valid_sample, replace=False))

    # ------------------------------------------------------------------ ranking
    def _batches(self, split: str, users: np.ndarray, target_time: bool = False):
        bs = self.cfg.batch_size
        for start in range(0, len(users), bs):
            u = users[start:start + bs]
            excl = None
            if self.protocol.mask_history:  # from the whole (uncapped) history
                targets = self.ds.targets(split)
                hists = self.protocol.excluded(self.ds.history(split, u), [targets[i] for i in u])
                excl = torch.from_numpy(left_pad(hists, max(1, max(len(h) for h in hists))))
            yield user_batch(self.ds, split, u, target_time=target_time), excl

    @torch.no_grad()
    def rank(self, model: Recommender, split: str, users: np.ndarray,
             candidates: torch.Tensor | None = None, *, desc: str = "",
             progress: bool = False, exact: bool = False) -> tuple[torch.Tensor, dict]:
        """Top-K ids for ``users`` [n, K] and timing {seconds, users, batches}; ``exact``
        ranks by ``model.score`` (global ranking) instead of ``model.rank``."""
        model.eval()
        out, seconds = [], 0.0
        n_batches = (len(users) + self.cfg.batch_size - 1) // self.cfg.batch_size
        for batch, excl in progress_bar(self._batches(split, users, model.reads_target_time),
                                        total=n_batches, desc=desc, leave=False, enabled=progress):
            batch = batch.to(model.device)
            start = time.perf_counter()
            try:
                with model.autocast():   # the run's precision (benchmarks.precision)
                    if exact:
                        scores = model.score(batch)
                    else:
                        items, vals = model.rank(batch, self.k, candidates=candidates, exclude=excl)
                if exact:
                    items, vals = topk_from_scores(scores.float(), self.k, candidates, excl)
                check_ranked_scores(vals.float(), self.k)
            except NaNScoreError as exc:
                raise NaNScoreError(f"method {model.name!r}: {exc}, ranking split {split!r}") from None
            synchronize(items.device)     # the clock stops when that device is done
            seconds += time.perf_counter() - start
            if items.shape[1] < self.k:
                items = torch.nn.functional.pad(items, (0, self.k - items.shape[1]))
            out.append(items[:, :self.k].cpu())
        topk = torch.cat(out) if out else torch.zeros((0, self.k), dtype=torch.long)
        return topk, {"seconds": seconds, "users": int(len(users)), "batches": n_batches}

    def validation_users(self) -> np.ndarray:
        """The users early stopping validates on: all validation users, or the fixed sample."""
        return self._valid_sample if self._valid_sample is not None else self.ds.eval_users("valid")

    def validation_ndcg(self, model: Recommender) -> float:
        """NDCG@10 (or @max K) on validation, all users (or the fixed sample): the early-
        stopping criterion every method's fit() receives as ``validator``."""
        users = self.validation_users()
        topk, _ = self.rank(model, "valid", users)
        k = 10 if 10 in self.cfg.ks else self.k
        m = recall_ndcg(topk, pad_targets([self.ds.valid[u] for u in users]), (k,))
        return float(np.nanmean(m[("ndcg", k)])) if len(users) else 0.0

    # ------------------------------------------------------------------ full evaluation
    def _rows(self, split: str, subset: str, topk: torch.Tensor, targets: list[np.ndarray],
              users: np.ndarray, result: EvalResult) -> None:
        keep = np.array([len(t) > 0 for t in targets], dtype=bool)
        if not keep.any():
            return
        m = recall_ndcg(topk[torch.from_numpy(keep)], pad_targets([t for t, k in zip(targets, keep) if k]),
                        self.cfg.ks)
        result.per_user[(split, subset, "users")] = users[keep]
        for (metric, k), vals in m.items():
            result.rows.append({"split": split, "subset": subset, "metric": metric, "k": k,
                                "value": float(np.mean(vals)), "n_users": int(keep.sum())})
            result.per_user[(split, subset, f"{metric}@{k}")] = vals.astype(np.float32)

    def evaluate(self, model: Recommender, splits: tuple[str, ...] = ("valid", "test"),
                 progress: bool = True, throughput: bool = True) -> EvalResult:
        """Every row of every requested split and subset; throughput from the test ranking."""
        res = EvalResult(protocol=self.protocol.to_dict())
        for split in splits:
            sampled = split == "valid" and self.cfg.valid_rows == "sample"
            users = self.validation_users() if sampled else self.ds.eval_users(split)
            targets = [self.ds.targets(split)[u] for u in users]
            timed = throughput and split == "test"
            with PeakMemory(device=model.device) as mem:
                topk, timing = self.rank(model, split, users, desc=f"rank {split}", progress=progress)
            if timed and timing["users"]:
                res.throughput = {
                    "users": timing["users"], "seconds": round(timing["seconds"], 4),
                    "users_per_s": round(timing["users"] / max(timing["seconds"], 1e-9), 2),
                    "ms_per_user": round(1000 * timing["seconds"] / timing["users"], 4),
                    "batch_size": self.cfg.batch_size, "k": self.k, "device": str(model.device),
                    "peak_rss_mb": mem.peak_rss_mb, "peak_cuda_mb": mem.peak_cuda_mb}
            subsets = self.cfg.subsets
            if "all" in subsets:
                self._rows(split, "all", topk, targets, users, res)
            for name, mask in (("warm", self.warm), ("cold", self.cold)):
                if name not in subsets:
                    continue
                sub = [t[mask.numpy()[t]] for t in targets]
                has = np.array([len(t) > 0 for t in sub], dtype=bool)
                if not has.any():
                    continue
                if not self.cold[1:].any():   # no cold items at all: warm ranking == all ranking
                    sub_topk = topk[torch.from_numpy(has)]
                else:
                    sub_topk, _ = self.rank(model, split, users[has], candidates=mask,
                                            desc=f"rank {split}/{name}", progress=progress)
                self._rows(split, name, sub_topk, [t for t, h in zip(sub, has) if h], users[has], res)
            if "popularity" in subsets:
                self._popularity_rows(split, topk, targets, users, res)
            if split == "test" and self.cfg.global_ranking and getattr(model, "decodes", False):
                self._global_rows(model, users, topk, targets, res, progress)
        return res

    def _global_rows(self, model, users, topk, targets, res, progress) -> None:
        pick = np.arange(len(users))
        if self.cfg.global_users and len(users) > self.cfg.global_users:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(users), self.cfg.global_users, replace=False))
        exact, _ = self.rank(model, "test", users[pick], desc="rank test/global", progress=progress, exact=True)
        sub = [targets[i] for i in pick]
        self._rows("test", "beam", topk[torch.from_numpy(pick)], sub, users[pick], res)
        self._rows("test", "global", exact, sub, users[pick], res)

    def _popularity_rows(self, split: str, topk: torch.Tensor, targets: list[np.ndarray],
                         users: np.ndarray, res: EvalResult) -> None:
        gen = self.groups[topk.numpy()]
        gen = gen[gen > 0]
        tgt = self.groups[np.concatenate(targets)] if targets else np.zeros(0, np.int64)
        for g in range(1, self.n_groups + 1):
            sub = [t[self.groups[t] == g] for t in targets]
            self._rows(split, f"pop{g}", topk, sub, users, res)
            for metric, arr in (("share_generated", gen), ("share_targets", tgt)):
                res.rows.append({"split": split, "subset": f"pop{g}", "metric": metric, "k": self.k,
                                 "value": float((arr == g).mean()) if len(arr) else 0.0,
                                 "n_users": int(len(users))})
