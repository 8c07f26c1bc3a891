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
- our own evaluation of the best model, with the model's full-ranking scores, under every
  masking rule of the suite's protocols (``RULES``; benchmarks/evaluation/protocols.py names
  them): ``unmasked`` (nothing removed), ``masked`` (every item of the user in the earlier
  splits removed, a repeat target too) and ``masked-keep-target`` (the same MINUS the split's
  targets: RecBole's ``used_ids - positive_items``). RecBole 1.2.1 evaluates general models
  with ``masked-keep-target`` (``FullSortEvalDataLoader`` passes a history index) and
  sequential ones ``unmasked`` (it passes None), so that rule must reproduce RecBole's own
  figures (``agrees_with_recbole``), and for general models our keep-target mask must equal
  RecBole's history index cell for cell (``recbole_mask_mismatches``: 0);
- ``--rule R``: RecBole's own evaluation (its early stopping on validation NDCG@10 and its
  test figures) masks by rule R instead of its own (``apply_rule``), so that a parity row
  compares two models both early-stopped under the row's protocol;
- ``--evaluate-checkpoint FILE --out RESULT``: no training; the saved best model of an
  earlier run is loaded and evaluated under every rule, and RESULT's evaluation is replaced
  (a result from before a rule existed gets it without retraining);
- the process's peak resident memory (``ru_maxrss``).

    python recbole_driver.py --model SASRec --dataset NAME --config cfg.yaml --out res.json
        [--expect digest.json] [--max-train-minutes M] [--rule masked] [--evaluate-checkpoint saved.pth]
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


#: the masking rules every evaluation computes: the suite's protocol names
#: (benchmarks/evaluation/protocols.py; the harness's tests check the two agree)
RULES = ("unmasked", "masked", "masked-keep-target")


def recbole_rule(sequential: bool) -> str:
    """The rule RecBole 1.2.1's own evaluation applies to a model of that kind."""
    return "unmasked" if sequential else "masked-keep-target"


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


def _histories(splits, n_users, sequential):
    """{phase: list of item-id sets per RecBole user}: the items of the earlier splits
    (valid: training; test: training + validation), the targets of those splits included."""
    train, valid, test = splits
    hist = [set() for _ in range(n_users)]
    feat = train.inter_feat
    users, targets = feat[train.uid_field].numpy(), feat[train.iid_field].numpy()
    if sequential:   # every training prefix row: its list and its target
        for u, lst, n, t in zip(users, feat[train.item_id_list_field].numpy(),
                                feat[train.item_list_length_field].numpy(), targets):
            hist[u].update(lst[:n].tolist())
            hist[u].add(int(t))
    else:
        for u, t in zip(users, targets):
            hist[u].add(int(t))
    out = {}
    for phase, ds in (("valid", valid), ("test", test)):
        feat = ds.inter_feat
        if sequential:
            for u, lst, n in zip(feat[ds.uid_field].numpy(), feat[ds.item_id_list_field].numpy(),
                                 feat[ds.item_list_length_field].numpy()):
                hist[u].update(lst[:n].tolist())
        out[phase] = [set(h) for h in hist]
        if phase == "valid":   # the validation targets are history for the test phase
            for u, t in zip(feat[ds.uid_field].numpy(), feat[ds.iid_field].numpy()):
                hist[u].add(int(t))
    return out


def rule_index(users, positives, histories, rule):
    """(rows, items): the cells one batch's ranking drops under a masking ``rule`` (not
    ``unmasked``): ``users`` the RecBole user of each row, ``positives`` the row's target set,
    ``histories`` the phase's item sets per user (:func:`_histories`)."""
    rows, items = [], []
    for r, u in enumerate(users):
        drop = histories[u] if rule == "masked" else histories[u] - positives[r]
        rows += [r] * len(drop)
        items += sorted(drop)
    return rows, items


def rule_scores(scores, users, positives, histories):
    """{rule: scores [rows, n_items] with that rule's items at -inf} for one batch
    (arguments as :func:`rule_index`)."""
    import torch

    out = {"unmasked": scores}
    for rule in ("masked", "masked-keep-target"):
        rows, items = rule_index(users, positives, histories, rule)
        sc = scores.clone()
        if rows:
            sc[torch.tensor(rows), torch.tensor(items)] = -math.inf
        out[rule] = sc
    return out


