"""Benchmark: how the cost of every stage grows with the catalog (issue 17, scale).

    python -m benchmarks.bench_scale --sizes 10000,100000,1000000 --output results/scale

For each catalog size N a synthetic catalog (:mod:`benchmarks.data.synthetic`: N items,
users in proportion, power-law popularity, planted sequential structure, random 384-d text
embeddings) is generated once and cached; then every stage below runs with a bounded budget,
each (stage, N) in a FRESH subprocess, one torch / BLAS thread, and records

- ``seconds``: wall time of the stage's timed part (its set-up, e.g. loading the dataset or
  building the model it runs, is not timed);
- ``peak_mb``: the stage's own peak memory: the kernel's resident-set high-water mark
  (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the stage) minus the
  resident set when the stage starts (after the set-up, a garbage collection and
  ``malloc_trim``). It counts everything the process touches (numpy, torch, Python objects)
  and is exact (not sampled); ``rss_mb`` is the process's total high-water mark.

A watchdog kills a stage whose process exceeds ``--max-rss-gb`` (8 GiB by default) or runs
longer than ``--stage-timeout``; the table records that instead of a figure. The stages (the
``users`` column says whether a stage ranks a FIXED number of users at every N, or touches
ALL users, whose number grows in proportion to N):

| stage | users | what is timed (the suite's own code path) |
|---|---|---|
| preprocess | all | ``preprocess``: k-core, time order, leave-one-out split, id maps |
| training_samples | all | ``Dataset.training_samples`` (every prefix) + ``training_windows`` (SASRec) |
| rqvae_epoch_tiger | - | ``train_rqvae``, TIGER config (3 x 256), one epoch incl. k-means init |
| rqvae_epoch_letter | - | one epoch, LETTER config: Sinkhorn last level, CF loss, diversity loss with constrained k-means |
| codes_tiger | - | ``build_codebook_identifiers`` with a quantiser trained in the set-up (>= ``--codes-steps`` steps): codes of all items, TIGER's extra token |
| codes_lcrec | - | the same, LC-Rec config: 4 x 256, collisions reassigned (``resolve_collisions``) |
| collisions | - | ``resolve_collisions`` (LC-Rec / LETTER) on the catalog's random 3 x 256 codes: the last level reassigned in every prefix that repeats a code |
| codes_sinkhorn_all | - | ``encode_items`` with ``final_sinkhorn``: one Sinkhorn plan over all items |
| p5cid | all | ``CollaborativeID.build``: co-occurrence graph, recursive spectral clustering, tokens |
| p5cid_root | all | the bounded part of P5-CID: the co-occurrence graph and the first spectral split of all items |
| identifiers | - | ``published-codes`` identifiers from the catalog's random 3 x 256 codes (+ TIGER's token), uniqueness check |
| token_space | - | ``TokenSpace``: the item token table |
| trie | - | ``TokenSpace.trie``: the tensorised trie over all items |
| beam_search | fixed | ``Evaluator.rank`` of a T5 ``generative`` model (beam 20, masked protocol) |
| global_ranking | fixed | ``Evaluator.rank(exact=True)``: log-probability of every item, per user |
| setrec_item_table | - | SETRec-T5's token table of all items (CF projection + autoencoder) |
| setrec_grounding | fixed | SETRec-T5 ``rank`` (one pass, grounding against all items, top-K) |
| rpg_graph_decoding | fixed | RPG's ``rank`` through ``Evaluator.rank`` (needs ``benchmarks.methods.rpg``; skipped, "not available", without it) |
| sasrec_topk | fixed | ``Evaluator.rank`` of SASRec: full scores over all items, masked top-K |
| lightgcn_adjacency | all | ``LightGCN`` construction: training pairs, normalised adjacency, CSR |
| lightgcn_propagation | all | one propagation over the whole graph (``final_embeddings``) |
| lightgcn_bpr_steps | all | two BPR training steps (each propagates through the whole graph, forward and backward) |
| metrics | all | ``Evaluator`` construction + ``evaluate`` of every test user's (given) top-K lists: all and popularity rows |

Models are untrained (random weights): what a stage costs does not depend on training. The
generative and SETRec backbones are the quick preset's T5 (d_model 64, 2 + 2 layers, 4 heads of
16, feed-forward 128; ``--d-model`` ...), history 10. Outputs (``--output``): ``scale.csv``
(one row per stage and N), ``table.md`` (stage x N: seconds and peak MB, fitted slopes),
``scale.png|pdf`` (log-log cost against N per stage, slope in the legend), ``scale.json``
(every record, the catalogs' statistics, the machine).

``--baseline-ref REF`` also runs ``--baseline-stages`` on the code as it was at commit REF
(every project file that changed since REF restored, this script and the synthetic catalog
kept), alternating with the current code on the same catalog, and writes ``fixes.md`` /
``fixes.csv``: seconds and peak memory before and after, their ratio, and whether the two
outputs are identical (each stage reports a digest of what it produced).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.features import FeatureStore

DEFAULT_SIZES = "10000,100000,1000000"
#: files that define the measurement itself: kept as they are when the baseline is built
BENCH_FILES = ("benchmarks/bench_scale.py", "benchmarks/data/synthetic.py")


# =============================================================================== stages
@dataclass
class StageDef:
    name: str
    users: str                     # "all" (in proportion to N), "fixed", "-" (no users)
    group: str                     # panel of the figure
    setup: Callable[["Env"], tuple[Callable[[], Any], Callable[[Any], dict]]]
    needs: str | None = None       # a module the stage needs; without it: "not available"


STAGES: dict[str, StageDef] = {}
GROUPS = ("data", "identifiers", "decoding", "baselines and evaluation")


def stage(name: str, users: str, group: str, needs: str | None = None):
    """Register a stage: ``setup(env)`` returns (run, report); ``run()`` is timed and measured,
    ``report(result)`` (not measured) says what it produced, with a ``digest``."""
    def wrap(fn):
        STAGES[name] = StageDef(name, users, group, fn, needs)
        return fn
    return wrap


def digest(*arrays) -> str:
    """SHA-256 (first 16 hex digits) of the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def tokens_digest(tokens: list[tuple[str, ...]]) -> str:
    return hashlib.sha256("\n".join(" ".join(t) for t in tokens).encode()).hexdigest()[:16]


