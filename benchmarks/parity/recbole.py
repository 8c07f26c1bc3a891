"""Parity harness: the suite's traditional baselines against RecBole 1.2.1 on the SAME split.

    python -m benchmarks.parity.recbole --dataset beauty --models bpr,sasrec,lightgcn \\
        [--epochs N] [--max-train-minutes M] [--seed 0] [--protocol recbole|masked,unmasked|...] \\
        [--recbole-python .venv-recbole/bin/python] --output results/parity/beauty

A benchmark script, not a test and not a dependency of the suite: RecBole runs in its own
virtualenv (``scripts/recbole_env.sh``), as a subprocess (``recbole_driver.py``). Per model:

1. the dataset is loaded through the suite's own loader (``load_dataset``: the suite's 5-core,
   leave-one-out split and history cap) and written as RecBole benchmark files
   (``benchmarks.parity.atomic``), so RecBole trains and evaluates on exactly our split;
   the driver checks, after RecBole has loaded them, that its users, items, rows per split,
   targets and histories equal ours (a digest of every row) and stops otherwise;
2. RecBole's model runs with a config this script writes (``configs/recbole-<model>.yaml``):
   RecBole's model defaults, with every setting the two implementations share set to OUR
   value (``SPECS``: embedding size, layers, heads, dropout, loss, lr, batch, weight decay,
   epochs, early-stopping patience and validation interval); full ranking, Recall / NDCG @5,10,
   early stopping on validation NDCG@10, one thread, the seed fixed;
3. ours runs through ``benchmarks.runner`` on a matrix this script writes
   (``configs/ours-<model>.yaml``): the fidelity preset's config of the method, with the
   parity overrides of ``SPECS`` (where a setting of ours has no RecBole counterpart);
4. ``parity.md`` / ``parity.csv``: ours vs RecBole per model (valid and test R@10 / N@10, the
   relative gap, s / epoch, epochs, best epoch, peak memory, within ±5 % or better).

Evaluation protocol. RecBole 1.2.1 removes a user's history items MINUS the split's targets
from the ranking for GENERAL models (BPR, LightGCN: ``FullSortEvalDataLoader`` builds a history
index of ``used_ids - positive_items``; the suite's ``masked-keep-target``) but nothing for
SEQUENTIAL ones (SASRec, BERT4Rec, Caser, HGN: it passes no history index; ``unmasked``).
``--protocol recbole`` (default) evaluates ours the way RecBole evaluates each model; a suite
protocol (``masked``, ``masked-keep-target``, ``unmasked``: benchmarks/evaluation/protocols.py)
evaluates ours one way for all models (several, comma-separated: one row per model and
protocol; ours trained ONCE for all of them, by the runner's shared training, RecBole once), and RecBole's side then comes, where RecBole's own rule
is another, from the driver's evaluation of RecBole's best model under that rule (marked
"driver" in the table; RecBole's early stopping still used its own rule, unless
``--recbole-early-stopping protocol``: then RecBole runs once more per protocol whose rule is
another, with its own evaluation, early stopping included, masked by that rule). Where no validation /
test target repeats a history item (Beauty, ML-100K) ``masked`` and ``masked-keep-target`` rank
identically and either figure stands for the other; where targets repeat (Yelp) they do not,
and a result from before the driver knew ``masked`` is re-evaluated from its saved checkpoint
(no retraining). Peak memory is the process's peak resident set size (``ru_maxrss``) of each
side's whole run, taken the same way for both (``os.wait4``).

Finished runs are reused: a RecBole result whose config is unchanged is not rerun, and the
suite's runner resumes its own cells; ``--table-only`` rebuilds the tables from what exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from benchmarks.evaluation import protocols
from benchmarks.parity.atomic import compare_digests, split_digest, write_atomic_files
from benchmarks.parity.recbole_driver import recbole_rule

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "recbole_driver.py"
DEFAULT_RECBOLE_VENV = ROOT / ".venv-recbole"
KS = (5, 10)
EVAL_USERS = 256   # users per ranking batch on both sides (our EvalConfig.batch_size default)


#: the protocols a parity run may evaluate under: RecBole's own per model kind, or one of the
#: suite's for every model
PROTOCOL_CHOICES = ("recbole", *protocols.PROTOCOLS)


def ours_evaluation(protocol: str) -> dict:
    """The suite's evaluation key for ranking under ``protocol`` (a name of
    benchmarks/evaluation/protocols.py). THE one place that names the key."""
    return {"protocol": protocols.check_name(protocol)}


def model_protocol(spec_kind: str, requested: str) -> str:
    """The protocol one model is evaluated under: RecBole's own rule for its kind
    (``--protocol recbole``), else the one asked for."""
    if requested == "recbole":
        return recbole_rule(spec_kind == "sequential")
    return protocols.check_name(requested)


# --------------------------------------------------------------------------- model mapping
@dataclass(frozen=True)
class ModelSpec:
    """One model on both sides. ``recbole_config(c, max_history)`` maps OUR resolved config
    (the method's Config as a dict) to RecBole's model / training settings; ``cap`` gives the
    history length of the RecBole files (None: the general layout, no histories);
    ``ours_overrides`` change our config where RecBole cannot follow ours; ``unmatched`` says
    what differs all the same, and why."""

    ours: str
    recbole: str
    kind: str
    recbole_config: Callable[[dict, int], dict]
    cap: Callable[[dict, int], int | None]
    ours_overrides: dict = field(default_factory=dict)
    unmatched: tuple[str, ...] = ()
    #: our fidelity-preset entry (its label) where it is not the method's own, e.g. ``hgn-ce``
    label: str = ""

    @property
    def tag(self) -> str:
        """Our side's name: the fidelity entry's label (its config, its rows in the check,
        its files here)."""
        return self.label or self.ours


def _training(c: dict) -> dict:
    """The training settings every model shares: epochs, batch, optimiser, early stopping."""
    out = {"epochs": c["epochs"], "train_batch_size": c["batch_size"], "learning_rate": c["lr"],
           "weight_decay": c["weight_decay"], "stopping_step": c["patience"],
           "eval_step": c["eval_every"], "learner": "adam"}
    if c.get("grad_clip"):
        out["clip_grad_norm"] = {"max_norm": c["grad_clip"], "norm_type": 2}
    return out


_UNIFORM_NEGATIVE = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0, "dynamic": False,
                     "candidate_num": 0}


def _bpr(c: dict, h: int) -> dict:
    return {**_training(c), "embedding_size": c["dim"], "train_neg_sample_args": _UNIFORM_NEGATIVE}


def _lightgcn(c: dict, h: int) -> dict:
    # require_pow: True makes RecBole's EmbLoss λ Σ‖e‖² / (2 B) on the ego embeddings, ours
    # (its default, False, takes unsquared norms)
    return {**_training(c), "embedding_size": c["dim"], "n_layers": c["n_layers"],
            "reg_weight": c["reg"], "require_pow": True, "train_neg_sample_args": _UNIFORM_NEGATIVE}


def _sasrec(c: dict, h: int) -> dict:
    if c["loss"] != "ce":
        raise ValueError(f"sasrec: parity needs loss 'ce' (RecBole's 'BPR' loss is not our 'bce'), got {c['loss']!r}")
    return {**_training(c), "n_layers": c["n_layers"], "n_heads": c["n_heads"], "hidden_size": c["hidden"],
            "inner_size": c["inner"], "hidden_dropout_prob": c["dropout"], "attn_dropout_prob": c["attn_dropout"],
            "hidden_act": "gelu", "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": h, "train_neg_sample_args": None}


def _bert4rec(c: dict, h: int) -> dict:
    # AdamW as ours; RecBole decays every parameter (ours: not biases / layer norms)
    return {**_training(c), "learner": "adamw", "n_layers": c["n_layers"], "n_heads": c["n_heads"],
            "hidden_size": c["hidden"], "inner_size": c["inner"], "hidden_dropout_prob": c["dropout"],
            "attn_dropout_prob": c["attn_dropout"], "hidden_act": "gelu", "mask_ratio": c["mask_prob"],
            "ft_ratio": c["last_mask_prob"], "loss_type": "CE", "transform": "mask_itemseq",
            "MAX_ITEM_LIST_LENGTH": h + 1, "train_neg_sample_args": None}


def _caser(c: dict, h: int) -> dict:
    # L2: ours is Adam's weight decay; RecBole's explicit reg_weight (default 1e-4) is set to 0
    return {**_training(c), "embedding_size": c["dim"], "nv": c["n_v"], "nh": c["n_h"],
            "dropout_prob": c["dropout"], "reg_weight": 0.0, "loss_type": "CE",
            "MAX_ITEM_LIST_LENGTH": c["L"], "train_neg_sample_args": None}


def _hgn(c: dict, h: int) -> dict:
    # weight decay: ours (1e-3) is relative to a SUMMED BPR loss, which RecBole's HGN cannot
    # train (see unmatched): RecBole's own regularisation defaults are kept (none)
    return {**_training(c), "weight_decay": 0.0, "embedding_size": c["dim"], "reg_weight": [0.0, 0.0],
            "pooling_type": "average", "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": c["L"],
            "train_neg_sample_args": None}


SPECS: dict[str, ModelSpec] = {
    "bpr": ModelSpec(
        "mf", "BPR", "general", _bpr, lambda c, h: None, ours_overrides={"reg": 0.0},
        unmatched=("RecBole's BPR has no regulariser: ours runs with reg 0 here (the fidelity "
                   "preset's MF has λ = 1e-4)",)),
    "lightgcn": ModelSpec(
        "lightgcn", "LightGCN", "general", _lightgcn, lambda c, h: None,
        unmatched=("initialisation: RecBole xavier-uniform, ours N(0, 0.1²) (the authors' code)",
                   "validation every eval_every epochs on both sides; RecBole counts stopping_step "
                   "in validations as ours counts patience")),
    "sasrec": ModelSpec(
        "sasrec", "SASRec", "sequential", _sasrec, lambda c, h: h,
        unmatched=("blocks: RecBole post-norm (layer norm after each residual, and on the "
                   "embeddings), ours pre-norm with a final layer norm and item embeddings scaled by √d",
                   "positions: RecBole right-pads, so position 0 is the OLDEST history item; ours "
                   "left-pads, so the last position is always the most recent item",
                   "training samples: RecBole one row per (prefix -> next item), loss at the last "
                   "position only; ours windows of max_history + 1 items with a loss at every "
                   "position (the same targets, fewer and longer steps per epoch)")),
    "bert4rec": ModelSpec(
        "bert4rec", "BERT4Rec", "sequential", _bert4rec, lambda c, h: h + 1,
        unmatched=("history files hold max_history + 1 items for BERT4Rec: RecBole appends [mask] "
                   "by shifting the sequence left (reconstruct_test_data drops the oldest item), so it "
                   "then predicts from the last max_history items + [mask], as ours does",
                   "masking: RecBole masks each item with probability ρ (at most int(ρ L) kept) per "
                   "prefix row and masks a whole BATCH at its last item with probability ft_ratio; ours "
                   "masks exactly round(ρ n) items per window and single windows at the last item",
                   "AdamW weight decay: RecBole on every parameter, ours not on biases / layer norms; "
                   "RecBole's init N(0, 0.02²), ours truncated normal")),
    "caser": ModelSpec(
        "caser", "Caser", "sequential", _caser, lambda c, h: c["L"],
        unmatched=("loss: ours the paper's binary cross-entropy with n_neg sampled negatives for each "
                   "of T next items; RecBole's Caser trains CE or BPR on ONE next item: CE used",
                   "output layer: ours a separate item table W2 with bias b2 on [z, P_u] (the paper); "
                   "RecBole maps [z, P_u] through fc2 + ReLU and scores with the input item table",
                   "histories: L = MAX_ITEM_LIST_LENGTH = the L last items on both sides; RecBole "
                   "right-pads histories shorter than L")),
    "hgn": ModelSpec(
        "hgn", "HGN", "sequential", _hgn, lambda c, h: c["L"],
        unmatched=("loss: ours BPR summed over T next items (the authors' code); RecBole's HGN 'BPR' "
                   "scores the negative with the INPUT item table and the positive with the output "
                   "table, so its CE (one next item, RecBole's default) is used",
                   "regularisation: ours Adam weight decay 1e-3 against the summed loss; RecBole's "
                   "defaults (no weight decay, reg_weight [0, 0]) kept, a decay against a mean CE "
                   "being a different strength",
                   "instance gates: ours exclude left-padded positions; RecBole's average includes "
                   "its right-padded ones")),
    "hgn-ce": ModelSpec(
        "hgn", "HGN", "sequential", _hgn, lambda c, h: c["L"], label="hgn-ce",
        unmatched=("the same loss on both sides (softmax CE over one next item, no weight decay): "
                   "ours the fidelity preset's hgn-ce entry; our output bias b_k, which RecBole's HGN lacks, kept",
                   "instance gates: ours exclude left-padded positions; RecBole's average includes "
                   "its right-padded ones")),
}
ALIASES = {"mf": "bpr"}


# --------------------------------------------------------------------------- our configs
def fidelity_configs() -> dict[str, dict]:
    """Entry label -> config of the fidelity preset (benchmarks/presets/fidelity.yaml); the
    entry labelled with the method's own name is its default row (``sasrec``, not ``sasrec-bce``)."""
    from benchmarks.matrix import load_matrix
    return {m.label: dict(m.config) for m in load_matrix(preset="fidelity").methods}


def resolved_ours(spec: ModelSpec, epochs: int | None, max_minutes: float | None) -> tuple[dict, dict]:
    """(the overrides of our method config: fidelity preset + parity overrides + CLI caps,
    the whole config with the method's defaults)."""
    from benchmarks.config import build_config
    from benchmarks.registry import METHODS

    over = {**fidelity_configs().get(spec.tag, {}), **spec.ours_overrides}
    if epochs is not None:
        over["epochs"] = epochs
    if max_minutes is not None:
        over["max_train_minutes"] = max_minutes
    return over, dataclasses.asdict(build_config(METHODS.get(spec.ours).Config, over))


def recbole_evaluation_rule(spec_kind: str, protocol: str, early_stopping: str, repeats: int) -> str | None:
    """The masking rule RecBole's own evaluation is set to for a row under ``protocol``: None
    (RecBole's own) with ``--recbole-early-stopping own`` or where its own rule ranks as
    ``protocol`` does on this dataset; else ``protocol`` (a RecBole run of its own)."""
    own = model_protocol(spec_kind, "recbole")
    return None if early_stopping == "own" or protocols.equivalent(protocol, own, repeats) else protocol


def fidelity_evaluation() -> dict:
    """The fidelity preset's ``evaluation`` block: our side of a parity run is evaluated as the
    fidelity run of the same entry is (the same ks, subsets, validation users), so that the two
    are ONE cell (one hash) and a finished fidelity cell stands for our side (``--ours-from``)."""
    from benchmarks.matrix import load_matrix
    return dict(load_matrix(preset="fidelity").evaluation)


def ours_matrix(dataset: str, spec: ModelSpec, overrides: dict, seed: int, protocol: str) -> dict:
    """The matrix that runs our method on ``dataset`` the way the parity run needs: the fidelity
    preset's evaluation under ``protocol`` (its ks hold the parity table's ``KS``)."""
    evaluation = {**fidelity_evaluation(), **ours_evaluation(protocol)}
    missing = set(KS) - set(evaluation.get("ks", KS))
    if missing:
        raise ValueError(f"benchmarks/presets/fidelity.yaml: evaluation.ks lacks {sorted(missing)}, "
                         f"which the parity table reports")
    return {"name": f"parity-{dataset}-{spec.tag}", "datasets": [dataset], "seeds": [seed],
            "device": "cpu", "evaluation": evaluation,
            "methods": [{"name": spec.ours, "label": spec.tag, "config": overrides}]}


def recbole_run_name(spec: ModelSpec, rule: str | None) -> str:
    """The name of one RecBole run's files (result, config, log, checkpoints): the model's,
    with the masking rule its evaluation was set to where that is not RecBole's own."""
    return spec.recbole if rule is None else f"{spec.recbole}-{rule}"


def recbole_yaml(spec: ModelSpec, name: str, work: Path, seed: int, model_cfg: dict, n_items: int,
                 run_name: str | None = None) -> dict:
    """RecBole's full config for one run on the benchmark files ``<work>/data/<name>/``.

    ``eval_batch_size``: 256 users per ranking batch, as our evaluator's default. RecBole counts
    it in SCORES for general models (users per batch = eval_batch_size // item_num, at least 1:
    its default 4096 ranks Beauty's 12,102 items ONE user at a time) and in rows for sequential
    ones."""
    cfg = {"gpu_id": "", "use_gpu": False, "seed": seed, "reproducibility": True, "state": "INFO",
           "worker": 0, "show_progress": False, "save_dataset": False, "save_dataloaders": False,
           "data_path": str(work / "data"), "checkpoint_dir": str(work / "saved" / (run_name or spec.recbole)),
           "benchmark_filename": ["train", "valid", "test"],
           "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
           "load_col": {"inter": ["user_id", "item_id"] + (["item_id_list"] if spec.kind == "sequential" else [])},
           "eval_args": {"split": {"LS": "valid_and_test"}, "group_by": "user", "order": "TO", "mode": "full"},
           "metrics": ["Recall", "NDCG"], "topk": list(KS), "valid_metric": "NDCG@10",
           "metric_decimal_place": 6,
           "eval_batch_size": EVAL_USERS * (n_items + 1 if spec.kind == "general" else 1)}
    if spec.kind == "sequential":
        cfg["alias_of_item_id"] = ["item_id_list"]
    cfg.update(model_cfg)
    return cfg


# --------------------------------------------------------------------------- running
def log(msg: str) -> None:
    print(f"[parity] {time.strftime('%H:%M:%S')} {msg}", flush=True)


def _run(cmd: list[str], *, cwd: Path, env: dict, logfile: Path) -> tuple[int, float, float]:
    """Run ``cmd`` with stdout+stderr to ``logfile``; -> (exit status, seconds, peak RSS MB)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(logfile, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, round(usage.ru_maxrss / 1024, 1)


def _tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-n:])


def _recbole_env(args) -> tuple[Path, dict]:
    py = Path(args.recbole_python)
    if not py.is_file():
        raise FileNotFoundError(f"{py}: no RecBole python; create the venv with scripts/recbole_env.sh "
                                f"(or pass --recbole-python)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
           "PYTHONPATH": str(py.parent.parent / "ray-stub")}
    return py, env


def reevaluate(spec: ModelSpec, args, work: Path, cmd: list[str], old: dict, res_path: Path,
               run: str | None = None) -> dict:
    """A finished RecBole result that lacks a masking rule: its saved best model evaluated
    again under every rule (the driver's ``--evaluate-checkpoint``), no retraining."""
    run = run or spec.recbole
    saved = sorted((work / "saved" / run).glob("*.pth"), key=lambda p: p.stat().st_mtime)
    ckpt = Path(old["checkpoint"]) if old.get("checkpoint") else (saved[-1] if saved else None)
    if ckpt is None or not ckpt.is_file():
        raise FileNotFoundError(
            f"{res_path}: this RecBole result predates the driver's `masked` rule and its saved model "
            f"({work / 'saved' / run}/*.pth) is gone: rerun the model (delete {res_path})")
    raw = Path(cmd[cmd.index("--out") + 1])
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(old, indent=2))
    py, env = _recbole_env(args)
    log(f"RecBole {run}: re-evaluating {ckpt} under every masking rule")
    rc, secs, _ = _run([str(py)] + cmd + ["--evaluate-checkpoint", str(ckpt)], cwd=work, env=env,
                       logfile=work / "logs" / f"{run}-reevaluate.log")
    if rc != 0:
        raise RuntimeError(f"RecBole {run}: re-evaluation of {ckpt} failed (exit status {rc}):\n"
                           + _tail(work / "logs" / f"{run}-reevaluate.log"))
    result = {**json.loads(raw.read_text()), "harness_key": old["harness_key"]}
    res_path.write_text(json.dumps(result, indent=2))
    log(f"RecBole {run}: re-evaluated in {secs:.0f} s")
    return result


def run_recbole(spec: ModelSpec, ds, args, out: Path, ours_cfg: dict, protocol: str, repeats: int,
                rule: str | None = None) -> dict:
    """Write the files and the config, run the driver (unless an identical run finished; one
    that lacks ``protocol``'s rule is re-evaluated from its checkpoint). ``rule``: RecBole's
    evaluation, early stopping included, masks by it instead of RecBole's own (a run of its own,
    :func:`recbole_run_name`)."""
    run = recbole_run_name(spec, rule)
    work = out / "work"
    cap = spec.cap(ours_cfg, ds.max_history)
    name = f"gb-{ds.name}-{spec.kind}" + (f"{cap}" if cap else "")
    folder = work / "data" / name
    digest = split_digest(ds, spec.kind, cap)
    if not (folder / "digest.json").is_file() or json.loads((folder / "digest.json").read_text()) != digest:
        write_atomic_files(ds, folder, name, spec.kind, cap)
        (folder / "digest.json").write_text(json.dumps(digest, indent=1))
        log(f"wrote RecBole files {folder} ({spec.kind}, history cap {cap})")
    model_cfg = spec.recbole_config(ours_cfg, ds.max_history)
    cfg = recbole_yaml(spec, name, work, args.seed, model_cfg, ds.n_items, run)
    cfg_path = out / "configs" / f"recbole-{run}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_text = yaml.safe_dump(cfg, sort_keys=True)
    minutes = ours_cfg.get("max_train_minutes")
    res_path = out / "recbole" / f"{run}.json"
    key = {"config": cfg, "digest": digest, "max_train_minutes": minutes}
    if rule is not None:
        key["rule"] = rule
    raw = work / "results" / f"{run}.json"
    cmd = [str(DRIVER), "--model", spec.recbole, "--dataset", name, "--config", str(cfg_path),
           "--out", str(raw), "--expect", str(folder / "digest.json")] + (["--rule", rule] if rule else [])
    if res_path.is_file():
        old = json.loads(res_path.read_text())
        if old.get("harness_key") == key and "test_result" in old:
            if protocol_rule(old, protocol, repeats) is not None:
                log(f"RecBole {spec.recbole}: reusing {res_path}")
                return old
            return reevaluate(spec, args, work, cmd, old, res_path, run)
    cfg_path.write_text(cfg_text)
    res_path.parent.mkdir(parents=True, exist_ok=True)
    raw.parent.mkdir(parents=True, exist_ok=True)
    py, env = _recbole_env(args)
    cmd = [str(py)] + cmd
    if minutes is not None:
        cmd += ["--max-train-minutes", str(minutes)]
    log(f"RecBole {run}: running (log {work / 'logs' / (run + '.log')})")
    rc, secs, rss = _run(cmd, cwd=work, env=env, logfile=work / "logs" / f"{run}.log")
    if rc != 0 or not raw.is_file():
        err = _tail(work / "logs" / f"{run}.log")
        failed = {"error": f"exit status {rc}", "log_tail": err, "harness_key": key}
        res_path.write_text(json.dumps(failed, indent=2))
        log(f"RecBole {run}: FAILED (exit status {rc}):\n{err}")
        return failed
    result = json.loads(raw.read_text())
    problems = compare_digests(digest, result["loaded"])
    if problems:
        raise RuntimeError(f"RecBole {run}: loaded data differ from the suite's split: {problems}")
    result.update({"harness_key": key, "process_peak_rss_mb": rss, "process_seconds": round(secs, 1),
                   "data_check": "ok"})
    res_path.write_text(json.dumps(result, indent=2))
    log(f"RecBole {run}: done in {secs:.0f} s, {result['epochs_run']} epochs, "
        f"test NDCG@10 {result['test_result'].get('ndcg@10'):.4f}")
    return result


_OURS_RUNNER = ("import sys; from benchmarks.matrix import load_matrix; from benchmarks.runner import run_matrix\n"
                "s = run_matrix(load_matrix(sys.argv[1]), sys.argv[2], progress=False, fail_fast=True)\n"
                "print(s)")


def run_ours(spec: ModelSpec, args, out: Path, overrides: dict, protocols_: list[str]) -> dict[str, dict]:
    """Our method under each of ``protocols_`` through benchmarks.runner, as ONE training for
    all protocols still missing (the runner's shared training: its cells equal those of one run
    per protocol), in a subprocess so that its peak memory is its own. A finished cell, here or
    in ``--ours-from``, is read, not rerun. -> {protocol: read_ours(...) or {"error": ...}}."""
    from benchmarks.matrix import expand, load_matrix

    run_dir = out / "ours" / spec.tag
    cells = {}
    for proto in protocols_:
        mpath = ours_matrix_path(out, spec, proto)
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(yaml.safe_dump(ours_matrix(args.dataset, spec, overrides, args.seed, proto), sort_keys=False))
        cell = cells[proto] = expand(load_matrix(mpath))[0]
        if not (run_dir / cell.relpath / "metrics.csv").is_file():
            source = reuse_ours(cell, args.ours_from or [])
            if source is not None:
                log(f"ours {spec.tag} ({proto}): the finished cell {source} is this run's cell (same hash): "
                    "copied, not rerun")
                shutil.copytree(source, run_dir / cell.relpath)
                _save_process_stats(run_dir, cell.hash, {"reused_from": str(source)})
    missing = [p for p in protocols_ if not (run_dir / cells[p].relpath / "metrics.csv").is_file()]
    failed = {}
    if missing:
        matrix = ours_matrix(args.dataset, spec, overrides, args.seed, missing[0])
        matrix["evaluation"]["protocol"] = missing if len(missing) > 1 else missing[0]
        mpath = out / "work" / "matrices" / f"ours-{spec.tag}-{'+'.join(missing)}.yaml"
        mpath.parent.mkdir(parents=True, exist_ok=True)
        mpath.write_text(yaml.safe_dump(matrix, sort_keys=False))
        logfile = out / "work" / "logs" / f"ours-{spec.tag}.log"
        log(f"ours {spec.tag}: running {', '.join(missing)}" + (" (one training)" if len(missing) > 1 else "")
            + f" (log {logfile})")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        rc, secs, rss = _run([sys.executable, "-c", _OURS_RUNNER, str(mpath), str(run_dir)], cwd=ROOT, env=env,
                             logfile=logfile)
        stats = {"process_peak_rss_mb": rss, "process_seconds": round(secs, 1)}
        if len(missing) > 1:
            stats["one_training_for"] = missing
        for proto in missing:
            if (run_dir / cells[proto].relpath / "metrics.csv").is_file():   # written, even if a later one failed
                _save_process_stats(run_dir, cells[proto].hash, stats)
            elif rc != 0:
                failed[proto] = {"error": f"exit status {rc}", "log_tail": _tail(logfile)}
            else:
                failed[proto] = {"error": f"the runner wrote no cell {cells[proto].relpath}",
                                 "log_tail": _tail(logfile)}
        if failed:
            log(f"ours {spec.tag}: FAILED ({', '.join(failed)}; exit status {rc}):\n{_tail(logfile)}")
    return {p: failed.get(p) or read_ours(run_dir / cells[p].relpath, run_dir, cells[p].hash) for p in protocols_}


def reuse_ours(cell, folders: list[str]) -> Path | None:
    """The first finished cell of ``cell``'s hash in the suite's run folders ``folders``
    (``genrec-bench run --output`` folders, or results/fidelity/<dataset>), None if none: the
    hash covers the dataset, method, config, seed and evaluation, so that cell IS ours."""
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"--ours-from {folder}: no such folder")
        cdir = root / cell.relpath
        if (cdir / "metrics.csv").is_file():
            saved = json.loads((cdir / "config.json").read_text())
            if saved != json.loads(json.dumps(cell.resolved)):
                raise ValueError(f"{cdir}/config.json: differs from the resolved config of this run's cell "
                                 f"{cell.hash}, whose hash its folder carries: not a cell of the suite's runner")
            return cdir
    return None


