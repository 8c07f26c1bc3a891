"""Run ONE RecBole model on pre-split atomic files and dump what happened as JSON.

This file runs inside RecBole's own virtualenv (``scripts/recbole_env.sh``), started by
``benchmarks.parity.recbole`` as a subprocess: it imports only the standard library, numpy,
torch and RecBole, never the suite. It calls RecBole's public pieces the way
``recbole.quick_start.run_recbole`` does (Config -> create_dataset -> data_preparation ->
model -> trainer.fit -> trainer.evaluate with the best checkpoint), and adds:

- the LOADED-DATA DIGEST: per split the rows, the users, the longest history and a SHA-256 over
  the sorted rows mapped back to the files' tokens (``benchmarks.parity.atomic`` computes the
  same from the suite's dataset). With ``--expect`` the run stops before training when they
  differ (exit status 3);
- timing: seconds of every training epoch and every validation (RecBole's ``_train_epoch`` /
  ``_valid_epoch`` wrapped on the trainer instance), the validation score of every validation,
  the epochs run and the best epoch (1-based, as the suite counts);
- ``--max-train-minutes``: RecBole has no time cap; the callback RecBole calls after each
  validation raises once the training time is past the cap, and the best checkpoint saved so
  far is evaluated (recorded as ``stopped``);
- our own evaluation of the best model, with the model's full-ranking scores, both WITH and
  WITHOUT the user's history items removed. RecBole 1.2.1 removes them for general models
  (``FullSortEvalDataLoader`` passes a history index) and NOT for sequential ones (it passes
  None), so one of the two must reproduce RecBole's own figures (``agrees_with_recbole``);
  the other gives the model under the other protocol. History = every item of the user in
  the earlier splits, minus the split's target (RecBole's ``used_ids - positive_items``);
- the process's peak resident memory (``ru_maxrss``).

    python recbole_driver.py --model SASRec --dataset NAME --config cfg.yaml --out res.json
        [--expect digest.json] [--max-train-minutes M]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import sys
import time

# Run by path, this file's folder comes first on sys.path, and it holds the harness module
# ``recbole.py``, which would shadow the RecBole package: take the folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


class _TimeUp(Exception):
    """Raised from RecBole's validation callback when the training time cap is reached."""


def _digest_lines(lines):
    # the same function as benchmarks.parity.atomic.digest_lines (this file cannot import it)
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def loaded_digest(dataset, splits, sequential):
    """The digest of what RecBole loaded: {users, items, train/valid/test: {rows, users,
    max_history, sha256}} with RecBole's ids mapped back to the atomic files' tokens."""
    uid, iid = dataset.uid_field, dataset.iid_field
    utok, itok = dataset.field2id_token[uid], dataset.field2id_token[iid]
    out = {"users": int(dataset.user_num - 1), "items": int(dataset.item_num - 1)}
    for name, ds in zip(("train", "valid", "test"), splits):
        feat = ds.inter_feat
        users = feat[uid].numpy()
        items = feat[iid].numpy()
        if sequential:
            lists = feat[ds.item_id_list_field].numpy()
            lengths = feat[ds.item_list_length_field].numpy()
            lines = [f"{utok[u]}\t{' '.join(itok[lists[r, :lengths[r]]])}\t{itok[items[r]]}"
                     for r, u in enumerate(users)]
            longest = int(lengths.max()) if len(lengths) else 0
        else:
            lines = [f"{utok[u]}\t{itok[i]}" for u, i in zip(users, items)]
            longest = None
        out[name] = {"rows": len(lines), "users": len(set(users.tolist())),
                     "max_history": longest, "sha256": _digest_lines(lines)}
    return out


def digest_problems(expected, loaded):
    """Differences between the expected and the loaded digest ([] = equal)."""
    problems = [f"{k}: expected {expected[k]}, loaded {loaded.get(k)}"
                for k in ("users", "items") if expected[k] != loaded.get(k)]
    for split in ("train", "valid", "test"):
        for k in ("rows", "users", "max_history", "sha256"):
            if expected[split][k] != loaded[split][k]:
                problems.append(f"{split}.{k}: expected {expected[split][k]}, loaded {loaded[split][k]}")
    return problems