class SyntheticFeatures(FeatureStore):
    """The FeatureStore of a synthetic catalog: ``text_embeddings`` returns the catalog's
    random vectors (whatever template or encoder is asked for: they stand for the encoder's
    output); every other feature is computed as for any dataset."""

    def __init__(self, dataset, catalog, seed: int = 0):
        from benchmarks.cache import cache_dir
        from benchmarks.data.synthetic import SYNTHETIC_ENCODER

        super().__init__(dataset, cache_dir(), seed=seed, text_encoder=SYNTHETIC_ENCODER, progress=False)
        self.catalog = catalog
        self._text: np.ndarray | None = None

    def text_embeddings(self, template: str | None = None, encoder: str | None = None,
                        batch_size: int = 256) -> np.ndarray:
        if self._text is None:
            emb = self.catalog.text_embeddings()
            if emb.shape[0] != self.ds.n_items + 1:
                raise ValueError(f"{self.catalog.folder}/text.npy: expected {self.ds.n_items + 1} rows "
                                 f"(one per item of dataset {self.ds.name!r}, row 0 padding), got {emb.shape[0]}")
            self._text = emb
        return self._text


class Env:
    """What the stages of one catalog share in one worker process (built lazily)."""

    def __init__(self, catalog, args):
        self.catalog = catalog
        self.args = args
        self._ds = None
        self._evaluators = {}

    @property
    def dataset(self):
        if self._ds is None:
            self._ds = self.catalog.dataset()
        return self._ds

    def context(self, features: bool = False):
        """The run context (:func:`benchmarks.context.build_context`, nothing cached), with the
        catalog's FeatureStore where the stage's method reads features."""
        from dataclasses import replace

        from benchmarks.context import build_context
        ctx = build_context(self.dataset, seed=self.args.seed, evaluator=self.evaluator(), needs=frozenset(),
                            progress=False)
        ctx = replace(ctx, cache=None)
        return replace(ctx, features=SyntheticFeatures(self.dataset, self.catalog, self.args.seed)) if features else ctx

    def text(self) -> np.ndarray:
        return self.catalog.text_embeddings()[1:]

    def t5(self) -> dict:
        a = self.args
        return {"d_model": a.d_model, "n_layers": a.layers, "n_heads": a.heads, "d_kv": a.d_kv,
                "d_ff": a.d_ff, "dropout": 0.0}

    def evaluator(self, batch: int | None = None):
        from benchmarks.evaluation import EvalConfig, Evaluator
        batch = batch or self.args.batch
        if batch not in self._evaluators:
            self._evaluators[batch] = Evaluator(self.dataset, EvalConfig(batch_size=batch, protocol="masked"))
        return self._evaluators[batch]

    def test_users(self, n: int) -> np.ndarray:
        return self.dataset.eval_users("test")[:n]

    def generative(self):
        from benchmarks.methods.generative import GenerativeRecommender
        from benchmarks.config import build_config
        cfg = build_config(GenerativeRecommender.Config, {
            "identifier": "published-codes", "identifier_config": {"path": str(self.catalog.codes_file)},
            "backbone_config": self.t5(), "beams": self.args.beams, "max_history": self.args.history,
            "train_last_n": 1})
        model = GenerativeRecommender(cfg, self.context(features=True)).eval()
        model._trie(None)        # the trie over all items (built once per model: set-up)
        return model


def _rqvae_config(scheme: str, **extra):
    from benchmarks.config import build_config
    from benchmarks.registry import IDENTIFIERS
    return build_config(IDENTIFIERS.get(scheme).Config, {"epochs": 1, **extra})


@stage("preprocess", "all", "data")
def _preprocess(env: Env):
    from benchmarks.data.preprocess import preprocess
    raw = env.catalog.raw()

    def run():
        return preprocess(raw, env.catalog.name, env.catalog.options)

    def report(ds):
        flat = [np.concatenate(getattr(ds, s)) for s in ("train", "valid", "test")]
        return {"items": ds.n_items, "users": ds.n_users, "interactions": ds.n_interactions,
                "digest": digest(*flat)}
    return run, report


@stage("training_samples", "all", "data")
def _samples(env: Env):
    ds = env.dataset

    def run():
        return ds.training_samples(ds.max_history), ds.training_windows(ds.max_history)

    def report(out):
        (u, h, t), (wu, w) = out
        return {"samples": int(len(t)), "windows": int(len(wu)), "digest": digest(u, h, t, wu, w)}
    return run, report