def ours_matrix_path(out: Path, spec: ModelSpec, protocol: str) -> Path:
    """Where the matrix of our run of ``spec`` under ``protocol`` is written (one per
    protocol: a parity folder may hold several)."""
    return out / "configs" / f"ours-{spec.tag}-{protocol}.yaml"


def find_ours(out: Path, spec: ModelSpec, protocol: str) -> dict:
    """Our finished cell of ``spec`` under ``protocol`` in ``out`` (``--table-only``); a folder
    written before one matrix per protocol holds ``ours-<method>.yaml``, used where its
    protocol is this one. ``{"error": "not run"}`` where there is none."""
    from benchmarks.matrix import expand, load_matrix

    for mpath in (ours_matrix_path(out, spec, protocol), out / "configs" / f"ours-{spec.tag}.yaml"):
        if not mpath.is_file():
            continue
        cell = expand(load_matrix(mpath))[0]
        if cell.resolved["evaluation"]["protocol"] != protocol:
            continue
        cdir = out / "ours" / spec.tag / cell.relpath
        if (cdir / "metrics.csv").is_file():
            return read_ours(cdir, out / "ours" / spec.tag, cell.hash)
    return {"error": "not run"}


def _process_cells(run_dir: Path) -> dict:
    """{cell hash: peak memory and seconds of the process that ran it} from the run folder's
    ``process.json`` (one entry per cell; an older file held one cell's, with its hash)."""
    path = run_dir / "process.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    if "cells" in old:
        return old["cells"]
    return {old["hash"]: {k: v for k, v in old.items() if k != "hash"}} if "hash" in old else {}