def _sequential_histories(splits, n_users):
    """{phase: list of item-id sets per RecBole user}: the items of the earlier splits."""
    train, valid, _ = splits
    hist = [set() for _ in range(n_users)]
    feat = train.inter_feat
    for u, lst, n, t in zip(feat[train.uid_field].numpy(), feat[train.item_id_list_field].numpy(),
                            feat[train.item_list_length_field].numpy(), feat[train.iid_field].numpy()):
        hist[u].update(lst[:n].tolist())
        hist[u].add(int(t))
    out = {}
    for phase, ds in (("valid", valid), ("test", splits[2])):
        feat = ds.inter_feat
        for u, lst, n in zip(feat[ds.uid_field].numpy(), feat[ds.item_id_list_field].numpy(),
                             feat[ds.item_list_length_field].numpy()):
            hist[u].update(lst[:n].tolist())
        out[phase] = [set(h) for h in hist]
        if phase == "valid":   # the validation targets are history for the test phase
            for u, t in zip(feat[ds.uid_field].numpy(), feat[ds.iid_field].numpy()):
                hist[u].add(int(t))
    return out


def own_metrics(model, loader, ks, sequential, histories, device):
    """Recall@K / NDCG@K of ``model`` on ``loader`` ranked over all items, unmasked and masked."""
    import numpy as np
    import torch

    sums = {p: {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks} for p in ("masked", "unmasked")}
    n_rows, kmax = 0, max(ks)
    model.eval()
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in loader:
            scores = model.full_sort_predict(interaction.to(device)).view(-1, model.n_items).float()
            scores[:, 0] = -math.inf
            rows = scores.shape[0]
            pos = [set() for _ in range(rows)]
            for r, i in zip(positive_u.tolist(), positive_i.tolist()):
                pos[r].add(i)
            masked = scores.clone()
            if sequential:
                users = interaction[loader._dataset.uid_field].tolist()
                hu, hi = [], []
                for r, u in enumerate(users):
                    items = histories[u] - pos[r]
                    hu += [r] * len(items)
                    hi += list(items)
                if hu:
                    masked[torch.tensor(hu), torch.tensor(hi)] = -math.inf
            elif history_index is not None:
                masked[history_index] = -math.inf
            for proto, sc in (("unmasked", scores), ("masked", masked)):
                top = torch.topk(sc, kmax, dim=1).indices.tolist()
                for r in range(rows):
                    hits = np.array([i in pos[r] for i in top[r]], dtype=float)
                    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
                    for k in ks:
                        ideal = disc[:min(len(pos[r]), k)].sum()
                        sums[proto][f"recall@{k}"] += hits[:k].sum() / len(pos[r])
                        sums[proto][f"ndcg@{k}"] += (hits[:k] * disc[:k]).sum() / ideal
            n_rows += rows
    return {p: {m: v / max(n_rows, 1) for m, v in d.items()} for p, d in sums.items()} | {"rows": n_rows}


