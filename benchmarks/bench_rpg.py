"""Benchmark: RPG's graph-constrained decoding (and its exact gather) vs TIGER's trie-constrained
beam search vs SETRec's one pass, at EQUAL hidden size, on a dataset's catalogue and on a
synthetic catalogue ``--scale`` times larger. Prints users/s and counted FLOPs per user.

    python -m benchmarks.bench_rpg --dataset ml-100k --scale 10 --users 256 --batch 64 --k 20 \
        [--d-model 128 --layers 4 --heads 6 --d-kv 64 --d-ff 1024] [--rpg-layers 2 --rpg-heads 4]

- Models, all with random weights (the work each does per user does not depend on training):
  TIGER = ``generative`` on a T5 of the given size with RQ-KMeans ids (``--tiger-identifier``,
  3 x 256 + a disambiguating token: TIGER's identifier layout without training an RQ-VAE on
  every catalogue), beam ``--beams`` (20); SETRec-T5 on the same T5 size; RPG with
  ``n_embd = --d-model`` and its own depth (``--rpg-layers``, the paper's 2), m = ``--digits``
  OPQ codes, graph b / k / q = ``--graph`` (rpg.md's defaults 50 / 50 / 3).
- Catalogues: the dataset's own items (text embeddings from the suite's encoder and CF
  embeddings as FeatureStore gives them, or random ones with ``--features random``), then a
  synthetic one with ``--scale`` x as many items whose text and CF embeddings are random vectors
  of the same widths; the test users and their histories are the dataset's in both, so only the
  catalogue grows. Both get their run context from :func:`benchmarks.context.build_context`;
  identifiers built on random embeddings are not cached (their cache key cannot tell them from
  the real ones).
- Timing: the first batch of each search is a warm-up; then every batch of ``--users`` test
  users. RPG's graph is built once per catalogue and timed apart (``graph_build_s``), as SETRec's
  item table (``setrec_item_table_s``).
- FLOPs: counted on the first batch (:func:`benchmarks.evaluation.flops.counted_gflop`: matrix
  products and attention). RPG's walk and exact ranking are gathers (no multiply-adds): their
  count is the network's (GPT-2 and the m heads' logits over 256 codes each), the same at any
  catalogue size; ``rpg.graph.scored_per_user`` (b k q, before de-duplication) and
  ``visited_share`` (distinct items scored, of the catalogue) give the walk's own work, and
  ``rpg.exact`` gathers m log-probabilities for every item.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from benchmarks.bench_generation import add_t5_size_args, t5_size
from benchmarks.evaluation.flops import block_parameters, counted_gflop
from benchmarks.features import FeatureStore


class RandomFeatures(FeatureStore):
    """Random unit-norm text embeddings and random CF embeddings for every item (a synthetic
    catalogue's items have no text): the widths of the real ones, fixed by ``seed``."""

    def __init__(self, dataset, cache, *, text_width: int, seed: int):
        super().__init__(dataset, cache, seed=seed, progress=False)
        self.text_width = text_width
        self._rng_seed = seed

    def text_embeddings(self, template=None, encoder=None, batch_size=256) -> np.ndarray:
        rng = np.random.default_rng(self._rng_seed)
        emb = rng.normal(size=(self.ds.n_items, self.text_width)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        return np.r_[np.zeros((1, self.text_width), np.float32), emb]

    def cf_embeddings(self, dim=32, source="auto", sasrec_config=None) -> np.ndarray:
        rng = np.random.default_rng(self._rng_seed + 1)
        return np.r_[np.zeros((1, dim)), 0.1 * rng.normal(size=(self.ds.n_items, dim))].astype(np.float32)


def synthetic_catalogue(ds, scale: int):
    """``ds`` with ``scale`` x as many items: the extra ones occur in no interaction and carry
    no text (RandomFeatures gives them embeddings)."""
    n = ds.n_items * scale
    extra = [f"synthetic-{i}" for i in range(ds.n_items, n)]
    return dataclasses.replace(ds, name=f"{ds.name}-x{scale}", n_items=n, item_ids=list(ds.item_ids) + extra,
                               item_text={}, info={**ds.info, "cache_key": f"{ds.info.get('cache_key')}-x{scale}"})


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", help="a catalog name or a JSON mapping")
    p.add_argument("--scale", type=int, default=10, help="the synthetic catalogue's size in dataset catalogues")
    p.add_argument("--features", choices=("real", "random"), default="real",
                   help="the dataset catalogue's embeddings: the FeatureStore's, or random ones")
    p.add_argument("--tiger-identifier", default="rq-kmeans")
    p.add_argument("--tiger-identifier-config", default='{"kmeans_iters": 20}', help="JSON")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--users", type=int, default=256)
    add_t5_size_args(p)
    p.add_argument("--n-sem", type=int, default=4)
    p.add_argument("--cf-source", default="auto")
    p.add_argument("--rpg-layers", type=int, default=2)
    p.add_argument("--rpg-heads", type=int, default=4)
    p.add_argument("--rpg-inner", type=int, default=1024)
    p.add_argument("--digits", type=int, default=32)
    p.add_argument("--pca-dim", type=int, default=128)
    p.add_argument("--opq-iters", type=int, default=10, help="OPQ iterations (codes' quality does not change the cost)")
    p.add_argument("--graph", default="50/50/3", help="RPG's b/k/q")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)

    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.catalog import load_dataset
    from benchmarks.methods.generative import GenerativeRecommender
    from benchmarks.methods.rpg import RPG
    from benchmarks.methods.setrec import SETRecT5
    from benchmarks.protocol import UserBatch, topk_from_scores
    from benchmarks.utils import seed_everything, synchronize

    b, k_edges, q = (int(v) for v in args.graph.split("/"))
    entry = json.loads(args.dataset) if args.dataset.lstrip().startswith("{") else args.dataset
    base = load_dataset(entry)
    users = base.eval_users("test")[:args.users]
    batches = [UserBatch(torch.from_numpy(users[s:s + args.batch]),
                         torch.from_numpy(base.history_matrix("test", users[s:s + args.batch])))
               for s in range(0, len(users), args.batch)]
    sync = lambda: synchronize(args.device)        # noqa: E731 (that GPU, not the current one)
    size = t5_size(args)
    contexts: dict = {}

    def base_ctx():
        """The dataset's own context (its FeatureStore's real text / CF embeddings), built once."""
        if "base" not in contexts:
            contexts["base"] = build_context(base, seed=args.seed, device=args.device, progress=False)
        return contexts["base"]

    def timed(fn) -> float:
        """Seconds of ``fn(batch)`` over every batch, after one warm-up batch."""
        seconds = 0.0
        with torch.no_grad():
            fn(batches[0])
            for batch in batches:
                sync()
                t0 = time.perf_counter()
                fn(batch)
                sync()
                seconds += time.perf_counter() - t0
        return seconds

    def entry_of(seconds: float, gflop: float, **extra) -> dict:
        n = len(users)
        return {"users_per_s": round(n / seconds, 2), "ms_per_user": round(1000 * seconds / n, 3),
                "gflop_per_user": float(f"{gflop:.4g}"), **extra}

    catalogues = []
    for scale in (1, args.scale):
        seed_everything(args.seed)
        ds = base if scale == 1 else synthetic_catalogue(base, scale)
        real = scale == 1 and args.features == "real"
        if real:
            ctx = base_ctx()
        else:
            width = base_ctx().features.text_embeddings().shape[1] if args.features == "real" else 384
            ctx = build_context(ds, seed=args.seed, device=args.device, needs=frozenset(), progress=False)
            ctx = dataclasses.replace(ctx, cache=None, features=RandomFeatures(
                ds, ctx.cache, text_width=width, seed=args.seed))
        fit_on = "train" if real else "all"
        rpg = RPG(build_config(RPG.Config, {
            "hidden": args.d_model, "n_layers": args.rpg_layers, "n_heads": args.rpg_heads, "inner": args.rpg_inner,
            "beams": b, "edges": k_edges, "steps": q, "embd_dropout": 0.0, "attn_dropout": 0.0,
            "identifier_config": {"n_codebooks": args.digits, "pca_dim": args.pca_dim, "opq_iters": args.opq_iters,
                                  "fit_on": fit_on}}), ctx).eval()
        t0 = time.perf_counter()
        rpg._use_graph = True
        rpg._ensure_graph()
        graph_s = time.perf_counter() - t0
        tiger = GenerativeRecommender(build_config(GenerativeRecommender.Config, {
            "identifier": args.tiger_identifier, "identifier_config": json.loads(args.tiger_identifier_config),
            "beams": args.beams, "backbone_config": size}), ctx).eval()
        setrec = SETRecT5(build_config(SETRecT5.Config, {
            "n_sem": args.n_sem, "cf_source": args.cf_source, "backbone_config": size}), ctx).eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            setrec._tokens()
        table_s = time.perf_counter() - t0
        dev = lambda batch: batch.to(args.device)
        exact = lambda batch: topk_from_scores(rpg.score(dev(batch)), args.k)
        first = batches[0].to(args.device)
        with torch.no_grad():
            _, _, info = rpg.walk(first, args.k, count_visited=True)
        visited = float(info["visited"].float().mean()) / ds.n_items
        g_s = timed(lambda batch: rpg.rank(dev(batch), args.k))
        e_s = timed(exact)
        t_s = timed(lambda batch: tiger.rank(dev(batch), args.k))
        s_s = timed(lambda batch: setrec.rank(dev(batch), args.k))
        n1 = len(first)
        g_f = counted_gflop(lambda: rpg.rank(first, args.k), n1, rpg.module)
        e_f = counted_gflop(lambda: exact(first), n1, rpg.module)
        t_f = counted_gflop(lambda: tiger.rank(first, args.k), n1, tiger.module)
        s_f = counted_gflop(lambda: setrec.rank(first, args.k), n1, setrec.module)
        catalogues.append({
            "n_items": ds.n_items, "synthetic": scale != 1, "embeddings": "real" if real else "random",
            "rpg": {"graph": entry_of(g_s, g_f, beams=b, edges=k_edges, steps=q, scored_per_user=b * k_edges * q,
                                      visited_share=round(visited, 6)),
                    "exact": entry_of(e_s, e_f, scored_per_user=ds.n_items),
                    "digits": len(rpg.sizes), "graph_build_s": round(graph_s, 3),
                    "parameters": sum(x.numel() for x in rpg.module.parameters()),
                    "block_parameters": sum(x.numel() for x in rpg.module.gpt2.h.parameters())},
            "tiger": entry_of(t_s, t_f, identifier=args.tiger_identifier, beams=max(args.beams, args.k),
                              parameters=sum(x.numel() for x in tiger.module.parameters()),
                              block_parameters=block_parameters(tiger.module.model)),
            "setrec": entry_of(s_s, s_f, n_query=setrec.module.backbone.n_query, setrec_item_table_s=round(table_s, 4),
                               parameters=sum(x.numel() for x in setrec.module.parameters()),
                               block_parameters=block_parameters(setrec.module.backbone.model)),
            "speedup": {"rpg_graph_over_tiger": round(t_s / g_s, 2), "rpg_graph_over_setrec": round(s_s / g_s, 2),
                        "rpg_graph_over_rpg_exact": round(e_s / g_s, 2)},
            "flop_ratio": {"tiger_over_rpg": round(t_f / g_f, 2), "setrec_over_rpg": round(s_f / g_f, 2)},
        })
    result = {"dataset": base.name, "users": len(users), "batch": args.batch, "k": args.k,
              "hidden": args.d_model, "t5": {"layers": args.layers, "heads": args.heads, "d_kv": args.d_kv,
                                            "d_ff": args.d_ff},
              "rpg_size": {"layers": args.rpg_layers, "heads": args.rpg_heads, "inner": args.rpg_inner},
              "device": args.device, "threads": torch.get_num_threads(), "catalogues": catalogues}
    from benchmarks.utils import emit_json
    emit_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
