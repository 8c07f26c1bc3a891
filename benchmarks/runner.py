"""The matrix runner: datasets x methods x seeds, one directory per cell, resumable.

A matrix is a YAML file (or a preset under ``benchmarks/presets/``)::

    name: quick
    datasets: [ml-100k]                 # catalog names or mappings (see benchmarks.data.catalog)
    seeds: [0]
    device: auto                        # auto | cpu | cuda | cuda:1 ...
    evaluation: {ks: [5, 10]}           # EvalConfig fields
    features: {text_template: "{title}. {categories}", text_encoder: all-MiniLM-L6-v2}
    methods:
      - mostpop
      - name: sasrec                    # a registered method
        label: sasrec                   # the row name in tables (default: name)
        config: {hidden: 64}            # the method's Config fields
        datasets: {beauty: {dropout: 0.5}}   # per-dataset config overrides

Each cell's output directory is ``<out>/cells/<dataset>/<label>/seed<seed>-<hash>``, the hash
taken over the cell's RESOLVED config (dataset options, method config with its defaults, seed,
evaluation and feature settings, suite version). A cell is computed in a temporary sibling
folder and renamed into place when complete, so a finished cell is never recomputed and a run
killed at any moment resumes where it stopped, losing nothing finished.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

import benchmarks
from benchmarks.config import build_config, check_value
from benchmarks.context import build_context
from benchmarks.data.catalog import DatasetSpec, load_dataset, spec_from_config
from benchmarks.errors import ConfigError, GenrecError
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.protocol import Context, history_window
from benchmarks.registry import METHODS
from benchmarks.rundir import CellDir, RunDir
from benchmarks.utils import (Timer, device_description, git_commit, package_versions, progress_bar,
                              resolve_device, seed_everything, show_progress, stable_hash)

log = logging.getLogger(__name__)

PRESETS = Path(__file__).resolve().parent / "presets"
MATRIX_KEYS = {"name", "description", "datasets", "seeds", "device", "evaluation", "features", "methods"}
METHOD_KEYS = {"name", "label", "config", "datasets", "only"}
FEATURE_KEYS = {"text_template", "text_encoder"}


@dataclass
class MethodEntry:
    name: str
    label: str
    config: dict = field(default_factory=dict)
    per_dataset: dict = field(default_factory=dict)
    only: list[str] | None = None     # run on these datasets only (None: on every dataset)


@dataclass
class Matrix:
    name: str
    datasets: list
    methods: list[MethodEntry]
    seeds: list[int]
    device: str = "auto"
    evaluation: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""


@dataclass
class Cell:
    dataset: DatasetSpec
    method: MethodEntry
    seed: int
    resolved: dict
    hash: str

    @property
    def relpath(self) -> Path:
        return CellDir.relpath(self.dataset.name, self.method.label, self.seed, self.hash)


# --------------------------------------------------------------------------- matrix files
def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {msg}")


def parse_matrix(data: Any, source: str) -> Matrix:
    """A matrix mapping (parsed YAML) -> Matrix. Every key, at every level, is checked against
    what it can be, with its type (dataset entries by :func:`spec_from_config`, the evaluation
    by EvalConfig's annotations; method configs need their classes and are checked by
    :func:`expand`); errors name the file, the entry and the key."""
    _need(isinstance(data, dict), source, f"expected a mapping with keys {sorted(MATRIX_KEYS)}")
    unknown = set(data) - MATRIX_KEYS
    _need(not unknown, source, f"unknown key(s) {sorted(unknown)}; known: {sorted(MATRIX_KEYS)}")
    for key in ("name", "description", "device"):
        if key in data:
            check_value(data[key], str, f"{source}: {key}")
    for key in ("datasets", "methods"):
        _need(isinstance(data.get(key), list) and data[key], f"{source}: {key}",
              "expected a non-empty list")
    names = []
    for i, d in enumerate(data["datasets"]):
        try:
            names.append(spec_from_config(d).name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: datasets[{i}]: {exc}") from None
    dup = sorted({x for x in names if names.count(x) > 1})
    _need(not dup, f"{source}: datasets", f"names must be unique, repeated: {dup}")
    methods = [_method_entry(m, f"{source}: methods[{i}]", names) for i, m in enumerate(data["methods"])]
    labels = [m.label for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    _need(not dup, f"{source}: methods", f"labels must be unique, repeated: {dup} (give 'label')")
    seeds = data.get("seeds", [0])
    _need(isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
          and seeds, f"{source}: seeds", "expected a non-empty list of integers")
    feats = data.get("features", {}) or {}
    _need(isinstance(feats, dict) and not set(feats) - FEATURE_KEYS, f"{source}: features",
          f"expected a mapping with keys among {sorted(FEATURE_KEYS)}")
    for key, value in feats.items():
        check_value(value, str, f"{source}: features.{key}")
    ev = data.get("evaluation", {}) or {}
    _need(isinstance(ev, dict), f"{source}: evaluation", "expected a mapping of EvalConfig fields")
    _eval_config(ev, source)
    return Matrix(name=str(data.get("name", Path(source).stem)), datasets=list(data["datasets"]),
                  methods=methods, seeds=seeds, device=str(data.get("device", "auto")),
                  evaluation=ev, features=feats, description=str(data.get("description", "")),
                  source=source)


def _method_entry(m: Any, where: str, names: list[str]) -> MethodEntry:
    """One entry of ``methods`` (a name or a mapping) -> MethodEntry, every key checked."""
    if isinstance(m, str):
        m = {"name": m}
    _need(isinstance(m, dict) and isinstance(m.get("name"), str), where,
          "expected a method name or a mapping with 'name'")
    bad = set(m) - METHOD_KEYS
    _need(not bad, where, f"unknown key(s) {sorted(bad)}; known: {sorted(METHOD_KEYS)}")
    if "label" in m:
        check_value(m["label"], str, f"{where}.label")
    _need(isinstance(m.get("config", {}), dict), f"{where}.config", "expected a mapping")
    per_dataset = m.get("datasets", {})
    _need(isinstance(per_dataset, dict), f"{where}.datasets",
          "expected a mapping dataset -> config overrides")
    strangers = sorted(set(per_dataset) - set(names), key=str)
    _need(not strangers, f"{where}.datasets", f"unknown dataset(s) {', '.join(map(str, strangers))}; "
          f"this matrix's datasets: {', '.join(names)}")
    for key, value in per_dataset.items():
        _need(isinstance(value, dict), f"{where}.datasets.{key}",
              f"expected a mapping of config overrides, got {value!r}")
    only = m.get("only")
    _need(only is None or (isinstance(only, list) and set(only) <= set(names)), f"{where}.only",
          f"expected a list of this matrix's dataset names {names}")
    return MethodEntry(m["name"], m.get("label", m["name"]), dict(m.get("config", {})),
                       dict(per_dataset), None if only is None else list(only))


def _eval_config(evaluation: dict, source: str) -> EvalConfig:
    if "mask_history" in evaluation:
        raise ConfigError(f"{source}: evaluation.mask_history was replaced by the named "
                          f"evaluation.protocol: masked | unmasked | auto (true -> masked, false -> unmasked)")
    try:
        return build_config(EvalConfig, evaluation)
    except ConfigError as exc:
        raise ConfigError(f"{source}: evaluation: {exc}") from None


def load_matrix(path: str | Path | None = None, preset: str | None = None) -> Matrix:
    if (path is None) == (preset is None):
        raise ConfigError("give a matrix file or --preset NAME (one of them)")
    if preset is not None:
        path = PRESETS / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(known)}")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: matrix file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return parse_matrix(data, str(path))


def select(matrix: Matrix, datasets: list[str] | None = None, methods: list[str] | None = None,
           seeds: list[int] | None = None) -> Matrix:
    """The CLI's --datasets / --methods / --seeds filters.

    ``methods``: a matrix LABEL selects that entry; a method name that is no label selects
    every entry of that method (e.g. ``mf`` -> the entries labelled ``mf-a`` and ``mf-b``); a
    name the matrix lacks runs that method with its defaults. In the order given, each entry
    once."""
    m = dataclasses.replace(matrix)
    if datasets:
        names = {(d if isinstance(d, str) else d.get("name")): d for d in matrix.datasets}
        missing = [d for d in datasets if d not in names]
        m.datasets = [names.get(d, d) for d in datasets]
        if missing:
            log.info("datasets %s are not in matrix %s: using catalog defaults", missing, matrix.name)
    if methods:
        m.methods = _select_methods(matrix.methods, methods)
    if datasets and missing:   # datasets named on the command line run every selected method
        m.methods = [e if e.only is None else dataclasses.replace(e, only=e.only + missing) for e in m.methods]
    if seeds:
        m.seeds = list(seeds)
    return m


def _select_methods(entries: list[MethodEntry], wanted: list[str]) -> list[MethodEntry]:
    """See :func:`select`: labels first, then method names, then a default entry."""
    picked: dict[str, MethodEntry] = {}
    for x in wanted:
        chosen = ([e for e in entries if e.label == x] or [e for e in entries if e.name == x]
                  or [MethodEntry(x, x)])
        for e in chosen:
            picked.setdefault(e.label, e)
    return list(picked.values())


# --------------------------------------------------------------------------- cells
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: Any, where: str, field: str = "") -> Any:
    """``${VAR}`` in a method config's strings -> the environment variable's value (e.g. a
    local checkpoint path in the paper preset). Only the cells that run are expanded, so a
    filtered run needs only its own variables; an unset variable stops with one error naming
    the field."""
    if isinstance(value, dict):
        return {k: expand_env(v, where, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(expand_env(v, where, f"{field}[{i}]") for i, v in enumerate(value))
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise ConfigError(f"{where}: config field {field!r} uses ${{{m.group(1)}}}, which is not set "
                                  f"in the environment (export it, e.g. a local checkpoint path)")
            return os.environ[m.group(1)]
        return _ENV_VAR.sub(sub, value)
    return value


def expand(matrix: Matrix) -> list[Cell]:
    """The matrix's cells, every method config (with its per-dataset overrides) built and
    checked against its Config class: a wrong key or type stops here, before anything runs."""
    eval_cfg = _eval_config(matrix.evaluation, matrix.source)
    cells = []
    for d in matrix.datasets:
        try:
            spec = spec_from_config(d)
        except ConfigError as exc:
            raise ConfigError(f"{matrix.source}: {exc}") from None
        for entry in matrix.methods:
            if entry.only is not None and spec.name not in entry.only:
                continue
            cls = METHODS.get(entry.name)
            overrides = expand_env({**entry.config, **entry.per_dataset.get(spec.name, {})},
                                   f"{matrix.source}: method {entry.label!r}")
            try:
                cfg = build_config(cls.Config, overrides)
                if hasattr(cfg, "max_history"):
                    history_window(cfg.max_history, spec.options.max_history, type(cfg).__qualname__)
            except ConfigError as exc:
                raise ConfigError(f"{matrix.source}: method {entry.label!r}: {exc}") from None
            for seed in matrix.seeds:
                resolved = {
                    "dataset": {"name": spec.name, "format": spec.format,
                                "options": spec.options.to_dict(),
                                "args": {k: str(v) for k, v in spec.reader_args.items()}},
                    "method": entry.name, "label": entry.label, "family": cls.family_of(cfg),
                    "config": dataclasses.asdict(cfg), "seed": seed,
                    "evaluation": eval_cfg.to_dict(),
                    "features": matrix.features if cls.needs else {},
                    "suite_version": benchmarks.__version__,
                }
                cells.append(Cell(spec, entry, seed, resolved, stable_hash(resolved)))
    return cells


class _DatasetMemo:
    """Datasets loaded once per process and shared by its cells (each cell gets a fresh
    Evaluator: its validation sample depends on the seed). A dataset that fails to load
    (a data error) fails each of its cells with the same error, read once."""

    def __init__(self):
        self._data: dict[str, Any] = {}
        self._errors: dict[str, GenrecError] = {}

    def get(self, spec: DatasetSpec, eval_cfg: EvalConfig, seed: int):
        key = stable_hash([spec.name, spec.format, spec.reader_args, spec.options.to_dict()])
        if key in self._errors:
            raise self._errors[key].with_traceback(None)
        if key not in self._data:
            try:
                self._data[key] = load_dataset(spec)
            except GenrecError as exc:
                self._errors[key] = exc
                raise
        ds = self._data[key]
        return ds, Evaluator(ds, eval_cfg, seed=seed)


def run_cell(cell: Cell, out: Path, *, device: str = "auto", features: dict | None = None,
             progress: bool = True, memo: _DatasetMemo | None = None) -> Path:
    """Train and evaluate one cell; write its directory atomically; return its path."""
    from benchmarks import distributed

    main = distributed.is_main()
    progress = show_progress(progress)   # passed on: features and identifiers draw nothing in a log
    started = datetime.now(timezone.utc)
    # a data-parallel helper process trains in a scratch folder; the main process writes the cell
    with RunDir(out).building(cell.relpath, scratch=not main) as staging:
        with Timer() as total:
            seed_everything(cell.seed)
            dev = resolve_device(device)
            eval_cfg = build_config(EvalConfig, cell.resolved["evaluation"])
            ds, evaluator = (memo or _DatasetMemo()).get(cell.dataset, eval_cfg, cell.seed)
            cls = METHODS.get(cell.method.name)
            cfg = build_config(cls.Config, cell.resolved["config"])
            ctx = build_context(ds, seed=cell.seed, device=dev, evaluator=evaluator, needs=cls.needs,
                                features=features, progress=progress)
            model = cls(cfg, ctx)
            with Timer() as t_fit:
                fit_log = model.fit(ctx.validator)
            test_model = model
            if evaluator.protocol.refit and not model.sequential:
                with Timer() as t_refit:
                    test_model, fit_log["refit"] = refit_on_validation(cls, cfg, ctx, fit_log)
                fit_log["refit"]["wall_seconds"] = round(t_refit.seconds, 2)
            if not main:
                return out / cell.relpath
            with Timer() as t_eval:
                result = evaluator.evaluate(model, splits=("valid",), progress=progress)
                test = evaluator.evaluate(test_model, splits=("test",), progress=progress)
                result.rows += test.rows
                result.per_user.update(test.per_user)
                result.throughput = test.throughput
        family = cell.resolved["family"]
        label = result.protocol["label"]
        rows = [{"dataset": ds.name, "method": cell.method.label, "family": family,
                 "seed": cell.seed, "protocol": label, **r, "config_hash": cell.hash} for r in result.rows]
        for metric in ("users_per_s", "ms_per_user"):
            if metric in result.throughput:
                rows.append({"dataset": ds.name, "method": cell.method.label, "family": family,
                             "seed": cell.seed, "protocol": label, "split": "test", "subset": "all",
                             "metric": metric, "k": result.throughput["k"],
                             "value": result.throughput[metric],
                             "n_users": result.throughput["users"], "config_hash": cell.hash})
        staging.write_config(cell.resolved)
        staging.write_train_log(fit_log)
        staging.write_throughput(result.throughput)
        staging.write_per_user(result.per_user)
        staging.write_run({
            "config_hash": cell.hash, "seed": cell.seed, "git_commit": git_commit(),
            "versions": package_versions(), "device": device_description(dev),
            "started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
            "wall_seconds": {"total": round(total.seconds, 2), "fit": round(t_fit.seconds, 2),
                             "evaluate": round(t_eval.seconds, 2)},
            "protocol": result.protocol, "cold_items": model.cold_scoring(),
            "dataset": {"info": ds.info, "stats": ds.stats()}})
        model.write_artefacts(staging)
        staging.write_metrics(rows)   # last: marks the cell complete
    return out / cell.relpath


def refit_on_validation(cls, cfg, ctx: Context, fit_log: dict):
    """The ``refit`` protocol option for a non-sequential method: a fresh model (same config,
    same seed) trained on training + validation interactions, without validation, for the
    number of epochs early stopping chose (``fit_log['best_epoch']``; methods without epochs
    are simply fitted again). Returns the model and its log."""
    data = ctx.dataset.with_validation_in_training()
    epochs = fit_log.get("best_epoch")
    if epochs and any(f.name == "epochs" for f in dataclasses.fields(cfg)):
        cfg = dataclasses.replace(cfg, epochs=int(epochs))
    else:
        epochs = None
    seed_everything(ctx.seed)
    model = cls(cfg, dataclasses.replace(ctx, dataset=data, cache=None))
    log_ = model.fit(None)
    return model, {"epochs": epochs, "train_interactions": data.stats()["train_interactions"],
                   "log": log_}


def _matrix_record(matrix: Matrix) -> dict:
    return {"name": matrix.name, "description": matrix.description, "datasets": matrix.datasets,
            "seeds": matrix.seeds, "device": matrix.device, "evaluation": matrix.evaluation,
            "features": matrix.features,
            "methods": [{"name": m.name, "label": m.label, "config": m.config, "datasets": m.per_dataset,
                         **({"only": m.only} if m.only is not None else {})}
                        for m in matrix.methods]}


def _ray_cell(cell: Cell, out: str, device: str, features: dict) -> str:
    """A Ray task: one cell, written exactly as an in-process run writes it."""
    logging.basicConfig(level=logging.INFO)
    return str(run_cell(cell, Path(out), device=device, features=features, progress=False))


def run_matrix_ray(matrix: Matrix, out: Path, *, address: str | None = None, cpus_per_cell: float = 1,
                   gpus_per_cell: float = 0, progress: bool = True, fail_fast: bool = False) -> dict:
    """Run the unfinished cells as Ray tasks (one task per cell) on a local Ray cluster
    (``address=None``) or the cluster at ``address``; same folders, same resume behaviour as
    :func:`run_matrix`. Needs the ``ray`` extra (``pip install genrec-bench[ray]``); the
    workers must be able to import this package (installed, or shipped with a runtime_env)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'genrec-bench[ray]'") from None
    out = Path(out)
    run = RunDir(out)
    cells = expand(matrix)   # every config checked before the run folder is touched
    out.mkdir(parents=True, exist_ok=True)
    run.clean_stale()
    run.write_matrix(_matrix_record(matrix))
    todo = [c for c in cells if not run.complete(c.relpath)]
    summary = {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": 0, "failed": []}
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False, runtime_env={"env_vars": {"TQDM_DISABLE": "1"}})
    task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=0)(_ray_cell)
    pending = {task.remote(c, str(out), matrix.device, matrix.features): c for c in todo}
    bar = progress_bar(total=len(pending), desc=f"matrix {matrix.name} (ray)", enabled=progress)
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        cell = pending.pop(done[0])
        try:
            ray.get(done[0])
            summary["ran"] += 1
        except Exception as exc:  # noqa: BLE001  (a task's error arrives wrapped by Ray)
            if fail_fast:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise
            log.error("cell %s failed: %s", cell.relpath, exc)
            summary["failed"].append({"cell": str(cell.relpath), "error": f"{type(exc).__name__}: {exc}"})
        run.collect_results()
        bar.update(1)
    bar.close()
    run.collect_results()
    run.write_failures(summary["failed"])
    return summary