def _rqvae_epoch(env: Env, scheme: str):
    from identifiers.quantizers import train_rqvae
    text = env.text()
    cfg = _rqvae_config(scheme)
    cf = None
    if cfg.alpha > 0:   # LETTER: the catalog's random CF vectors, cut to the latent width
        cf = np.ascontiguousarray(np.load(env.catalog.cf_file)[:, :cfg.latent_dim])

    def run():
        return train_rqvae(text, cfg, env.args.seed, cf=cf, progress=False)

    def report(out):
        model, stats = out
        return {"items": len(text), "final_losses": stats["final_losses"],
                "digest": digest(model.codebooks)}
    return run, report


@stage("rqvae_epoch_tiger", "-", "identifiers")
def _rqvae_tiger(env: Env):
    return _rqvae_epoch(env, "tiger")


@stage("rqvae_epoch_letter", "-", "identifiers")
def _rqvae_letter(env: Env):
    return _rqvae_epoch(env, "letter")


def _trained_rqvae(env: Env, scheme: str, **extra):
    """(text embeddings, config, (trained model, stats)) of a quantiser trained in the set-up for at least
    ``--codes-steps`` optimiser steps (whole epochs: one at 1M items): codes of a model that
    has not collapsed onto a few codes, so that collision handling sees what it sees after
    training and not the first steps' collapse."""
    import math

    import identifiers.quantizers as q
    text = env.text()
    cfg = _rqvae_config(scheme, **extra)
    cfg.epochs = max(1, math.ceil(env.args.codes_steps / math.ceil(len(text) / cfg.batch_size)))
    return text, cfg, q.train_rqvae(text, cfg, env.args.seed, progress=False)


def _codes(env: Env, scheme: str, **extra):
    """What ``build_codebook_identifiers`` does after training, on the model trained in the
    set-up (:func:`_trained_rqvae`): the code assignment of every item, collision handling and
    the identifier tokens, through the function the schemes call (``identifiers_from_quantizer``)."""
    import identifiers.quantizers as q
    text, cfg, (model, stats) = _trained_rqvae(env, scheme, **extra)

    def run():
        return q.identifiers_from_quantizer(scheme, model, stats, text, cfg)

    def report(ids):
        s = ids.stats
        return {"items": ids.n_items, "setup_epochs": cfg.epochs,
                "collided_before": s["collisions_before"]["collided_items"],
                "collided_after": s["collisions_after"]["collided_items"],
                "reassigned": s.get("reassigned_items"), "digest": tokens_digest(ids.tokens)}
    return run, report


@stage("codes_tiger", "-", "identifiers")
def _codes_tiger(env: Env):
    return _codes(env, "tiger")


@stage("codes_lcrec", "-", "identifiers")
def _codes_lcrec(env: Env):
    return _codes(env, "lcrec")


@stage("collisions", "-", "identifiers")
def _collisions(env: Env):
    """LC-Rec / LETTER's collision reassignment (``resolve_collisions``) under load: the
    catalog's uniformly random 3 x 256 codes, the last level reassigned within each prefix
    of the first two (N / 65,536 items per prefix: at 1M items ~15, so most prefixes hold a
    repeated code), random 32-d residuals and codebook."""
    import scipy.optimize  # noqa: F401  (imported by resolve_collisions: not part of the timing)

    from identifiers.published import read_codes
    from identifiers.quantizers import resolve_collisions
    ds = env.dataset
    codes = read_codes(env.catalog.codes_file)
    numbers = np.array([[int(t[3:-1]) for t in codes[rid]] for rid in ds.item_ids], dtype=np.int64)
    rng = np.random.default_rng(env.args.seed)
    resid = rng.standard_normal((len(numbers), 32)).astype(np.float32)
    book = rng.standard_normal((int(numbers[:, -1].max()) + 1, 32)).astype(np.float32)

    def run():
        return resolve_collisions(numbers, resid, book)

    def report(out):
        new, moved = out
        return {"items": len(new), "moved": int(moved), "digest": digest(new)}
    return run, report


@stage("codes_sinkhorn_all", "-", "identifiers")
def _codes_sinkhorn(env: Env):
    import torch

    from identifiers.quantizers import encode_items
    text, cfg, (model, _) = _trained_rqvae(env, "lcrec", final_sinkhorn=True)

    def run():
        with torch.no_grad():
            return encode_items(model, text)

    def report(out):
        return {"items": len(text), "digest": digest(out["codes"])}
    return run, report


@stage("p5cid", "all", "identifiers")
def _p5cid(env: Env):
    import scipy.sparse.linalg  # noqa: F401  (imports of the clustering: not part of the timing)
    import sklearn.cluster  # noqa: F401

    from identifiers.p5_cid import CIDConfig, CollaborativeID
    ds = env.dataset

    def run():
        return CollaborativeID(CIDConfig(), ds, None, env.args.seed, progress=False).build()

    def report(ids):
        return {**{k: ids.stats[k] for k in ("max_depth", "leaves", "chunked_clusters", "graph_edges")},
                "digest": tokens_digest(ids.tokens)}
    return run, report


