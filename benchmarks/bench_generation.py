"""Benchmark: our tensorised-trie beam search vs transformers ``generate`` with
``prefix_allowed_tokens_fn`` (what the TIGER / LETTER / LC-Rec code bases use), on the SAME
model, inputs and beams. Checks that both return identical top-K lists and prints users/s
of each and the ratio. Also times the masked protocol's search (each user's whole history
excluded inside the search, beam unchanged: ``masked_users_per_s``, ``masked_slowdown``) and,
for reference, what masking used to cost: the beam widened to K + the batch's longest history
and the history items filtered afterwards (``widened_users_per_s``).

    python -m benchmarks.bench_generation --dataset ml-100k --identifier tiger \
        --beams 20 --batch 64 --users 256 [--d-model 128 --layers 4 ...]

The model is a TIGER-size T5 (4+4 layers, d_model 128, 6 heads x 64, ffn 1024) with random
weights by default: both searches are exact functions of the model, so equality and speed do
not depend on training; ``--trained CELL_DIR`` is not needed for the comparison.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def add_t5_size_args(p: argparse.ArgumentParser) -> None:
    """The T5 size flags of the benchmark scripts (TIGER's sizes by default)."""
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-kv", type=int, default=64)
    p.add_argument("--d-ff", type=int, default=1024)


def t5_size(args) -> dict:
    """T5BackboneConfig fields from those flags (no dropout: timing and identical outputs)."""
    return {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
            "d_kv": args.d_kv, "d_ff": args.d_ff, "dropout": 0.0}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", help="a catalog name or a JSON mapping")
    p.add_argument("--identifier", default="tiger")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--users", type=int, default=256)
    add_t5_size_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)

    from backbones.generation import beam_search, hf_constrained_generate
    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.catalog import load_dataset
    from benchmarks.methods.generative import GenerativeRecommender
    from benchmarks.protocol import UserBatch
    from benchmarks.utils import seed_everything, synchronize

    seed_everything(args.seed)
    ds = load_dataset(json.loads(args.dataset) if args.dataset.lstrip().startswith("{") else args.dataset)
    cfg = build_config(GenerativeRecommender.Config, {
        "identifier": args.identifier, "beams": args.beams,
        "backbone_config": t5_size(args)})
    model = GenerativeRecommender(cfg, build_context(ds, seed=args.seed, device=args.device, progress=False))
    model.eval()
    users = ds.eval_users("test")[:args.users]
    trie = model._trie(None)
    from benchmarks.data.dataset import left_pad

    def timed(fn):
        """``fn()`` and its seconds, the device's queue drained before and after the clock."""
        synchronize(model.device)
        t0 = time.perf_counter()
        out = fn()
        synchronize(model.device)
        return out, time.perf_counter() - t0

    ours_t, hf_t, masked_t, wide_t, same, total, wide_beams = 0.0, 0.0, 0.0, 0.0, 0, 0, []
    for start in range(0, len(users), args.batch):
        u = users[start:start + args.batch]
        batch = UserBatch(torch.from_numpy(u), torch.from_numpy(ds.history_matrix("test", u)))
        inputs, mask = model._inputs(batch)
        (items, _), s = timed(lambda: beam_search(model.module, inputs, mask, trie, args.beams))
        ours_t += s
        (ref, _), s = timed(lambda: hf_constrained_generate(model.module.model, inputs, mask, trie, args.beams,
                                                            decoder_start=model.space.pad_id))
        hf_t += s
        same += int((items == ref.to(items.device)).all(1).sum())
        hists = ds.history("test", u)
        excl = torch.from_numpy(left_pad(hists, max(len(h) for h in hists))).to(model.device)
        (masked, _), s = timed(lambda: beam_search(model.module, inputs, mask, trie, args.beams, 10, exclude=excl))
        masked_t += s
        assert not (masked.unsqueeze(2) == excl.to(masked.device).unsqueeze(1)).any(), "an excluded item was returned"
        wide = 10 + int((excl > 0).sum(1).max())
        wide_beams.append(wide)
        _, s = timed(lambda: beam_search(model.module, inputs, mask, trie, wide))
        wide_t += s
        total += len(u)
    result = {"dataset": ds.name, "identifier": args.identifier, "beams": args.beams, "batch": args.batch,
              "users": total, "identical_topk_users": same,
              "ours_users_per_s": round(total / ours_t, 2), "hf_users_per_s": round(total / hf_t, 2),
              "speedup": round(hf_t / ours_t, 2), "device": args.device,
              "masked_users_per_s": round(total / masked_t, 2),
              "masked_slowdown": round(masked_t / ours_t, 3),
              "widened_users_per_s": round(total / wide_t, 2),
              "widened_beams_mean": round(float(np.mean(wide_beams)), 1),
              "threads": torch.get_num_threads(),
              "model": {"d_model": args.d_model, "layers": args.layers, "heads": args.heads,
                        "d_kv": args.d_kv, "d_ff": args.d_ff,
                        "parameters": sum(p.numel() for p in model.module.parameters())}}
    from benchmarks.utils import emit_json
    emit_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