def run_matrix(matrix: Matrix, out: Path, *, progress: bool = True, fail_fast: bool = False) -> dict:
    """Run every unfinished cell in-process; collect results; return a summary.

    A matrix whose configs do not check stops before the run folder is touched. A cell that
    fails at run time (a data error of its dataset, a diverged model ...) is recorded in the
    summary and ``failures.json`` and the other cells run, unless ``fail_fast``. Under a
    multi-process launch every process runs every cell's training (data-parallel); only the
    main process cleans, evaluates and writes."""
    from benchmarks import distributed

    out = Path(out)
    run = RunDir(out)
    cells = expand(matrix)   # every config checked before the run folder is touched
    out.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()
    if main:
        run.clean_stale()
        run.write_matrix(_matrix_record(matrix))
    todo = [c for c in cells if not run.complete(c.relpath)]
    if distributed.current() is not None:   # decided before anyone writes: the same list everywhere
        distributed.current().barrier()
    summary = {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": 0, "failed": []}
    log.info("matrix %s: %d cells, %d finished already", matrix.name, len(cells), summary["skipped"])
    memo = _DatasetMemo()
    bar = progress_bar(todo, desc=f"matrix {matrix.name}", enabled=progress and main)
    for cell in bar:
        bar.set_postfix_str(f"{cell.dataset.name}/{cell.method.label}/seed{cell.seed}")
        try:
            run_cell(cell, out, device=matrix.device, features=matrix.features, progress=progress and main,
                     memo=memo)
            summary["ran"] += 1
        except (GenrecError, RuntimeError, ValueError, FloatingPointError) as exc:
            if fail_fast or not main:
                raise
            log.error("cell %s failed: %s", cell.relpath, exc)
            summary["failed"].append({"cell": str(cell.relpath), "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc()})
        if main:
            run.collect_results()
    if main:
        run.collect_results()
        run.write_failures(summary["failed"])
    return summary
