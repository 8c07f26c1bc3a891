"""Benchmark: SETRec's one-pass generation vs a trie-constrained beam search, at EQUAL backbone
size, on the same data and the same test users. Prints users/s of each and the ratio.

    python -m benchmarks.bench_setrec --dataset ml-100k --identifier tiger --beams 20 \
        --batch 64 --users 256 --k 20 [--d-model 128 --layers 4 --heads 6 --d-kv 64 --d-ff 1024]
    python -m benchmarks.bench_setrec --backbone causal --shape qwen2.5-0.5b --dataset beauty \
        --beams 20 --k 10 --batch 8 --users 32

``--backbone t5`` (default): SETRec-T5 against TIGER's search; both models are T5
encoder-decoders built from the same :class:`backbones.t5.T5BackboneConfig` (TIGER's sizes by
default: 4 + 4 layers, d_model 128, 6 heads of 64, feed-forward 1024). ``--backbone causal``:
SETRec-causal against LC-Rec's search (the ``lcrec`` method: its 4-code identifiers, its
instruction prompt), both on one decoder-only shape: ``--shape`` names a published model's
(:data:`backbones.causal.SHAPES`, e.g. ``qwen2.5-0.5b``: Qwen2.5-0.5B's layer sizes, rope theta,
norm eps and its 151,936 text rows, to which LC-Rec adds its code tokens). ``--backbone-config
JSON`` overrides fields of either backbone's config. Weights are random: the work each does
per user does not depend on training.

The beam search ranks with :func:`backbones.generation.beam_search` (``--beams``, top ``--k``
of the beams); SETRec with ONE pass of its n_query queries, one batched matrix product
against every item's tokens and a top-k. The SETRec item table (CF projection + autoencoder
over all items) is computed once per evaluation and reported separately
(``setrec_item_table_s``); the first batch of each method is a warm-up, not timed.
``--identifier``: the beam side's scheme (default ``tiger`` on T5, ``lcrec`` on the causal
LM); ``--identifier-config JSON`` its config overrides (e.g. fewer RQ-VAE epochs: the cost of
a search does not depend on how well the codes were trained). ``--hf-users N`` (T5 only) also
times TIGER's search done the way the TIGER / LETTER / LC-Rec code bases do it (transformers
``generate`` with ``prefix_allowed_tokens_fn``) on the first N users.

Besides time, each search's arithmetic is COUNTED (:mod:`benchmarks.evaluation.flops`, on the
first batch, or on every timed batch with ``--count-all``: ``counted_users``): ``gflop_per_user``
and ``flop_ratio``. The FLOP ratio is the speed-up a
compute-bound machine (this CPU) can show at best; a measured time ratio far under it means
overhead, one near it means the arithmetic itself is the bound. The beam side's ``phases``
split its search over the counted batches (after the warm-up) by backbone call: the prompt's
``prefill`` (once per user: T5's encoder; the causal LM's prompt pass, which also gives the
first code's distribution, so its first step costs nothing), each decoding ``step`` (a forward
of every beam's last token against the key/value cache), the cache ``reorder`` and the
search's own work between them (``search``: log-softmax, trie gathers, top-k); per phase its
seconds, counted GFLOP and the output head's share (the vocabulary projection). SETRec's
``grounding_gflop_per_user`` is its item matching, the rest its backbone pass.

SETRec needs the dataset's CF and text embeddings: the first run computes and caches them
(``--cf-source`` as in ``FeatureStore.cf_embeddings``; ``--cf-sasrec-config JSON`` the SASRec
overrides where one is trained).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import defaultdict

import torch

from benchmarks.bench_generation import add_t5_size_args, t5_size
from benchmarks.evaluation.flops import block_parameters, counted_gflop, flop_counter, frozen

#: the compared methods per backbone: (beam-search method, its result key, default identifier, SETRec method)
PAIRS = {"t5": ("generative", "tiger", "tiger", "setrec-t5"),
         "causal": ("lcrec", "lcrec", "lcrec", "setrec-causal")}


def _sig(x: float) -> float:
    """Four significant digits (per-user figures span 1e-6 to 1e3)."""
    return float(f"{x:.4g}")


def _json_arg(p: argparse.ArgumentParser, flag: str, text: str | None) -> dict:
    if text is None:
        return {}
    try:
        out = json.loads(text)
    except json.JSONDecodeError as exc:
        p.error(f"{flag}: not JSON ({exc}): {text!r}")
    if not isinstance(out, dict):
        p.error(f"{flag}: expected a JSON object of config fields, got {text!r}")
    return out


class PhaseMeter:
    """A generative backbone seen through the decoding interface :func:`beam_search` calls
    (``begin`` / ``step`` / ``reorder``, ``pad_id``), each call's seconds recorded and, with
    ``count``, its counted FLOPs and the share of modules named ``lm_head``."""

    def __init__(self, backbone, sync, count: bool = False):
        self.backbone, self.sync, self.count = backbone, sync, count
        self.pad_id = backbone.pad_id
        self.calls: list[dict] = []
        self._step = 0

    def _call(self, phase: str, fn, *args):
        counter = flop_counter() if self.count else None
        self.sync()
        t0 = time.perf_counter()
        with counter if counter is not None else contextlib.nullcontext():
            out = fn(*args)
        self.sync()
        rec = {"phase": phase, "seconds": time.perf_counter() - t0}
        if counter is not None:
            rec["flop"] = counter.get_total_flops()
            rec["head_flop"] = sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items()
                                   if name.endswith(".lm_head") or name == "lm_head")
        self.calls.append(rec)
        return out

    def begin(self, inputs, input_mask, beams):
        self._step = 0
        return self._call("prefill", self.backbone.begin, inputs, input_mask, beams)

    def step(self, state, tokens):
        self._step += 1
        return self._call(f"step{self._step}", self.backbone.step, state, tokens)

    def reorder(self, state, index):
        return self._call("reorder", self.backbone.reorder, state, index)


def beam_phases(model, batches: list, beams: int, k: int, sync) -> dict:
    """The beam search over ``batches`` split by backbone call (see the module docstring):
    seconds per user of each phase from a timed search, GFLOP per user (and the output head's)
    from a counted one."""
    from backbones.generation import beam_search

    trie = model._trie(None)
    n, total_s, real, width = 0, 0.0, 0, 0
    sec, flop, head = defaultdict(float), defaultdict(float), defaultdict(float)
    for batch in batches:
        inputs, mask = model._inputs(batch.to(model.device))
        with torch.no_grad():
            timed = PhaseMeter(model.module, sync)
            sync()
            t0 = time.perf_counter()
            beam_search(timed, inputs, mask, trie, beams, k)
            sync()
            total_s += time.perf_counter() - t0
            counted = PhaseMeter(model.module, sync, count=True)
            with frozen(model.module):
                beam_search(counted, inputs, mask, trie, beams, k)
        for rec in timed.calls:
            sec[rec["phase"]] += rec["seconds"]
        for rec in counted.calls:
            flop[rec["phase"]] += rec["flop"]
            head[rec["phase"]] += rec["head_flop"]
        n += len(batch)
        real += int(mask.sum())
        width += int(mask.shape[1]) * len(batch)
    steps = sorted((p for p in flop if p.startswith("step")), key=lambda p: int(p[4:]))

    def entry(phases: list[str]) -> dict:
        return {"s_per_user": _sig(sum(sec[p] for p in phases) / n),
                "gflop_per_user": _sig(sum(flop[p] for p in phases) / n / 1e9),
                "head_gflop_per_user": _sig(sum(head[p] for p in phases) / n / 1e9)}
    return {"users": n, "s_per_user": _sig(total_s / n),
            "gflop_per_user": _sig(sum(flop.values()) / n / 1e9),
            "prefill": entry(["prefill"]), "steps": entry(steps), "per_step": [entry([p]) for p in steps],
            "reorder_s_per_user": _sig(sec["reorder"] / n),
            "search_s_per_user": _sig((total_s - sum(sec.values())) / n),
            "prompt_tokens_mean": round(real / n, 1), "prompt_width_mean": round(width / n, 1)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", help="a catalog name or a JSON mapping")
    p.add_argument("--backbone", choices=sorted(PAIRS), default="t5")
    p.add_argument("--shape", help="causal backbone only: a published model's shape (backbones.causal.SHAPES)")
    p.add_argument("--backbone-config", help="JSON: backbone config fields over the sizes (both models)")
    p.add_argument("--identifier", help="the beam side's scheme (default: tiger on t5, lcrec on causal)")
    p.add_argument("--identifier-config", help="JSON: that scheme's config overrides")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--users", type=int, default=256)
    add_t5_size_args(p)
    p.add_argument("--n-sem", type=int, help="SETRec's semantic tokens (default: the method's, 4 on t5, 6 on causal)")
    p.add_argument("--cf-source", default="auto")
    p.add_argument("--cf-sasrec-config", help="JSON: SASRec overrides where SETRec's CF embeddings are trained")
    p.add_argument("--count-all", action="store_true",
                   help="count both rankings' FLOPs over every timed batch (default: the first batch only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--hf-users", type=int, default=0,
                   help="t5 only: also time TIGER's search done as transformers generate + prefix_allowed_tokens_fn "
                        "(the authors' code bases' way) on this many of the users (0: skip)")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args(argv)

    from backbones.causal import shape_config
    from benchmarks.config import build_config
    from benchmarks.context import build_context
    from benchmarks.data.catalog import load_dataset
    from benchmarks.protocol import UserBatch
    from benchmarks.registry import METHODS
    from benchmarks.utils import seed_everything, synchronize

    overrides = _json_arg(p, "--backbone-config", args.backbone_config)
    t5_flags = t5_size(args) != t5_size(p.parse_args([]))
    if args.backbone == "t5":
        if args.shape:
            p.error("--shape names a causal backbone's shape; it needs --backbone causal")
        size = {**t5_size(args), **overrides}
    else:
        if t5_flags:
            p.error("--d-model / --layers / --heads / --d-kv / --d-ff are T5 sizes; with --backbone causal "
                    "use --shape and --backbone-config")
        if args.hf_users:
            p.error("--hf-users times transformers generate on the T5 models only")
        try:
            size = {**(shape_config(args.shape) if args.shape else {}), **overrides}
        except ValueError as exc:
            p.error(f"--shape: {exc}")
    beam_method, beam_key, default_id, set_method = PAIRS[args.backbone]
    identifier = args.identifier or default_id

    seed_everything(args.seed)
    entry = json.loads(args.dataset) if args.dataset.lstrip().startswith("{") else args.dataset
    ds = load_dataset(entry)
    ctx = build_context(ds, seed=args.seed, device=args.device, progress=False)
    beam_cls, set_cls = METHODS.get(beam_method), METHODS.get(set_method)
    beam = beam_cls(build_config(beam_cls.Config, {
        "identifier": identifier, "identifier_config": _json_arg(p, "--identifier-config", args.identifier_config),
        "beams": args.beams, "backbone_config": size}), ctx).eval()
    set_cfg = {"cf_source": args.cf_source, "backbone_config": size,
               "cf_sasrec_config": _json_arg(p, "--cf-sasrec-config", args.cf_sasrec_config)}
    if args.n_sem is not None:
        set_cfg["n_sem"] = args.n_sem
    setrec = set_cls(build_config(set_cls.Config, set_cfg), ctx).eval()

    users = ds.eval_users("test")[:args.users]
    batches = [UserBatch(torch.from_numpy(users[s:s + args.batch]),
                         torch.from_numpy(ds.history_matrix("test", users[s:s + args.batch])))
               for s in range(0, len(users), args.batch)]
    sync = lambda: synchronize(args.device)        # noqa: E731 (that GPU, not the current one)

    def gflop_per_user(fn, *models) -> float:
        return counted_gflop(fn, len(batches[0]), *models)

    counted = batches if args.count_all else batches[:1]

    def rank_gflop_per_user(model) -> float:
        """Counted GFLOP per user of ``model.rank`` over the counted batches."""
        total = sum(counted_gflop(lambda: model.rank(b.to(model.device), args.k), len(b), model.module) * len(b)
                    for b in counted)
        return total / sum(len(b) for b in counted)

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

        trie = beam._trie(None)
        hf_sec, hf_n = 0.0, 0
        with torch.no_grad():
            for b in batches:
                if hf_n >= args.hf_users:
                    break
                inputs, mask = beam._inputs(b)
                t0 = time.perf_counter()
                hf_constrained_generate(beam.module.model, inputs, mask, trie, max(args.beams, args.k),
                                        decoder_start=beam.space.pad_id)
                hf_sec += time.perf_counter() - t0
                hf_n += len(b)
        hf = (hf_sec, hf_n)
        inputs, mask = beam._inputs(batches[0])
        hf_flop = gflop_per_user(lambda: hf_constrained_generate(
            beam.module.model, inputs, mask, trie, max(args.beams, args.k), decoder_start=beam.space.pad_id), beam.module)

    t0 = time.perf_counter()
    with torch.no_grad():
        tokens = setrec._tokens()
    table_s = time.perf_counter() - t0
    s_sec, n = timed(setrec)
    t_sec, _ = timed(beam)
    first = batches[0].to(setrec.device)
    s_flop = rank_gflop_per_user(setrec)
    with torch.no_grad():
        out = setrec.module.query_outputs(tokens, first.history[:, -setrec.max_history:].to(setrec.device))
    ground_flop = gflop_per_user(lambda: setrec.module.per_query_scores(tokens, out), setrec.module)
    t_flop = rank_gflop_per_user(beam)
    phases = beam_phases(beam, counted, max(args.beams, args.k), args.k, sync)
    lm = beam.module.model
    set_lm = setrec.module.backbone.model if args.backbone == "t5" else setrec.module.backbone.lm
    hist_items = [int((b.history[:, -setrec.max_history:] > 0).sum()) for b in batches]
    result = {
        "dataset": ds.name, "split": ds.split, "users": n, "batch": args.batch, "k": args.k,
        "counted_users": sum(len(b) for b in counted),
        "backbone": args.backbone, "history_cap": setrec.max_history,
        "history_items_mean": round(sum(hist_items) / n, 2),
        beam_key: {"method": beam_method, "identifier": identifier, "beams": max(args.beams, args.k),
                   "users_per_s": round(n / t_sec, 3), "ms_per_user": round(1000 * t_sec / n, 3),
                   "parameters": sum(p.numel() for p in beam.module.parameters()),
                   "block_parameters": block_parameters(lm),
                   "vocab_rows": int(lm.get_input_embeddings().num_embeddings),
                   "gflop_per_user": _sig(t_flop), "phases": phases},
        "setrec": {"method": set_method, "n_query": setrec.module.backbone.n_query, "n_items": ds.n_items,
                   "users_per_s": round(n / s_sec, 3), "ms_per_user": round(1000 * s_sec / n, 3),
                   "parameters": sum(p.numel() for p in setrec.module.parameters()),
                   "block_parameters": block_parameters(set_lm),
                   "setrec_item_table_s": round(table_s, 4), "gflop_per_user": _sig(s_flop),
                   "grounding_gflop_per_user": _sig(ground_flop)},
        "speedup": round(t_sec / s_sec, 2),
        "flop_ratio": round(t_flop / s_flop, 2),
        "tiger_hf_generate": None if hf is None else {
            "users": hf[1], "users_per_s": round(hf[1] / hf[0], 2), "ms_per_user": round(1000 * hf[0] / hf[1], 3),
            "speedup_of_setrec": round((hf[0] / hf[1]) / (s_sec / n), 2),
            "gflop_per_user": _sig(hf_flop), "flop_ratio": round(hf_flop / s_flop, 2)},
        "device": args.device, "threads": torch.get_num_threads(),
        "model": ({"d_model": args.d_model, "layers": args.layers, "heads": args.heads,
                   "d_kv": args.d_kv, "d_ff": args.d_ff, **overrides} if args.backbone == "t5"
                  else {"shape": args.shape, **size}),
    }
    from benchmarks.utils import emit_json
    emit_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