def metric_sums(scores, positives, ks):
    """{recall@k, ndcg@k: summed over the rows} of one batch's scores (full ranking)."""
    import numpy as np
    import torch

    kmax = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks}
    top = torch.topk(scores, kmax, dim=1).indices.tolist()
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    for r, pos in enumerate(positives):
        hits = np.array([i in pos for i in top[r]], dtype=float)
        for k in ks:
            ideal = disc[:min(len(pos), k)].sum()
            sums[f"recall@{k}"] += hits[:k].sum() / len(pos)
            sums[f"ndcg@{k}"] += (hits[:k] * disc[:k]).sum() / ideal
    return sums


def own_metrics(model, loader, ks, histories, device, loader_rule="masked-keep-target"):
    """Recall@K / NDCG@K of ``model`` on ``loader`` ranked over all items, under every rule of
    :data:`RULES`, and ``recbole_mask_mismatches``: the cells where the mask of ``loader_rule``
    (the rule the loader's history index implements: RecBole's keep-target for general models,
    or the one :func:`apply_rule` put there) and the loader's history index differ."""
    import torch

    sums = {p: {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks} for p in RULES}
    n_rows, mismatches = 0, 0
    model.eval()
    with torch.no_grad():
        for interaction, history_index, positive_u, positive_i in loader:
            scores = model.full_sort_predict(interaction.to(device)).view(-1, model.n_items).float()
            scores[:, 0] = -math.inf
            rows = scores.shape[0]
            pos = [set() for _ in range(rows)]
            for r, i in zip(positive_u.tolist(), positive_i.tolist()):
                pos[r].add(i)
            users = interaction[loader._dataset.uid_field].tolist()
            by_rule = rule_scores(scores, users, pos, histories)
            if history_index is not None:
                theirs = torch.zeros_like(scores, dtype=torch.bool)
                theirs[history_index] = True
                ours = torch.isinf(by_rule[loader_rule]) & ~torch.isinf(scores)
                mismatches += int((theirs[:, 1:] != ours[:, 1:]).sum())
            for rule, sc in by_rule.items():
                for m, v in metric_sums(sc, pos, ks).items():
                    sums[rule][m] += v
            n_rows += rows
    out = {p: {m: v / max(n_rows, 1) for m, v in d.items()} for p, d in sums.items()}
    return out | {"rows": n_rows, "recbole_mask_mismatches": mismatches}


def apply_rule(loader, histories, rule):
    """Make RecBole's evaluation on ``loader`` mask by ``rule`` (one of :data:`RULES`) instead
    of its own: the loader's batches get that rule's history index (None for ``unmasked``),
    built from ``histories`` (:func:`_histories`, the loader's phase) and each batch's
    positives. RecBole's trainer removes exactly the items of that index from the ranking, so
    its early stopping and its own figures follow the rule. (``collate_fn`` is read when a
    pass over the loader starts; torch lets it be set after construction.)"""
    import torch

    inner = loader.collate_fn
    uid = loader._dataset.uid_field

    def collate(index):
        interaction, _, positive_u, positive_i = inner(index)
        if rule == "unmasked":
            return interaction, None, positive_u, positive_i
        users = interaction[uid].tolist()
        pos = [set() for _ in users]
        for r, i in zip(positive_u.tolist(), positive_i.tolist()):
            pos[r].add(i)
        rows, items = rule_index(users, pos, histories, rule)
        return interaction, (torch.tensor(rows, dtype=torch.long), torch.tensor(items, dtype=torch.long)), \
            positive_u, positive_i

    loader.collate_fn = collate


