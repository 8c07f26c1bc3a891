"""Benchmark: SETRec's one-pass generation vs TIGER's trie-constrained beam search, at EQUAL
backbone size, on the same data and the same test users. Prints users/s of each and the ratio.

    python -m benchmarks.bench_setrec --dataset ml-100k --identifier tiger --beams 20 \
        --batch 64 --users 256 --k 20 [--d-model 128 --layers 4 --heads 6 --d-kv 64 --d-ff 1024]

Both models are T5 encoder-decoders built from the same :class:`backbones.t5.T5BackboneConfig`
(TIGER's sizes by default: 4 + 4 layers, d_model 128, 6 heads of 64, feed-forward 1024), with
random weights: the work each does per user does not depend on training. ``--hf-users N``
also times TIGER's search done the way the TIGER / LETTER / LC-Rec code bases do it
(transformers ``generate`` with ``prefix_allowed_tokens_fn``) on the first N users. TIGER ranks with
:func:`backbones.generation.beam_search` (``--beams``, top ``--k`` of the beams); SETRec with ONE
encoder-decoder pass of its n_query queries, one batched matrix product against every item's
tokens and a top-k. The SETRec item table (CF projection + autoencoder over all items) is
computed once per evaluation and reported separately (``setrec_item_table_s``); the first batch
of each method is a warm-up, not timed. ``--identifier``: the TIGER-side scheme (default
``tiger``; any codes scheme, e.g. ``p5-cid``, where ``tiger`` is not installed).

Besides time, each search's arithmetic is COUNTED (``torch.utils.flop_counter``, matrix
products and attention, on the first batch): ``gflop_per_user`` and ``flop_ratio``. The
FLOP ratio is the speed-up a compute-bound machine (this CPU) can show at best; a measured
time ratio far under it means overhead, one near it means the arithmetic itself is the bound.

SETRec needs the dataset's CF (SASRec, 64-d) and text embeddings: the first run computes and
caches them (``--cf-source`` as in ``FeatureStore.cf_embeddings``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.bench_generation import add_t5_size_args, t5_size
from benchmarks.evaluation.flops import block_parameters, counted_gflop


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", help="a catalog name or a JSON mapping")
    p.add_argument("--identifier", default="tiger")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--users", type=int, default=256)
    add_t5_size_args(p)
    p.add_argument("--n-sem", type=int, default=4)
    p.add_argument("--cf-source", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hf-users", type=int, default=0,
                   help="also time TIGER's search done as transformers generate + prefix_allowed_tokens_fn "
                        "(the authors' code bases' way) on this many of the users (0: skip)")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)

    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.catalog import load_dataset
    from benchmarks.methods.generative import GenerativeRecommender
    from benchmarks.methods.setrec import SETRecT5
    from benchmarks.protocol import UserBatch
    from benchmarks.utils import seed_everything, synchronize

    seed_everything(args.seed)
    entry = json.loads(args.dataset) if args.dataset.lstrip().startswith("{") else args.dataset
    ds = load_dataset(entry)
    size = t5_size(args)
    ctx = build_context(ds, seed=args.seed, device=args.device, progress=False)
    tiger = GenerativeRecommender(build_config(GenerativeRecommender.Config, {
        "identifier": args.identifier, "beams": args.beams, "backbone_config": size}), ctx).eval()
    setrec = SETRecT5(build_config(SETRecT5.Config, {
        "n_sem": args.n_sem, "cf_source": args.cf_source, "backbone_config": size}), ctx).eval()

    users = ds.eval_users("test")[:args.users]
    batches = [UserBatch(torch.from_numpy(users[s:s + args.batch]),
                         torch.from_numpy(ds.history_matrix("test", users[s:s + args.batch])))
               for s in range(0, len(users), args.batch)]
    sync = lambda: synchronize(args.device)        # noqa: E731 (that GPU, not the current one)

    def gflop_per_user(fn, *models) -> float:
        return counted_gflop(fn, len(batches[0]), *models)

    def timed(model, warm: bool = True) -> tuple[float, int]:
        seconds, n = 0.0, 0
        with torch.no_grad():
            if warm:
                model.rank(batches[0].to(model.device), args.k)
            for b in batches:
                b = b.to(model.device)
                sync()
                t0 = time.perf_counter()
                model.rank(b, args.k)
                sync()
                seconds += time.perf_counter() - t0
                n += len(b)
        return seconds, n

    hf = None
    if args.hf_users:
        from backbones.generation import hf_constrained_generate

        trie = tiger._trie(None)
        hf_sec, hf_n = 0.0, 0
        with torch.no_grad():
            for b in batches:
                if hf_n >= args.hf_users:
                    break
                inputs, mask = tiger._inputs(b)
                t0 = time.perf_counter()
                hf_constrained_generate(tiger.module.model, inputs, mask, trie, max(args.beams, args.k),
                                        decoder_start=tiger.space.pad_id)
                hf_sec += time.perf_counter() - t0
                hf_n += len(b)
        hf = (hf_sec, hf_n)
        inputs, mask = tiger._inputs(batches[0])
        hf_flop = gflop_per_user(lambda: hf_constrained_generate(
            tiger.module.model, inputs, mask, trie, max(args.beams, args.k), decoder_start=tiger.space.pad_id), tiger.module)

    t0 = time.perf_counter()
    with torch.no_grad():
        setrec._tokens()
    table_s = time.perf_counter() - t0
    s_sec, n = timed(setrec)
    t_sec, _ = timed(tiger)
    s_flop = gflop_per_user(lambda: setrec.rank(batches[0].to(setrec.device), args.k), setrec.module)
    t_flop = gflop_per_user(lambda: tiger.rank(batches[0].to(tiger.device), args.k), tiger.module)
    result = {
        "dataset": ds.name, "split": ds.split, "users": n, "batch": args.batch, "k": args.k,
        "tiger": {"identifier": args.identifier, "beams": max(args.beams, args.k),
                  "users_per_s": round(n / t_sec, 2), "ms_per_user": round(1000 * t_sec / n, 3),
                  "parameters": sum(p.numel() for p in tiger.module.parameters()),
                  "block_parameters": block_parameters(tiger.module.model),
                  "gflop_per_user": float(f"{t_flop:.4g}")},
        "setrec": {"n_query": setrec.module.backbone.n_query, "n_items": ds.n_items,
                   "users_per_s": round(n / s_sec, 2), "ms_per_user": round(1000 * s_sec / n, 3),
                   "parameters": sum(p.numel() for p in setrec.module.parameters()),
                   "block_parameters": block_parameters(setrec.module.backbone.model),
                   "setrec_item_table_s": round(table_s, 4), "gflop_per_user": float(f"{s_flop:.4g}")},
        "speedup": round(t_sec / s_sec, 2),
        "flop_ratio": round(t_flop / s_flop, 2),
        "tiger_hf_generate": None if hf is None else {
            "users": hf[1], "users_per_s": round(hf[1] / hf[0], 2), "ms_per_user": round(1000 * hf[0] / hf[1], 3),
            "speedup_of_setrec": round((hf[0] / hf[1]) / (s_sec / n), 2),
            "gflop_per_user": float(f"{hf_flop:.4g}"), "flop_ratio": round(hf_flop / s_flop, 2)},
        "device": args.device, "threads": torch.get_num_threads(),
        "model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads,
                  "d_kv": args.d_kv, "d_ff": args.d_ff},
    }
    from benchmarks.utils import emit_json
    emit_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