@stage("p5cid_root", "all", "identifiers")
def _p5cid_root(env: Env):
    """The bounded P5-CID stage: the co-occurrence graph and the first spectral split of the
    whole catalog (the exact call ``build`` makes at the root)."""
    import scipy.sparse.linalg  # noqa: F401  (imports of the clustering: not part of the timing)
    import sklearn.cluster  # noqa: F401

    from identifiers.p5_cid import CIDConfig, CollaborativeID, cooccurrence_graph
    ds = env.dataset
    scheme = CollaborativeID(CIDConfig(), ds, None, env.args.seed, progress=False)

    def run():
        graph = cooccurrence_graph(ds.train, ds.n_items)
        return graph, scheme._split(graph, np.arange(ds.n_items), env.args.seed)

    def report(out):
        graph, labels = out
        sizes = np.bincount(labels)
        return {"graph_edges": int(graph.nnz - ds.n_items), "clusters": int(len(sizes)),
                "largest_cluster": int(sizes.max()), "digest": digest(labels)}
    return run, report


def _published_ids(env: Env):
    from identifiers.published import PublishedCodes, PublishedCodesConfig
    scheme = PublishedCodes(PublishedCodesConfig(path=str(env.catalog.codes_file)), env.dataset,
                            None, env.args.seed, progress=False)
    ids = scheme.build()
    ids.check_unique()
    return ids


@stage("identifiers", "-", "identifiers")
def _identifiers(env: Env):
    env.dataset

    def run():
        return _published_ids(env)

    def report(ids):
        return {"items": ids.n_items, "digest": tokens_digest(ids.tokens)}
    return run, report


def _token_space(ids):
    from benchmarks.methods.token_space import TokenSpace
    return TokenSpace(ids, text_tokenizer=None, user_tokens=0, max_title_tokens=32, titles=None)


@stage("token_space", "-", "decoding")
def _space(env: Env):
    ids = _published_ids(env)

    def run():
        return _token_space(ids)

    def report(space):
        return {"vocab": space.vocab_size, "digest": digest(space.item_table)}
    return run, report


@stage("trie", "-", "decoding")
def _trie(env: Env):
    space = _token_space(_published_ids(env))

    def run():
        return space.trie()

    def report(trie):
        return {"nodes": trie.n_nodes, "fanout": trie.fanout,
                "digest": digest(trie.edge_key, trie.child_node, trie.child_ptr, trie.leaf_item,
                                 trie.item_paths, trie.n_leaves)}
    return run, report


def _ranking(env: Env, model, n_users: int, exact: bool = False):
    ev = env.evaluator()
    users = env.test_users(n_users)

    def run():
        return ev.rank(model, "test", users, exact=exact)

    def report(out):
        topk, timing = out
        return {"users": int(len(users)), "ms_per_user": round(1000 * timing["seconds"] / max(len(users), 1), 3),
                "digest": digest(topk)}
    return run, report


@stage("beam_search", "fixed", "decoding")
def _beam(env: Env):
    return _ranking(env, env.generative(), env.args.beam_users)


@stage("global_ranking", "fixed", "decoding")
def _global(env: Env):
    return _ranking(env, env.generative(), env.args.global_users, exact=True)


def _setrec(env: Env):
    from benchmarks.methods.setrec import SETRecT5
    from benchmarks.config import build_config
    cfg = build_config(SETRecT5.Config, {"n_sem": 4, "cf_source": "published", "backbone_config": env.t5(),
                                         "max_history": env.args.history, "train_last_n": 1})
    return SETRecT5(cfg, env.context(features=True)).eval()


@stage("setrec_item_table", "-", "decoding")
def _setrec_table(env: Env):
    import torch
    model = _setrec(env)

    def run():
        with torch.no_grad():
            return model._tokens()

    def report(tokens):
        return {"shape": list(tokens.shape), "digest": digest(tokens)}
    return run, report


@stage("setrec_grounding", "fixed", "decoding")
def _setrec_ground(env: Env):
    """SETRec's ranking with its item table computed in the set-up (``Evaluator.rank`` would
    rebuild the table first: that is ``setrec_item_table``); batches and exclusions as the
    evaluator builds them."""
    import torch

    from benchmarks.data.dataset import left_pad
    from benchmarks.evaluation import user_batch
    model = _setrec(env)
    with torch.no_grad():
        model._tokens()
    ds, bs = env.dataset, env.args.batch
    users = env.test_users(env.args.users)
    batches = []
    for s in range(0, len(users), bs):
        u = users[s:s + bs]
        hists = ds.history("test", u)
        batches.append((user_batch(ds, "test", u), torch.from_numpy(left_pad(hists, max(len(h) for h in hists)))))

    def run():
        return torch.cat([model.rank(b, 10, exclude=e)[0] for b, e in batches])

    def report(topk):
        return {"users": int(len(users)), "digest": digest(topk)}
    return run, report


@stage("rpg_graph_decoding", "fixed", "decoding", needs="benchmarks.methods.rpg")
def _rpg(env: Env):
    """RPG: its registered method with its default config, untrained, ranking
    the fixed users through ``Evaluator.rank`` (its graph decoding)."""
    from benchmarks.config import build_config
    from benchmarks.registry import METHODS
    cls = METHODS.get("rpg")
    model = cls(build_config(cls.Config, {}), env.context(features=True)).eval()
    return _ranking(env, model, env.args.users)


@stage("sasrec_topk", "fixed", "baselines and evaluation")
def _sasrec(env: Env):
    from baselines.sasrec import SASRec
    from benchmarks.config import build_config
    model = SASRec(build_config(SASRec.Config, {}), env.context()).eval()
    return _ranking(env, model, env.args.users)


def _lightgcn(env: Env):
    from baselines.lightgcn import LightGCN
    from benchmarks.config import build_config
    return LightGCN, build_config(LightGCN.Config, {}), env.context()