def _effective_config(config, config_file, model):
    """RecBole's final value of every key of our config file and of the model's own defaults
    (``recbole/properties/model/<model>.yaml``): what the run actually used."""
    import yaml
    import recbole

    keys = set()
    model_yaml = os.path.join(os.path.dirname(recbole.__file__), "properties", "model", f"{model}.yaml")
    for path in (config_file, model_yaml):
        if os.path.isfile(path):
            with open(path) as f:
                keys |= set(yaml.safe_load(f) or {})
    plain = (int, float, str, bool, list, dict, type(None))
    return {k: (config[k] if isinstance(config[k], plain) else str(config[k])) for k in sorted(keys)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--config", required=True, help="the RecBole YAML config the harness wrote")
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--expect", help="digest JSON the loaded data must match (else exit 3)")
    ap.add_argument("--max-train-minutes", type=float, default=None)
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import ModelType, get_model, get_trainer, init_logger, init_seed

    started = time.perf_counter()
    config = Config(model=args.model, dataset=args.dataset, config_file_list=[args.config])
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    sequential = config["MODEL_TYPE"] == ModelType.SEQUENTIAL
    splits = (train_data._dataset, valid_data._dataset, test_data._dataset)
    digest = loaded_digest(dataset, splits, sequential)
    result = {"model": args.model, "dataset": args.dataset, "recbole_version": recbole.__version__,
              "torch_version": torch.__version__, "threads": torch.get_num_threads(),
              "sequential": sequential, "recbole_masks_history": not sequential,
              "loaded": digest}
    if args.expect:
        with open(args.expect) as f:
            problems = digest_problems(json.load(f), digest)
        result["digest_problems"] = problems
        if problems:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)
            print("RecBole's loaded data differ from the suite's split:\n  " + "\n  ".join(problems),
                  file=sys.stderr)
            return 3
    print(f"[driver] {args.model}: loaded data match the suite's split "
          f"({digest['users']} users, {digest['items']} items)", flush=True)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    epoch_seconds, valid_seconds, valid_scores = [], [], []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(*a, **kw):
        t0 = time.perf_counter()
        out = train_epoch(*a, **kw)
        epoch_seconds.append(round(time.perf_counter() - t0, 3))
        return out

    def timed_valid(*a, **kw):
        t0 = time.perf_counter()
        score, res = valid_epoch(*a, **kw)
        valid_seconds.append(round(time.perf_counter() - t0, 3))
        valid_scores.append({"epoch": len(epoch_seconds), "score": float(score)})
        return score, res

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    t_fit = time.perf_counter()

    def callback(epoch_idx, valid_score):
        if args.max_train_minutes is not None and time.perf_counter() - t_fit > 60 * args.max_train_minutes:
            raise _TimeUp()

    stopped = "max epochs"
    try:
        _, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                                    callback_fn=callback)
        if len(epoch_seconds) < config["epochs"]:
            stopped = f"early stopping (stopping_step {config['stopping_step']})"
    except _TimeUp:
        best_valid = trainer.best_valid_result
        stopped = f"time cap ({args.max_train_minutes} min)"
    train_seconds = time.perf_counter() - t_fit
    test_result = trainer.evaluate(test_data, load_best_model=True, model_file=trainer.saved_model_file,
                                   show_progress=False)
    ks = list(config["topk"])
    histories = _sequential_histories(splits, dataset.user_num) if sequential else None
    own = {phase: own_metrics(trainer.model, loader, ks, sequential,
                              histories[phase] if sequential else None, config["device"])
           for phase, loader in (("valid", valid_data), ("test", test_data))}
    proto = "unmasked" if sequential else "masked"
    agree = all(abs(own[ph][proto][m] - float(res[m])) < 1e-4
                for ph, res in (("valid", best_valid), ("test", test_result)) for m in res)
    best = max(valid_scores, key=lambda v: v["score"]) if valid_scores else None   # first max
    result.update({
        "config": _effective_config(config, args.config, args.model),
        "best_valid_result": {k: float(v) for k, v in best_valid.items()},
        "test_result": {k: float(v) for k, v in test_result.items()},
        "own_metrics": own, "agrees_with_recbole": agree,
        "epochs_run": len(epoch_seconds), "best_epoch": best["epoch"] if best else None,
        "epoch_seconds": epoch_seconds, "valid_seconds": valid_seconds, "valid_scores": valid_scores,
        "mean_epoch_seconds": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 3),
        "train_seconds": round(train_seconds, 2), "stopped": stopped,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
    os.replace(tmp, args.out)
    print(f"[driver] {args.model}: {len(epoch_seconds)} epochs, best {result['best_epoch']}, "
          f"test {result['test_result']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