def evaluate_everything(model, histories, loaders, ks, sequential, device, best_valid, test_result, rule=None):
    """The result keys of our own evaluation (``histories``: :func:`_histories`): per phase
    :func:`own_metrics`, and whether ``rule`` (the one RecBole's evaluation applied: its own,
    :func:`recbole_rule`, unless :func:`apply_rule` set another) reproduces RecBole's own
    figures."""
    rule = rule or recbole_rule(sequential)
    own = {phase: own_metrics(model, loader, ks, histories[phase], device, loader_rule=rule)
           for phase, loader in zip(("valid", "test"), loaders)}
    agree = all(abs(own[ph][rule][m] - float(res[m])) < 1e-4
                for ph, res in (("valid", best_valid), ("test", test_result)) for m in res)
    agree = agree and all(own[ph]["recbole_mask_mismatches"] == 0 for ph in own)
    return {"own_metrics": own, "own_metrics_rules": list(RULES), "recbole_protocol": rule,
            "agrees_with_recbole": agree}


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
    ap.add_argument("--rule", choices=RULES, help="RecBole's evaluation (early stopping and its own "
                    "figures) masks by this rule instead of its own (general models keep-target, "
                    "sequential unmasked)")
    ap.add_argument("--evaluate-checkpoint", help="no training: evaluate this saved model under every "
                    "rule and replace --out's evaluation (an earlier result of the same config)")
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
              "sequential": sequential, "loaded": digest}
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
    ks = list(config["topk"])
    rule = args.rule or recbole_rule(sequential)
    histories = _histories(splits, dataset.user_num, sequential)
    if args.rule:
        for phase, loader in (("valid", valid_data), ("test", test_data)):
            apply_rule(loader, histories[phase], args.rule)
        result["evaluation_rule_set"] = args.rule
    if args.evaluate_checkpoint:
        return _reevaluate(args, model, histories, (valid_data, test_data), ks, sequential, config["device"], rule)
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
    best = max(valid_scores, key=lambda v: v["score"]) if valid_scores else None   # first max
    result.update({
        "config": _effective_config(config, args.config, args.model),
        "best_valid_result": {k: float(v) for k, v in best_valid.items()},
        "test_result": {k: float(v) for k, v in test_result.items()},
        **evaluate_everything(trainer.model, histories, (valid_data, test_data), ks, sequential,
                              config["device"], best_valid, test_result, rule),
        "checkpoint": trainer.saved_model_file,
        "epochs_run": len(epoch_seconds), "best_epoch": best["epoch"] if best else None,
        "epoch_seconds": epoch_seconds, "valid_seconds": valid_seconds, "valid_scores": valid_scores,
        "mean_epoch_seconds": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 3),
        "train_seconds": round(train_seconds, 2), "stopped": stopped,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    })
    _write(args.out, result)
    print(f"[driver] {args.model}: {len(epoch_seconds)} epochs, best {result['best_epoch']}, "
          f"test {result['test_result']}", flush=True)
    return 0


def _write(path, result):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
    os.replace(tmp, path)


def _reevaluate(args, model, histories, loaders, ks, sequential, device, rule) -> int:
    """``--evaluate-checkpoint``: load the saved best model, check it is the one ``--out``
    describes (its best validation score), evaluate it under every rule, rewrite ``--out``."""
    import torch

    with open(args.out) as f:
        result = json.load(f)
    ckpt = torch.load(args.evaluate_checkpoint, map_location=device, weights_only=False)
    want = result["best_valid_result"].get("ndcg@10")
    if want is None or abs(float(ckpt["best_valid_score"]) - want) > 1e-5:
        print(f"[driver] {args.evaluate_checkpoint}: best validation score {ckpt['best_valid_score']} is "
              f"not {args.out}'s ({want}): not that run's model", file=sys.stderr)
        return 4
    model.load_state_dict(ckpt["state_dict"])
    model.load_other_parameter(ckpt.get("other_parameter"))
    result.update(evaluate_everything(model, histories, loaders, ks, sequential, device,
                                      result["best_valid_result"], result["test_result"], rule))
    result.pop("recbole_masks_history", None)
    result.update({"checkpoint": args.evaluate_checkpoint,
                   "reevaluated": time.strftime("%Y-%m-%d %H:%M:%S")})
    _write(args.out, result)
    print(f"[driver] {args.model}: re-evaluated {args.evaluate_checkpoint} under {', '.join(RULES)}; "
          f"agrees with RecBole: {result['agrees_with_recbole']}", flush=True)
    return 0 if result["agrees_with_recbole"] else 5


if __name__ == "__main__":
    sys.exit(main())