@stage("lightgcn_adjacency", "all", "baselines and evaluation")
def _lgcn_adj(env: Env):
    cls, cfg, ctx = _lightgcn(env)

    def run():
        return cls(cfg, ctx)

    def report(model):
        adj = model.module.adj
        return {"nodes": int(adj.shape[0]), "edges": int(adj._nnz()),
                "digest": digest(adj.indices(), adj.values())}
    return run, report


@stage("lightgcn_propagation", "all", "baselines and evaluation")
def _lgcn_prop(env: Env):
    cls, cfg, ctx = _lightgcn(env)
    model = cls(cfg, ctx).eval()

    def run():
        return model.final_embeddings()

    def report(out):
        return {"digest": digest(*out)}
    return run, report


@stage("lightgcn_bpr_steps", "all", "baselines and evaluation")
def _lgcn_steps(env: Env):
    cls, cfg, ctx = _lightgcn(env)
    model = cls(cfg, ctx).train()
    opt = model.optimizer()
    import itertools
    batches = list(itertools.islice(model.batches(np.random.default_rng(env.args.seed)), 2))

    def run():
        losses = []
        for b in batches:
            loss = model.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    def report(losses):
        return {"losses": [round(x, 6) for x in losses], "digest": digest(np.asarray(losses))}
    return run, report


class _Replay:
    """A Recommender that returns given top-K lists (one row per user id): the evaluator's
    bookkeeping and metrics without a model's cost."""

    name = "replay"
    device = "cpu"
    reads_target_time = False
    decodes = False

    def __init__(self, table):
        self.table = table

    def eval(self):
        return self

    def autocast(self):   # no torch module: nothing to cast (Recommender.autocast's contract)
        import contextlib

        return contextlib.nullcontext()

    def rank(self, batch, k, candidates=None, exclude=None):
        import torch
        items = self.table[batch.users.cpu()][:, :k]
        return items, torch.arange(k, 0, -1, dtype=torch.float32).expand(len(items), k)


@stage("metrics", "all", "baselines and evaluation")
def _metrics(env: Env):
    import torch

    from benchmarks.evaluation import EvalConfig, Evaluator
    ds = env.dataset
    rng = np.random.default_rng(env.args.seed)
    table = torch.from_numpy(rng.integers(1, ds.n_items + 1, (ds.n_users, 10)))
    # a hit for every third user: its test item first
    hit = np.arange(ds.n_users) % 3 == 0
    table[torch.from_numpy(hit), 0] = torch.tensor([int(t[0]) if len(t) else 1 for t, h in zip(ds.test, hit) if h])
    model = _Replay(table)

    def run():
        ev = Evaluator(ds, EvalConfig(protocol="masked"))
        return ev.evaluate(model, splits=("test",), progress=False, throughput=False)

    def report(res):
        return {"users": int(len(ds.eval_users("test"))), "rows": len(res.rows),
                "digest": digest(np.asarray([r["value"] for r in res.rows]))}
    return run, report