def _save_process_stats(run_dir: Path, cell_hash: str, stats: dict) -> None:
    cells = {**_process_cells(run_dir), cell_hash: stats}
    (run_dir / "process.json").write_text(json.dumps({"cells": cells}, indent=1))


def _process_stats(run_dir: Path, cell_hash: str) -> dict:
    return _process_cells(run_dir).get(cell_hash, {})


def read_ours(cell_dir: Path, run_dir: Path, cell_hash: str) -> dict:
    """Metrics, epochs and timing of one finished cell of ours."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(cell_dir / "metrics.csv")
    df = df[df["subset"] == "all"]
    metrics = {split: {f"{r.metric}@{int(r.k)}": float(r.value)
                       for r in df[(df["split"] == split) & df["metric"].isin(["recall", "ndcg"])].itertuples()}
               for split in ("valid", "test")}
    tl = json.loads((cell_dir / "train_log.json").read_text())
    stats = _process_stats(run_dir, cell_hash)
    # the standard error of our test means over users: how far apart two runs of the same
    # model may land by chance alone (RecBole's per-user figures are not dumped)
    with np.load(cell_dir / "per_user.npz") as z:
        se = {m: float(z[f"test/all/{m}"].std(ddof=1) / np.sqrt(len(z[f"test/all/{m}"])))
              for m in ("recall@10", "ndcg@10") if f"test/all/{m}" in z.files}
    return {"valid": metrics["valid"], "test": metrics["test"], "test_se": se, "epochs_run": len(tl["epochs"]),
            "best_epoch": tl["best_epoch"], "mean_epoch_seconds": tl["mean_epoch_seconds"],
            "stopped": tl["stopped"], "train_seconds": tl["train_seconds"],
            "peak_rss_mb": stats.get("process_peak_rss_mb"), "process_seconds": stats.get("process_seconds"),
            "reused_from": stats.get("reused_from"), "one_training_for": stats.get("one_training_for"),
            "config": json.loads((cell_dir / "config.json").read_text())["config"]}


# --------------------------------------------------------------------------- tables
def _gap(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or not theirs:
        return None
    return ours / theirs - 1


def recbole_rules(res: dict) -> tuple[str, dict]:
    """(the rule RecBole's own evaluation applied, {phase: {rule: metrics}} of the driver's).
    A result written before the driver knew ``masked`` held two rules under other names: its
    ``masked`` was RecBole's keep-target rule (``used_ids - positive_items``)."""
    own = res.get("own_metrics") or {}
    if "own_metrics_rules" in res:
        return res["recbole_protocol"], own
    own_rule = recbole_rule(not res.get("recbole_masks_history"))
    legacy = {"unmasked": "unmasked", "masked": "masked-keep-target"}
    return own_rule, {ph: {legacy[k]: v for k, v in d.items() if k in legacy} for ph, d in own.items()}


