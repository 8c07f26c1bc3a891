"""RPG: long semantic ids generated in parallel (Hou et al., "Generating Long Semantic IDs in
Parallel for Recommendation", KDD 2025; facebookresearch/RPG_KDD2025).

| piece | where | what |
|---|---|---|
| identifiers | :mod:`identifiers.opq` (scheme ``opq``) | whitened PCA of the item text embeddings, OPQ + PQ: m = 32 digits x 256 codes, ties kept |
| network | :mod:`backbones.rpg` | GPT-2 from scratch over mean-pooled code embeddings, m residual heads, tied cosine logits / τ, per-digit CE |
| exact ranking | :func:`backbones.rpg.exact_scores` | score(i) = mean_j log p(c_j(i) at digit j): one gather per item over the m x 256 table |
| decoding | :mod:`backbones.graph_decoding` | top-k neighbour graph of the items from the learned code embeddings, beam b, q steps |

The harness's ``rank`` is RPG's decoding, the graph walk (``decodes = True``); ``score`` is the
exact gather, which the evaluator's ``global`` rows use (``evaluation.global_ranking``). As in
the official code, VALIDATION during training ranks exactly (``validate_with: exact``; the
graph depends on the code embeddings being trained) and the graph is built once, after the best
state is restored; from then on ``rank`` walks it (the reported validation and test rows).
``graph_grid`` lists (b, k, q) settings to choose from on validation NDCG@10 after training
(the paper's README and its Table 6 disagree on them); the fit log records every setting's
validation NDCG@10, the exact one, the graph's build time and the share of items a walk
visits (``rpg.graph``).

Training samples (the official tokenizer's layout, history cap ``max_history``, the suite's
20): a training sequence of at most max_len + 1 items is one row with a loss at every position;
a longer one adds, for each later target, its own row of the max_len items before it,
supervised at the last position only. So every prefix is a target once, with the longest
history the cap allows. ``train_last_n`` keeps each user's last n targets only (quick scale).

Defaults: the official config and the paper's (n_embd 448, 2 layers, 4 heads, inner 1024,
gelu_new, dropout 0.5 on embeddings and attention, 0 on residuals, LN eps 1e-12; τ 0.07; AdamW
lr 3e-4, weight decay 0, batch 256, 10,000 warm-up steps then cosine decay over the run, grad
clip 1.0, 150 epochs, early stopping after 20 validations without gain; b / k / q = 50 / 50 / 3).
Per dataset the paper tunes m, lr, τ and b / k / q (the presets carry Beauty's: m 32, lr 1e-2,
τ 0.03, b / k / q chosen on validation between the README's 20 / 200 / 3 and Table 6's
10 / 100 / 3).

Exclusions follow the run's evaluation protocol (:mod:`benchmarks.evaluation.protocols`): the
evaluator hands ``rank`` and ``score`` the user's history as ``exclude`` under ``masked`` and
nothing under ``unmasked``; the walk then keeps excluded items out of its starts and its beam
(so the beam keeps its width b), the exact ranking masks them like every method's
(:func:`benchmarks.protocol.topk_from_scores`). The official code excludes nothing, which is
the ``unmasked`` protocol.

Choices the paper leaves open (see also identifiers.opq and backbones.graph_decoding): the PCA
width for 384-d MiniLM (128, the sentence-t5 recipe); distinct random starts seeded per user;
exclusions inside the walk; positions counted from the first real history item.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from backbones.graph_decoding import graph_walk, neighbour_graph, random_starts
from backbones.rpg import RPGNetwork, exact_scores
from benchmarks.config import build_config
from benchmarks.data.dataset import left_pad
from benchmarks.errors import ConfigError
from benchmarks.evaluation import user_batch
from benchmarks.protocol import UserBatch, Validator, history_window, topk_from_scores
from benchmarks.registry import IDENTIFIERS, config_class, register_method
from benchmarks.training import TorchRecommender, TrainConfig, train_loop, warmup_decay_scheduler
from benchmarks.utils import seed_everything
from identifiers.base import ItemIdentifiers, load_or_build

log = logging.getLogger(__name__)

VALIDATE_WITH = ("exact", "graph")


@dataclass
class RPGConfig(TrainConfig):
    identifier: str = "opq"                  # any level-structured codes scheme (ablations: rq-kmeans ties)
    identifier_config: dict = field(default_factory=dict)
    hidden: int = 448                        # GPT-2 n_embd
    n_layers: int = 2
    n_heads: int = 4
    inner: int = 1024
    activation: str = "gelu_new"
    embd_dropout: float = 0.5
    attn_dropout: float = 0.5
    resid_dropout: float = 0.0
    layer_norm_eps: float = 1e-12
    init_range: float = 0.02
    pooling: str = "mean"                    # mean (the code) | max
    temperature: float = 0.07                # τ of the cosine logits
    beams: int = 50                          # b
    edges: int = 50                          # k (neighbours per item; at most the item count)
    steps: int = 3                           # q
    graph_grid: tuple[tuple[int, int, int], ...] = ()   # (b, k, q) settings chosen on validation
    graph_chunk: int = 1024                  # rows of the similarity computed at once
    visited_users: int = 1000                # validation users whose walks count visited items
    validate_with: str = "exact"             # exact (the official code) | graph
    max_history: int | None = None           # None: the dataset's cap (20)
    train_last_n: int | None = None          # keep each user's last n training targets
    warmup_steps: int = 10000
    schedule: str = "cosine"                 # cosine | linear | constant
    lr: float = 3e-4
    weight_decay: float = 0.0
    batch_size: int = 256
    epochs: int = 150
    patience: int = 20
    grad_clip: float | None = 1.0

    def nested_configs(self) -> dict[str, type]:
        """``identifier_config`` must fit the identifier scheme's config (checked by build_config)."""
        return {"identifier_config": config_class(IDENTIFIERS, self.identifier, "identifier")}

    def validate(self) -> None:
        """Raise ConfigError naming the first field RPG cannot run with."""
        for key, low in (("beams", 1), ("edges", 1), ("steps", 1), ("graph_chunk", 1), ("hidden", 1),
                         ("n_layers", 1), ("n_heads", 1), ("inner", 1), ("visited_users", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"rpg {key}: expected an integer >= {low}, got {getattr(self, key)}")
        if self.hidden % self.n_heads:
            raise ConfigError(f"rpg hidden: {self.hidden} is not divisible by n_heads ({self.n_heads})")
        if self.pooling not in ("mean", "max"):
            raise ConfigError(f"rpg pooling: expected 'mean' or 'max', got {self.pooling!r}")
        if self.validate_with not in VALIDATE_WITH:
            raise ConfigError(f"rpg validate_with: expected one of {', '.join(VALIDATE_WITH)}, "
                              f"got {self.validate_with!r}")
        if self.temperature <= 0:
            raise ConfigError(f"rpg temperature: expected a positive number, got {self.temperature}")
        for setting in self.graph_grid:
            if min(setting) < 1:
                raise ConfigError(f"rpg graph_grid: every (b, k, q) must be positive, got {list(setting)}")


# --------------------------------------------------------------------------- training rows
def training_rows(train: list[np.ndarray], max_len: int, last_n: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """RPG's training rows (module docstring): inputs [R, max_len] item ids and labels
    [R, max_len] (the next item where a loss applies, 0 elsewhere), both left-padded so that a
    row's last column is its most recent input item. Targets are positions t >= 1 of each
    sequence (the last ``last_n`` of them with ``last_n``)."""
    inputs, labels = [], []
    for seq in train:
        seq = np.asarray(seq, np.int64)
        n = len(seq)
        if n < 2:
            continue
        first = 1 if last_n is None else max(1, n - last_n)
        head = min(n, max_len + 1)
        if first < head:            # the first window: every supervised position in one row
            lab = seq[1:head].copy()
            lab[:first - 1] = 0
            inputs.append(seq[:head - 1])
            labels.append(lab)
        for t in range(max(first, head), n):      # each later target: its own row
            inputs.append(seq[t - max_len:t])
            lab = np.zeros(max_len, np.int64)
            lab[-1] = seq[t]
            labels.append(lab)
    return left_pad(inputs, max_len), left_pad(labels, max_len)


def code_table(ids: ItemIdentifiers, identifier: str) -> tuple[np.ndarray, list[int]]:
    """Every item's within-digit codes [N, m] and the codes per digit, from a level-structured
    codes scheme whose identifiers all have one token per level; ConfigError otherwise."""
    if ids.kind != "codes" or not ids.levels:
        raise ConfigError(f"rpg identifier: {identifier!r} gives no level-structured codes (RPG needs "
                          f"one code per digit, e.g. opq)")
    codes = ids.code_matrix()
    if (codes < 0).any():
        raise ConfigError(f"rpg identifier: {identifier!r} gives identifiers of different lengths; "
                          f"RPG needs one code per digit for every item")
    return codes, [len(level) for level in ids.levels]


# --------------------------------------------------------------------------- the recommender
@register_method("rpg")
class RPG(TorchRecommender):
    """RPG (Hou et al., KDD 2025): OPQ codes predicted in parallel, exact gather or graph decoding."""

    family = "codebook"
    Config = RPGConfig
    needs = frozenset({"text"})
    decodes = True
    smoke_config = {"epochs": 2, "batch_size": 32, "hidden": 32, "n_layers": 1, "n_heads": 2, "inner": 64,
                    "warmup_steps": 4, "lr": 3e-3, "beams": 10, "edges": 12, "steps": 2,
                    "identifier_config": dict(IDENTIFIERS.get("opq").smoke_config)}

    @classmethod
    def family_of(cls, config: RPGConfig | None = None) -> str:
        """The family of the identifier scheme the config runs (the default's: opq, codebook)."""
        return IDENTIFIERS.get((config or cls.Config()).identifier).family

    def __init__(self, config: RPGConfig, ctx):
        config.validate()
        self._setup(config, ctx)
        seed_everything(ctx.seed)      # the tokenizer's random numbers must not move the init
        super().__init__(config, ctx)
        self.setting = (config.beams, min(config.edges, self.n_items), config.steps)
        self._use_graph = config.validate_with == "graph"
        self._adjacency: torch.Tensor | None = None
        self._graph_edges = 0

    def cold_scoring(self) -> str | None:
        """An item's input and scores come from its codes, which come from its text."""
        return "content" if IDENTIFIERS.get(self.config.identifier).reads_item_content() else None

    def write_artefacts(self, cell) -> None:
        """The cell keeps the identifiers RPG ran on and their code usage (the report's table)."""
        from benchmarks.analysis import code_usage

        cell.write_identifiers(self.identifiers, self.dataset.item_ids, code_usage(self.identifiers))

    # ------------------------------------------------------------------ set-up
    def _setup(self, cfg: RPGConfig, ctx) -> None:
        ds = ctx.dataset
        scheme = IDENTIFIERS.get(cfg.identifier)
        id_cfg = build_config(scheme.Config, cfg.identifier_config)
        self.identifiers = load_or_build(cfg.identifier, id_cfg, ds, ctx.features, ctx.seed, ctx.cache,
                                         progress=ctx.progress)
        codes, self.sizes = code_table(self.identifiers, cfg.identifier)
        self.codes = torch.zeros((ds.n_items + 1, codes.shape[1]), dtype=torch.long)
        self.codes[1:] = torch.as_tensor(codes)
        self.max_history = history_window(cfg.max_history, ds.max_history, type(cfg).__qualname__)
        self.inputs, self.labels = training_rows(ds.train, self.max_history, cfg.train_last_n)
        if not len(self.inputs):
            raise ValueError(f"rpg: no training sequence of {ds.name!r} has two items")

    def build(self) -> RPGNetwork:
        c = self.config
        return RPGNetwork(self.codes, self.sizes, hidden=c.hidden, n_layers=c.n_layers, n_heads=c.n_heads,
                          inner=c.inner, max_len=self.max_history, activation=c.activation,
                          embd_dropout=c.embd_dropout, attn_dropout=c.attn_dropout,
                          resid_dropout=c.resid_dropout, layer_norm_eps=c.layer_norm_eps,
                          init_range=c.init_range, temperature=c.temperature, pooling=c.pooling)

    # ------------------------------------------------------------------ training
    def n_batches(self) -> int:
        return -(-len(self.inputs) // self.config.batch_size)

    def batches(self, rng):
        for idx in self.shuffled_slices(rng, len(self.inputs)):
            inp, lab = self.inputs[idx], self.labels[idx]
            keep = (inp > 0).any(0)                                     # drop all-padding columns
            first = int(np.argmax(keep))
            yield (torch.from_numpy(inp[:, first:]).to(self.device),
                   torch.from_numpy(lab[:, first:]).to(self.device))

    def loss(self, batch) -> torch.Tensor:
        inputs, labels = batch
        h = self.module.hidden_states(inputs)
        sel = labels > 0
        return self.module.loss(h[sel], labels[sel])

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay,
                                 foreach=True)

    def scheduler(self, optimizer, total_steps: int):
        return warmup_decay_scheduler(optimizer, self.config.schedule, self.config.warmup_steps, total_steps)

    def train(self):
        self._adjacency = None          # the code embeddings are about to change
        return super().train()

    def fit(self, validator: Validator | None = None) -> dict:
        cfg = self.config
        out = train_loop(self, validator)
        exact_valid = out.get("best_valid_ndcg10")
        self._use_graph = True
        edges = max([self.setting[1]] + [min(k, self.n_items) for _, k, _ in cfg.graph_grid])
        t0 = time.perf_counter()
        self._ensure_graph(edges)
        build_s = time.perf_counter() - t0
        grid = {}
        if validator is not None:
            settings = list(dict.fromkeys([tuple(s) for s in cfg.graph_grid] or [self.setting]))
            for b, k, q in settings:
                self.setting = (b, min(k, self.n_items), q)
                grid[f"{b}/{k}/{q}"] = float(validator(self))
            best = max(grid, key=grid.get)                      # ties: the first listed
            b, k, q = (int(v) for v in best.split("/"))
            self.setting = (b, min(k, self.n_items), q)
        visited = self._visited_share()
        b, k, q = self.setting
        collisions = self.identifiers.stats.get("collisions_after") or {}
        shared = collisions.get("collision_rate")
        n_params = sum(p.numel() for p in self.module.parameters())
        out["decoding"] = "graph"
        out["rpg"] = {
            "identifier": self.config.identifier, "digits": len(self.sizes), "codes_per_digit": self.sizes,
            "collision_policy": "ties (items with the same code tuple tie in every score)",
            "shared_code_share_before": shared, "shared_code_share_after": shared,
            "codes_hash": self.identifiers.stats.get("codes_hash"),
            "parameters": n_params, "training_rows": int(len(self.inputs)),
            "supervised_positions": int((self.labels > 0).sum()),
            "graph": {"beams": b, "edges": k, "steps": q, "edges_built": self._graph_edges,
                      "build_seconds": round(build_s, 3), "valid_ndcg10_by_setting": grid,
                      "valid_ndcg10_exact": exact_valid, "visited_share": visited,
                      "chosen_on": "validation" if cfg.graph_grid and validator is not None else "config"},
        }
        share_txt = "n/a" if shared is None else f"{100 * shared:.2f} %"
        visited_txt = "" if visited is None else f", a walk visits {100 * visited:.1f} % of the items"
        out["notes"] = (f"RPG: {len(self.sizes)} digits x {max(self.sizes)} codes ({self.config.identifier}), "
                        f"ties kept ({share_txt} of items share their code tuple); graph decoding "
                        f"b/k/q = {b}/{k}/{q}{visited_txt}.")
        return out

    # ------------------------------------------------------------------ inference
    def _ensure_graph(self, edges: int | None = None) -> torch.Tensor:
        edges = max(edges or 0, self.setting[1])
        if self._adjacency is None or self._graph_edges < edges:
            tables = [t.detach() for t in self.module.digit_tables()]
            self._adjacency = neighbour_graph(tables, self.codes.to(self.device), edges, self.config.graph_chunk)
            self._graph_edges = int(self._adjacency.shape[1])
        return self._adjacency

    def _log_probs(self, batch: UserBatch) -> torch.Tensor:
        hist = batch.history[:, -self.max_history:].to(self.device)
        real = (hist > 0).any(0)
        if real.any():
            hist = hist[:, int(real.nonzero()[0]):]
        return self.module.user_log_probs(hist)

    @torch.no_grad()
    def score(self, batch: UserBatch) -> torch.Tensor:
        """Exact scores of every item (the global ranking): mean_j L[j, c_j(i)]."""
        return exact_scores(self._log_probs(batch), self.module.flat, self.n_items)

    @torch.no_grad()
    def rank(self, batch: UserBatch, k: int, candidates: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph-constrained decoding (after training; exact top-k while training validates
        with ``validate_with: exact``). ``exclude`` [B, M] (0 = none): the items the run's
        protocol removes from the user's ranking (its history under ``masked``); they never
        enter the walk."""
        if not self._use_graph:
            return topk_from_scores(self.score(batch), k, candidates, exclude)
        return self.walk(batch, k, candidates, exclude)[:2]

    def _allowed(self, n_users: int, candidates, exclude) -> torch.Tensor | None:
        if candidates is None and (exclude is None or not exclude.numel()):
            return None
        allowed = torch.ones((n_users, self.n_items + 1), dtype=torch.bool, device=self.device)
        if candidates is not None:
            allowed &= candidates.to(self.device).unsqueeze(0)
        if exclude is not None and exclude.numel():
            exclude = exclude.to(self.device)
            rows = torch.arange(n_users, device=self.device).unsqueeze(1).expand_as(exclude)
            allowed[rows, exclude] = False
        allowed[:, 0] = False
        return allowed

    @torch.no_grad()
    def walk(self, batch: UserBatch, k: int, candidates: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None, count_visited: bool = False):
        """Top-k items [B, k] and scores [B, k] of the graph walk, and its info dict."""
        b, edges, steps = self.setting
        if k > b:
            raise ValueError(f"{self.name}: top-{k} needs beams >= {k}, the setting has beams = {b}")
        adjacency = self._ensure_graph()[:, :edges]
        logp = self._log_probs(batch)
        allowed = self._allowed(len(batch), candidates, exclude)
        starts = random_starts(batch.users.cpu().numpy(), self.ctx.seed, b, self.n_items, allowed)
        # a walk that scores more items than the catalogue holds looks them up in the exact
        # scores instead (the same numbers, fewer gathers)
        table = exact_scores(logp, self.module.flat, self.n_items) if b * edges * steps >= self.n_items else None
        items, scores, info = graph_walk(logp, self.module.flat, adjacency, starts, steps, allowed,
                                         count_visited=count_visited, table=table)
        return items[:, :k], scores[:, :k], info

    def _visited_share(self) -> float | None:
        """Mean share of the catalogue a walk scores, over up to ``visited_users`` validation
        users (a fixed, seeded sample)."""
        users = self.dataset.eval_users("valid")
        if not len(users) or not self.config.visited_users:
            return None
        if len(users) > self.config.visited_users:
            users = np.sort(np.random.default_rng(self.ctx.seed).choice(users, self.config.visited_users, replace=False))
        total = 0
        self.eval()
        for s in range(0, len(users), 256):
            batch = user_batch(self.dataset, "valid", users[s:s + 256])
            _, _, info = self.walk(batch, 1, count_visited=True)
            total += int(info["visited"].sum())
        return round(total / (len(users) * self.n_items), 6)