# =============================================================================== worker
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"/proc/self/status has no {field!r}")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _reset_peak() -> bool:
    """Reset the kernel's high-water mark of this process (``VmHWM``); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure(name: str, env: Env) -> dict:
    """Set the stage up, then time and measure its run (see the module docstring)."""
    import importlib.util

    import torch
    torch.set_num_threads(1)
    sdef = STAGES[name]
    if sdef.needs and importlib.util.find_spec(sdef.needs) is None:
        print(f"{name}: not available (no module {sdef.needs})", flush=True)
        return {"stage": name, "status": "not available", "note": f"no module {sdef.needs}"}
    t0 = time.perf_counter()
    run, report = sdef.setup(env)
    setup_s = time.perf_counter() - t0
    _trim()
    rss0 = _status_kb("VmRSS")
    exact = _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    out = run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    hwm = _status_kb("VmHWM")
    info = report(out)
    return {"stage": name, "status": "ok", "seconds": round(seconds, 4), "cpu_s": round(cpu, 4),
            "peak_mb": round((hwm - rss0) / 1024, 1), "rss_mb": round(hwm / 1024, 1),
            "start_rss_mb": round(rss0 / 1024, 1), "setup_s": round(setup_s, 2),
            "peak_exact": exact, "info": info}


def worker(args) -> None:
    from benchmarks.data.synthetic import SyntheticCatalog, SyntheticSpec
    spec = SyntheticSpec(**json.loads(args.spec))
    if args.worker == "catalog":
        from benchmarks.data.synthetic import build_catalog
        t0 = time.perf_counter()
        cat = build_catalog(spec)
        rec = {"stage": "catalog", "status": "ok", "seconds": round(time.perf_counter() - t0, 2),
               "folder": str(cat.folder), "stats": cat.meta["stats"]}
    else:
        rec = measure(args.worker, Env(SyntheticCatalog(spec, Path(args.catalog)), args))
    Path(args.result).write_text(json.dumps(rec))


# =============================================================================== driver
def _child_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _budget_args(args) -> list[str]:
    out = []
    for key in ("users", "beam_users", "global_users", "batch", "beams", "history", "seed", "codes_steps",
                "d_model", "layers", "heads", "d_kv", "d_ff"):
        out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return out


def run_worker(args, stage_name: str, spec, catalog: str, tree: Path) -> dict:
    """One (stage, N) in a fresh process (from ``tree``: this checkout or the baseline),
    killed past the memory or time limit."""
    from dataclasses import asdict
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--worker", stage_name,
               "--spec", json.dumps(asdict(spec)), "--catalog", catalog, "--result", str(result),
               *_budget_args(args)]
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        limit_kb = int(args.max_rss_gb * 2 ** 20)
        limit_s = stage_timeouts(args).get(stage_name, args.stage_timeout)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        peak_kb, killed = 0, None
        while proc.poll() is None:
            peak_kb = max(peak_kb, _child_rss_kb(proc.pid))
            if peak_kb > limit_kb:
                killed = f"memory limit: the process passed {args.max_rss_gb:g} GiB"
            elif time.perf_counter() - t0 > limit_s:
                killed = f"time limit: still running after {limit_s:g} s"
            if killed:
                proc.kill()
                break
            time.sleep(0.2)
        output = proc.communicate()[0]
        elapsed = round(time.perf_counter() - t0, 1)
        if killed:
            return {"stage": stage_name, "status": "killed", "note": killed, "wall_s": elapsed}
        if proc.returncode or not result.is_file():
            tail = output.strip().splitlines()[-1:] or ["(no output)"]
            return {"stage": stage_name, "status": "error", "note": tail[0][:300], "wall_s": elapsed,
                    "log": output[-4000:]}
        rec = json.loads(result.read_text())
        rec["wall_s"] = elapsed
        if rec.get("status") == "not available":
            print(f"    {stage_name}: not available ({rec['note']})", flush=True)
        return rec


def stage_timeouts(args) -> dict[str, float]:
    """``--stage-timeouts stage=seconds,...`` as a mapping (stages not named: --stage-timeout)."""
    out = {}
    for part in filter(None, (args.stage_timeouts or "").split(",")):
        name, sep, value = part.partition("=")
        if not sep or name not in STAGES:
            raise SystemExit(f"--stage-timeouts: expected stage=seconds with a known stage, got {part!r}")
        out[name] = float(value)
    return out


def baseline_tree(repo: Path, ref: str, dest: Path) -> list[str]:
    """HEAD's tree with every file that changed since ``ref`` restored to ``ref`` (except the
    benchmark's own files and tests / results), written into ``dest``; returns those files."""
    git = ["git", "-C", str(repo)]
    archive = subprocess.run([*git, "archive", "HEAD"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    changed = subprocess.run([*git, "diff", "--name-only", ref, "HEAD"], check=True, capture_output=True,
                             text=True).stdout.split()
    restored = []
    for path in changed:
        if path in BENCH_FILES or path.startswith(("tests/", "results/")) or not path.endswith(".py"):
            continue
        old = subprocess.run([*git, "show", f"{ref}:{path}"], capture_output=True)
        target = dest / path
        if old.returncode == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(old.stdout)
        elif target.exists():
            target.unlink()
        restored.append(path)
    return restored


def fit_slope(ns: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log10(y) against log10(N) (None with fewer than two points)."""
    pts = [(n, y) for n, y in zip(ns, ys) if y is not None and y > 0]
    if len(pts) < 2:
        return None
    x, y = np.log10([p[0] for p in pts]), np.log10([p[1] for p in pts])
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def _cell(rec: dict | None) -> tuple[str, str]:
    if rec is None:
        return "", ""
    if rec.get("status") == "ok":
        return f"{rec['seconds']:.3g}", f"{rec['peak_mb']:.4g}"
    return rec.get("status", "?"), ""


def summarise(records: list[dict], sizes: list[int]) -> tuple[list[dict], str]:
    """Rows (stage, slopes) and the markdown table."""
    by = {(r["n_items"], r["stage"]): r for r in records if r["stage"] in STAGES}
    rows, lines = [], []
    head = ["stage", "users"] + [f"N={n:,} s" for n in sizes] + [f"N={n:,} MB" for n in sizes] + \
           ["slope s", "slope CPU s", "slope MB"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name, sdef in STAGES.items():
        recs = [by.get((n, name)) for n in sizes]
        if all(r is None for r in recs):
            continue
        ok = [(n, r) for n, r in zip(sizes, recs) if r and r.get("status") == "ok"]
        s_slope = fit_slope([n for n, _ in ok], [r["seconds"] for _, r in ok])
        c_slope = fit_slope([n for n, _ in ok], [max(r.get("cpu_s") or 0, 1e-4) for _, r in ok])
        m_slope = fit_slope([n for n, _ in ok], [max(r["peak_mb"], 1.0) for _, r in ok])
        rows.append({"stage": name, "users": sdef.users, "slope_seconds": s_slope, "slope_cpu_seconds": c_slope,
                     "slope_peak_mb": m_slope})
        cells = [_cell(r) for r in recs]
        fmt = lambda v: "" if v is None else f"{v:.2f}"
        lines.append("| " + " | ".join([name, sdef.users] + [c[0] for c in cells] + [c[1] for c in cells]
                                        + [fmt(s_slope), fmt(c_slope), fmt(m_slope)]) + " |")
    notes = [f"- {r['stage']} at N={r['n_items']:,}: {r['status']} ({r.get('note', '')})"
             for r in records if r["stage"] in STAGES and r.get("status") not in ("ok",)]
    return rows, "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def figure(records: list[dict], sizes: list[int], data_mb: dict[int, float], path: Path) -> list[Path]:
    """Log-log seconds and peak MB against N, one panel pair per stage group, slope in the legend."""
    from benchmarks.figures import _plt, _save
    plt = _plt()
    groups = [g for g in GROUPS if any(STAGES[r["stage"]].group == g for r in records if r["stage"] in STAGES)]
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False)
    for row, group in zip(axes, groups):
        for name, sdef in STAGES.items():
            if sdef.group != group:
                continue
            ok = sorted((r["n_items"], r) for r in records if r["stage"] == name and r.get("status") == "ok")
            if not ok:
                continue
            ns = [n for n, _ in ok]
            for ax, key, floor in ((row[0], "seconds", 1e-4), (row[1], "peak_mb", 1.0)):
                ys = [max(r[key], floor) for _, r in ok]
                slope = fit_slope(ns, ys)
                ax.plot(ns, ys, marker="o", label=f"{name} ({'n/a' if slope is None else f'{slope:.2f}'})")
        if data_mb:
            ns = sorted(data_mb)
            slope = fit_slope(ns, [data_mb[n] for n in ns])
            row[1].plot(ns, [data_mb[n] for n in ns], "k--", lw=1,
                        label=f"the data itself ({'n/a' if slope is None else f'{slope:.2f}'})")
        for ax, ylabel in ((row[0], "seconds (one thread)"), (row[1], "peak memory of the stage (MB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("catalog size N (items; users in proportion)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{group}: {ylabel.split(' (')[0]} (fitted log-log slope)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def _machine() -> dict:
    import torch
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = round(int(fh.readline().split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "memory_gib": mem,
            "processor": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "threads": 1,
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _data_mb(stats: dict, spec) -> float:
    """The catalog's own size: interactions (user, item, time: 24 bytes each) + text and CF
    embeddings (float32)."""
    return (stats["interactions"] * 24 + spec.n_items * (spec.text_dim + spec.cf_dim) * 4) / 2 ** 20


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="catalog sizes N (items), comma-separated")
    p.add_argument("--stages", default=",".join(STAGES), help="stages to run (default: all)")
    p.add_argument("--output", default="results/scale")
    p.add_argument("--users", type=int, default=256, help="fixed users of SASRec top-K, SETRec, RPG")
    p.add_argument("--beam-users", type=int, default=128, help="fixed users of the beam search")
    p.add_argument("--global-users", type=int, default=4, help="fixed users of the exact global ranking")
    p.add_argument("--batch", type=int, default=64, help="users per ranking batch")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--history", type=int, default=10, help="history items a generative model reads")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-kv", type=int, default=16)
    p.add_argument("--d-ff", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--codes-steps", type=int, default=300,
                   help="optimiser steps (whole epochs) of the quantiser the codes_* stages assign codes with")
    p.add_argument("--users-per-item", type=float, default=1.0)
    p.add_argument("--max-rss-gb", type=float, default=8.0, help="kill a stage whose process passes this")
    p.add_argument("--stage-timeout", type=float, default=3600.0, help="kill a stage running longer (s)")
    p.add_argument("--stage-timeouts", default="", help="per-stage time limits, e.g. p5cid=1200")
    p.add_argument("--resume", action="store_true",
                   help="keep the records of --output's scale.json (same budget) and run only the "
                        "(stage, N) pairs it lacks; --sizes adds to its sizes")
    p.add_argument("--in-process", action="store_true",
                   help="run every stage in this process (toy sizes, tests): no fresh process, no watchdog")
    p.add_argument("--baseline-ref", help="also run --baseline-stages on the code of this commit")
    p.add_argument("--baseline-stages", default="", help="stages to compare with --baseline-ref")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--catalog", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return {}

    from dataclasses import asdict

    from benchmarks.data.synthetic import SyntheticCatalog, SyntheticSpec, build_catalog
    from benchmarks.utils import atomic_write_json, atomic_write_text, git_commit
    sizes = [int(s) for s in args.sizes.split(",") if s]
    names = [s for s in args.stages.split(",") if s]
    unknown = [s for s in names if s not in STAGES]
    compare = [s for s in args.baseline_stages.split(",") if s]
    unknown += [s for s in compare if s not in STAGES]
    if unknown:
        raise SystemExit(f"--stages / --baseline-stages: unknown {unknown}; known: {', '.join(STAGES)}")
    if compare and not args.baseline_ref:
        raise SystemExit("--baseline-stages needs --baseline-ref")
    stage_timeouts(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[1]
    base_dir = None
    restored: list[str] = []
    if args.baseline_ref:
        base_dir = Path(tempfile.mkdtemp(prefix="bench-scale-baseline-"))
        restored = baseline_tree(repo, args.baseline_ref, base_dir)
        print(f"baseline {args.baseline_ref}: {len(restored)} files restored ({', '.join(restored)})", flush=True)
    records, catalogs, fixes = [], {}, []
    if args.resume:
        records, catalogs, fixes, sizes = _resumed(out / "scale.json", args, sizes)
    done = {(r["n_items"], r["stage"]) for r in records}
    for n in sizes:
        if all((n, name) in done for name in names):
            continue
        spec = SyntheticSpec(n, users_per_item=args.users_per_item, seed=args.seed)
        if args.in_process:
            t0 = time.perf_counter()
            cat = build_catalog(spec)
            cat_rec = {"status": "ok", "seconds": round(time.perf_counter() - t0, 2),
                       "folder": str(cat.folder), "stats": cat.meta["stats"]}
        else:
            cat_rec = run_worker(args, "catalog", spec, "", repo)
            if cat_rec.get("status") != "ok":
                raise SystemExit(f"catalog N={n}: {cat_rec.get('status')}: {cat_rec.get('note')}\n{cat_rec.get('log', '')}")
        catalogs[n] = {**cat_rec, "data_mb": round(_data_mb(cat_rec["stats"], spec), 1)}
        print(f"N={n:,}: catalog {cat_rec['folder']} ({cat_rec['seconds']} s) {cat_rec['stats']}", flush=True)
        env = Env(SyntheticCatalog(spec, Path(cat_rec["folder"])), args) if args.in_process else None
        for name in names:
            if (n, name) in done:
                continue
            if args.in_process:
                rec = measure(name, env)
            else:
                if name in compare:
                    before = run_worker(args, name, spec, cat_rec["folder"], base_dir)
                rec = run_worker(args, name, spec, cat_rec["folder"], repo)
                if name in compare:
                    fixes.append(_fix_row(n, name, before, rec))
            rec["n_items"] = n
            records.append(rec)
            shown = {k: rec.get(k) for k in ("status", "seconds", "cpu_s", "peak_mb", "rss_mb", "setup_s", "note") if k in rec}
            print(f"  {name}: {shown} {rec.get('info', '')}", flush=True)
            _write(out, args, sizes, records, catalogs, fixes, restored, final=False)
    result = _write(out, args, sizes, records, catalogs, fixes, restored, final=True)
    result["commit"] = git_commit(repo)
    atomic_write_json(out / "scale.json", result)
    return result


#: the arguments a record's figures depend on: a resumed run must share them
BUDGET_KEYS = ("users", "beam_users", "global_users", "batch", "beams", "history", "seed", "codes_steps",
               "d_model", "layers", "heads", "d_kv", "d_ff", "users_per_item")


def _resumed(path: Path, args, sizes: list[int]) -> tuple[list, dict, list, list[int]]:
    """(records, catalogs, fixes, sizes) of an earlier run's ``scale.json`` to continue."""
    if not path.is_file():
        return [], {}, [], sizes
    old = json.loads(path.read_text())
    for key in ("records", "catalogs", "args", "sizes"):
        if key not in old:
            raise SystemExit(f"{path}: no {key!r}: not a scale.json of this benchmark")
    differ = {k: (old["args"].get(k), getattr(args, k)) for k in BUDGET_KEYS if old["args"].get(k) != getattr(args, k)}
    if differ:
        raise SystemExit(f"--resume: {path} was measured with another budget {differ} (earlier, now): "
                         "use another --output or the same arguments")
    catalogs = {int(n): c for n, c in old["catalogs"].items()}
    return old["records"], catalogs, old.get("fixes", []), sorted(set(old["sizes"]) | set(sizes))


def _fix_row(n: int, name: str, before: dict, after: dict) -> dict:
    row = {"n_items": n, "stage": name, "before_status": before.get("status"), "after_status": after.get("status")}
    for key in ("seconds", "cpu_s", "peak_mb"):
        b, a = before.get(key), after.get(key)
        row[f"before_{key}"], row[f"after_{key}"] = b, a
        row[f"ratio_{key}"] = round(b / a, 2) if b and a else None
    bd, ad = (before.get("info") or {}).get("digest"), (after.get("info") or {}).get("digest")
    row["identical"] = None if bd is None or ad is None else bd == ad
    row["before_note"] = before.get("note", "")
    return row


def _write(out: Path, args, sizes, records, catalogs, fixes, restored, final: bool) -> dict:
    """Write the table, csv and json (after every stage: a killed run keeps what it measured)
    and, when ``final``, the figure."""
    from benchmarks.utils import atomic_write_json, atomic_write_text
    import pandas as pd
    rows, table = summarise(records, sizes)
    flat = [{"n_items": r["n_items"], "stage": r["stage"], "users": STAGES[r["stage"]].users,
             "status": r.get("status"), "seconds": r.get("seconds"), "cpu_s": r.get("cpu_s"),
             "peak_mb": r.get("peak_mb"),
             "process_peak_mb": r.get("rss_mb"), "setup_s": r.get("setup_s"), "note": r.get("note", ""),
             "info": json.dumps(r.get("info", {}), sort_keys=True)} for r in records]
    atomic_write_text(out / "scale.csv", pd.DataFrame(flat).to_csv(index=False))
    atomic_write_text(out / "table.md", table)
    data_mb = {n: c["data_mb"] for n, c in catalogs.items()}
    if final and any(r.get("status") == "ok" for r in records):
        figure(records, sizes, data_mb, out / "scale.png")
    if fixes:
        df = pd.DataFrame(fixes)
        atomic_write_text(out / "fixes.csv", df.to_csv(index=False))
        cols = ["stage", "n_items", "before_seconds", "after_seconds", "ratio_seconds", "before_cpu_s",
                "after_cpu_s", "ratio_cpu_s", "before_peak_mb",
                "after_peak_mb", "ratio_peak_mb", "identical", "before_status", "before_note"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                                     for v in (r.get(c) for c in cols)) + " |" for r in fixes]
        atomic_write_text(out / "fixes.md", "\n".join(lines) + "\n")
    result = {"sizes": sizes, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "spec", "catalog", "result")},
              "machine": _machine(), "catalogs": catalogs, "slopes": rows, "records": records,
              "fixes": fixes, "baseline_restored": restored,
              "memory_method": "VmHWM (reset via /proc/self/clear_refs before the stage) - VmRSS at the start"}
    atomic_write_json(out / "scale.json", result)
    return result


if __name__ == "__main__":
    main()