def protocol_rule(res: dict, protocol: str, repeats: int) -> str | None:
    """The rule of ``res`` whose figures stand for ``protocol``: the same rule, else one that
    ranks identically on this dataset (``repeats`` = its repeat targets); None if none."""
    own_rule, own = recbole_rules(res)
    have = [own_rule] + [r for r in (own.get("test") or {}) if r != own_rule and isinstance(own["test"][r], dict)]
    exact = [r for r in have if r == protocol]
    same = [r for r in have if protocols.equivalent(r, protocol, repeats)]
    return (exact or same or [None])[0]


def recbole_side(res: dict, protocol: str, repeats: int) -> tuple[dict, dict, str, str | None]:
    """RecBole's valid / test metrics under ``protocol``: its own dicts when RecBole's own rule
    is (equivalent to) it, else the driver's evaluation of its best model; -> (valid, test,
    source, rule used). Nothing (empty dicts, rule None) when neither has that rule."""
    own_rule, own = recbole_rules(res)
    rule = protocol_rule(res, protocol, repeats)
    if rule is None:
        return {}, {}, "missing", None
    if rule == own_rule:
        return res["best_valid_result"], res["test_result"], "recbole", rule
    return own["valid"][rule], own["test"][rule], "driver", rule


def table_rows(dataset: str, ds, seed: int, results: dict, repeats: int) -> list[dict]:
    """One row per model and protocol: ``results`` maps (model key, protocol) to (spec, that
    protocol, ours, RecBole's result); ``repeats``: the dataset's repeat targets."""
    rows = []
    for (key, _), (spec, proto, ours, rb) in results.items():
        row = {"dataset": dataset, "split": ds.split, "max_history": ds.max_history, "seed": seed,
               "protocol": proto, "model": key, "ours": spec.tag, "recbole": spec.recbole}
        if "error" in ours:
            row["ours_error"] = ours["error"]
        if "error" in rb:
            row["recbole_error"] = rb["error"]
        rv = rt = {}
        if "test_result" in rb:
            rv, rt, row["recbole_source"], row["recbole_rule"] = recbole_side(rb, proto, repeats)
            row["recbole_early_stopping"] = recbole_rules(rb)[0]
            row["data_check"] = rb.get("data_check")
            row["recbole_agrees_with_driver"] = rb.get("agrees_with_recbole")
        ov, ot = (ours.get("valid", {}), ours.get("test", {})) if "error" not in ours else ({}, {})
        for split, o, r in (("valid", ov, rv), ("test", ot, rt)):
            for m in ("recall", "ndcg"):
                for k in KS:
                    name = f"{m}@{k}"
                    row[f"ours_{split}_{name}"] = o.get(name)
                    row[f"recbole_{split}_{name}"] = r.get(name)
                    row[f"gap_{split}_{name}"] = _gap(o.get(name), r.get(name))
        for field_, src_o, src_r in (("s_per_epoch", "mean_epoch_seconds", "mean_epoch_seconds"),
                                     ("epochs", "epochs_run", "epochs_run"),
                                     ("best_epoch", "best_epoch", "best_epoch"),
                                     ("peak_rss_mb", "peak_rss_mb", "process_peak_rss_mb"),
                                     ("stopped", "stopped", "stopped"),
                                     ("wall_s", "process_seconds", "process_seconds")):
            row[f"ours_{field_}"] = ours.get(src_o)
            row[f"recbole_{field_}"] = rb.get(src_r)
        for m, v in (ours.get("test_se") or {}).items():
            row[f"ours_test_se_{m}"] = v
        gaps = [row["gap_test_recall@10"], row["gap_test_ndcg@10"]]
        row["within_5pct_or_better"] = (None if any(g is None for g in gaps)
                                        else all(g >= -0.05 for g in gaps))
        rows.append(row)
    return rows


def _f(v, nd=4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _se(v) -> str:
    return "" if v is None else f" ± {v:.4f}"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:+.1f} %"


def write_tables(out: Path, rows: list[dict], results: dict, header: dict) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "parity.csv", index=False)
    lines = [f"# Parity with RecBole {header['recbole_version']}: {header['dataset']}", "",
             f"Dataset `{header['dataset']}` ({header['users']} users, {header['items']} items, "
             f"{header['interactions']} interactions), split `{header['split']}` (leave-one-out), "
             f"history <= {header['max_history']}, full ranking over all items, seed {header['seed']}, "
             f"one CPU thread per run. Protocol " + "; ".join(
                 "`recbole`: each model evaluated the way RecBole evaluates it (general models "
                 "`masked-keep-target`: the user's history items except the target removed from the "
                 "ranking; sequential ones `unmasked`)" if name == "recbole" else f"`{name}`: every model"
                 for name in header["protocol"].split(",")) + "."
             + f" {header['repeats']} of the validation / test targets repeat a history item"
             + (" (so `masked` and `masked-keep-target` rank identically)." if not header["repeats"] else ".")
             + " Gap = ours / RecBole - 1; \"within\" = both test gaps >= -5 %; ± = the standard error "
             "of our test NDCG@10 over the test users (the spread one run has by chance).", "",
             "Command:", "", "```", header["command"], "```", "",
             "| model (ours / RecBole) | protocol | valid R@10 ours / RB | valid N@10 ours / RB | "
             "test R@10 ours / RB | gap | test N@10 ours / RB | gap | s/epoch ours / RB | "
             "epochs (best) ours / RB | peak RSS MB ours / RB | within ±5 % or better |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        src = (f" (driver; RB early-stopped under `{r['recbole_early_stopping']}`)"
               if r.get("recbole_source") == "driver" else "")
        if r.get("recbole_rule") and r["recbole_rule"] != r["protocol"]:
            src += f" (RB: {r['recbole_rule']}, the same ranking here)"
        elif r.get("recbole_source") == "missing":
            src += " (RB: not evaluated under it)"
        verdict = {True: "yes", False: "no", None: "—"}[r["within_5pct_or_better"]]
        if any(str(r.get(f"{side}_stopped", "")).startswith("time cap") for side in ("ours", "recbole")):
            verdict += " †"
        lines.append(
            f"| {r['ours']} / {r['recbole']} | {r['protocol']}{src} "
            f"| {_f(r['ours_valid_recall@10'])} / {_f(r['recbole_valid_recall@10'])} "
            f"| {_f(r['ours_valid_ndcg@10'])} / {_f(r['recbole_valid_ndcg@10'])} "
            f"| {_f(r['ours_test_recall@10'])} / {_f(r['recbole_test_recall@10'])} | {_pct(r['gap_test_recall@10'])} "
            f"| {_f(r['ours_test_ndcg@10'])}{_se(r.get('ours_test_se_ndcg@10'))} / {_f(r['recbole_test_ndcg@10'])} "
            f"| {_pct(r['gap_test_ndcg@10'])} "
            f"| {_f(r['ours_s_per_epoch'], 2)} / {_f(r['recbole_s_per_epoch'], 2)} "
            f"| {_f(r['ours_epochs'])} ({_f(r['ours_best_epoch'])}) / {_f(r['recbole_epochs'])} ({_f(r['recbole_best_epoch'])}) "
            f"| {_f(r['ours_peak_rss_mb'], 0)} / {_f(r['recbole_peak_rss_mb'], 0)} | {verdict} |")
    other, seen = [], set()
    for spec, _, _, rb in results.values():
        own_rule, own = recbole_rules(rb)
        if "own_metrics" in rb and (spec.recbole, own_rule) not in seen:
            seen.add((spec.recbole, own_rule))
            other += [(spec, own_rule, rule, own, rb) for rule in own.get("test", {})
                      if rule != own_rule and isinstance(own["test"][rule], dict)]
    if other:
        lines += ["", "RecBole's best models under the OTHER masking rules (the driver's evaluation of the "
                  "same checkpoint, early-stopped under the rule named with the model):", "",
                  "| RecBole model (early-stopped under) | protocol | valid R@10 | valid N@10 | test R@10 | "
                  "test N@10 | driver reproduces RecBole's own figures |", "|---|---|---|---|---|---|---|"]
        for spec, own_rule, rule, own, rb in other:
            v, t = own["valid"][rule], own["test"][rule]
            lines.append(f"| {spec.recbole} (`{own_rule}`) | {rule} | {_f(v['recall@10'])} | {_f(v['ndcg@10'])} "
                         f"| {_f(t['recall@10'])} | {_f(t['ndcg@10'])} | {rb.get('agrees_with_recbole')} |")
    checked = list({spec.recbole: (spec, rb) for spec, _, _, rb in results.values() if rb.get("data_check")}.values())
    if checked:
        lines += ["", "Data check (after RecBole loaded the files: users, items, rows per split and a "
                  "SHA-256 of every row, user / history / target, equal to the suite's split): " + "; ".join(
                      f"{spec.recbole} {rb['data_check']} ({rb['loaded']['users']} users, "
                      f"{rb['loaded']['items']} items, train / valid / test rows "
                      f"{rb['loaded']['train']['rows']} / {rb['loaded']['valid']['rows']} / "
                      f"{rb['loaded']['test']['rows']}"
                      + (f", history <= {rb['loaded']['test']['max_history']}"
                         if rb['loaded']['test']['max_history'] else "") + ")"
                      for spec, rb in checked) + "."]
    if any(str(r.get(f"{side}_stopped", "")).startswith("time cap") for r in rows for side in ("ours", "recbole")):
        lines += ["", "† a side was stopped by the training time cap (see Stopping): that row compares the "
                  "two at equal training time, not at convergence."]
    lines += ["", "Stopping: " + "; ".join(
        f"{r['ours']} (`{r['protocol']}`) ours {_f(r['ours_stopped'])}, RecBole {_f(r['recbole_stopped'])}"
        for r in rows) + ".", ""]
    errors = [(r["model"], r["protocol"], side, r[f"{side}_error"]) for r in rows
              for side in ("ours", "recbole") if f"{side}_error" in r]
    for model, proto, side, err in errors:
        tail = results[(model, proto)][2 if side == "ours" else 3].get("log_tail", "")
        lines += [f"**{model} (`{proto}`): the {side} run failed** ({err}); the end of its log:", "",
                  "```", tail, "```", ""]
    lines += ["## Settings and what could not be matched", ""]
    for (k, proto), (spec, _proto, ours, rb) in results.items():
        lines += [f"### {spec.tag} / {spec.recbole} (`{proto}`)", "",
                  f"- ours (`configs/ours-{spec.tag}-{proto}.yaml`, the fidelity preset's config"
                  + (f" with {spec.ours_overrides}" if spec.ours_overrides else "") + "): "
                  + ", ".join(f"{a}={b}" for a, b in sorted((ours.get("config") or {}).items())),
                  f"- RecBole (`configs/recbole-{spec.recbole}.yaml`): "
                  + ", ".join(f"{a}={b}" for a, b in sorted((rb.get("config") or {}).items())
                              if a not in ("eval_args", "metrics", "topk", "valid_metric", "seed"))]
        if ours.get("one_training_for"):
            lines.append(f"- ours' training: ONE for {', '.join(ours['one_training_for'])} (the runner's shared "
                         "training: each protocol early-stopped on its own; s/epoch, wall time and peak memory "
                         "are that training's)")
        if ours.get("reused_from"):
            lines.append(f"- ours' cell: copied from `{ours['reused_from']}` (`--ours-from`: the same cell, "
                         "not rerun; its process's peak memory was not measured)")
        lines += [f"- not matched: {u}" for u in spec.unmatched] + [""]
    (out / "parity.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------- main
def parse_models(text: str) -> list[str]:
    keys = [ALIASES.get(m.strip().lower(), m.strip().lower()) for m in text.split(",") if m.strip()]
    bad = [m for m in keys if m not in SPECS]
    if bad:
        raise SystemExit(f"--models: unknown {bad}; known: {', '.join(SPECS)} (mf = bpr)")
    return keys


def parse_protocols(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in names if p not in PROTOCOL_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown {bad or text!r}; known: {', '.join(PROTOCOL_CHOICES)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.parity.recbole",
                                 description="ours vs RecBole on the same split, side by side")
    ap.add_argument("--dataset", required=True, help="a catalog dataset name (ml-100k, beauty ...)")
    ap.add_argument("--models", default=",".join(SPECS), help=f"comma-separated, from {', '.join(SPECS)}")
    ap.add_argument("--output", required=True, help="folder for the tables, configs and runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override the epochs of both sides")
    ap.add_argument("--max-train-minutes", type=float, default=None,
                    help="training time cap of both sides (default: the fidelity config's, if any)")
    ap.add_argument("--protocol", type=parse_protocols, default=["recbole"],
                    help=f"comma-separated, from {', '.join(PROTOCOL_CHOICES)}: one table row per model and "
                         "protocol (ours is trained once for all of them, RecBole once)")
    ap.add_argument("--recbole-early-stopping", choices=("own", "protocol"), default="own",
                    help="own: RecBole early-stops on its own masking rule (general models keep-target, "
                         "sequential unmasked), once per model; protocol: a RecBole run per protocol whose "
                         "rule is another, early-stopped (and evaluated) under the row's protocol")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recbole-python", default=str(DEFAULT_RECBOLE_VENV / "bin" / "python"))
    ap.add_argument("--ours-from", nargs="+", metavar="RUN_DIR",
                    help="suite run folders (genrec-bench run --output, results/fidelity/<dataset>) whose "
                         "finished cell of our side (the same hash: same data, config, seed, evaluation) is "
                         "copied instead of run again; its peak memory is then not measured")
    ap.add_argument("--skip-ours", action="store_true", help="RecBole only")
    ap.add_argument("--skip-recbole", action="store_true", help="ours only")
    ap.add_argument("--table-only", action="store_true", help="rebuild the tables from finished runs")
    args = ap.parse_args(argv)

    from benchmarks.data.catalog import load_dataset

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text("# written by benchmarks.parity.recbole: runs, data and checkpoints\nwork/\nours/\n")
    ds = load_dataset(args.dataset)
    log(f"dataset {args.dataset}: {ds.n_users} users, {ds.n_items} items, split {ds.split}, "
        f"history <= {ds.max_history}")
    counts = protocols.repeat_targets(ds)
    repeats = sum(c["in_history"] for c in counts.values())
    results = {}
    for key in parse_models(args.models):
        spec = SPECS[key]
        # `recbole` and the suite's name of the same rule are one row
        protos = list(dict.fromkeys(model_protocol(spec.kind, p) for p in args.protocol))
        overrides, ours_cfg = resolved_ours(spec, args.epochs, args.max_train_minutes)
        if args.table_only or args.skip_ours:
            ours_of = {p: find_ours(out, spec, p) for p in protos}
        else:
            ours_of = run_ours(spec, args, out, overrides, protos)
        for proto in protos:
            run_recbole_row(key, spec, proto, ours_of[proto], ours_cfg, ds, args, out, repeats, results, argv)
    log(f"tables: {out / 'parity.md'}, {out / 'parity.csv'}")
    print((out / "parity.md").read_text().split("## Settings")[0])
    return 0


def run_recbole_row(key: str, spec: ModelSpec, proto: str, ours: dict, ours_cfg: dict, ds, args, out: Path,
                    repeats: int, results: dict, argv: list[str] | None) -> None:
    """RecBole's side of the row (``key``, ``proto``) beside ``ours``, into ``results``; the
    tables rewritten with every row so far."""
    rb = {"error": "not run"}
    if "error" not in ours and not (args.table_only or args.skip_ours):
        log(f"ours {spec.tag} ({proto}): {ours['epochs_run']} epochs (best {ours['best_epoch']}), "
            f"test NDCG@10 {ours['test'].get('ndcg@10'):.4f}")
    rule = recbole_evaluation_rule(spec.kind, proto, args.recbole_early_stopping, repeats)
    res_path = out / "recbole" / f"{recbole_run_name(spec, rule)}.json"
    if args.table_only or args.skip_recbole:
        if res_path.is_file():
            rb = json.loads(res_path.read_text())
    else:
        rb = run_recbole(spec, ds, args, out, ours_cfg, proto, repeats, rule)
    results[(key, proto)] = (spec, proto, ours, rb)
    rows = table_rows(args.dataset, ds, args.seed, results, repeats)
    version = next((r[3].get("recbole_version") for r in results.values() if r[3].get("recbole_version")), "1.2.1")
    header = {"dataset": args.dataset, "users": ds.n_users, "items": ds.n_items,
              "interactions": ds.n_interactions, "split": ds.split, "max_history": ds.max_history,
              "seed": args.seed, "protocol": ",".join(args.protocol), "recbole_version": version,
              "repeats": repeats,
              # the command that RAN the models (--table-only only re-reads their results)
              "command": "python -m benchmarks.parity.recbole " + " ".join(
                  a for a in (argv if argv is not None else sys.argv[1:]) if a != "--table-only")}
    write_tables(out, rows, results, header)


if __name__ == "__main__":
    sys.exit(main())
