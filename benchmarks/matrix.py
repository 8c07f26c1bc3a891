"""The matrix: what a YAML matrix file may say, and the cells it expands to.

A matrix is a YAML file (or a preset under ``benchmarks/presets/``)::

    name: quick
    datasets: [ml-100k]                 # catalog names or mappings (see benchmarks.data.catalog)
    seeds: [0]
    device: auto                        # auto | cpu | cuda | cuda:1 ...
    precision: auto                     # auto | fp32 | bf16 | fp16 (benchmarks.precision)
    evaluation: {ks: [5, 10]}           # EvalConfig fields
    features: {text_template: "{title}. {categories}", text_encoder: all-MiniLM-L6-v2}
    methods:
      - mostpop
      - name: sasrec                    # a registered method
        label: sasrec                   # the row name in tables (default: name)
        config: {hidden: 64}            # the method's Config fields
        datasets: {beauty: {dropout: 0.5}}   # per-dataset config overrides
        evaluation: {batch_size: 64}    # this entry's users per ranking call / valid_sample (METHOD_EVAL_KEYS)

:func:`parse_matrix` / :func:`load_matrix` check every key at every level; :func:`select` is the
command line's filters; :func:`expand` builds the cells, every method config checked against its
Config class (and its ``max_history`` against the dataset's cap) before anything runs. A cell's
hash is taken over its RESOLVED config (dataset options, method config with its defaults, seed,
evaluation and feature settings, suite version): it names the cell's folder
(:meth:`benchmarks.rundir.CellDir.relpath`). Running the cells is :mod:`benchmarks.runner`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import benchmarks
from benchmarks.config import build_config, check_value
from benchmarks.data.catalog import DatasetSpec, spec_from_config
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig
from benchmarks.precision import check_precision
from benchmarks.protocol import history_window
from benchmarks.registry import METHODS
from benchmarks.rundir import CellDir
from benchmarks.utils import stable_hash

log = logging.getLogger(__name__)

PRESETS = Path(__file__).resolve().parent / "presets"
MATRIX_KEYS = {"name", "description", "datasets", "seeds", "device", "precision", "evaluation", "features",
               "methods"}
METHOD_KEYS = {"name", "label", "config", "datasets", "only", "evaluation"}
#: the evaluation settings a method entry may set for its own cells: how many users one ranking
#: call takes (memory, not what is measured) and how many validation users early stopping reads
#: (``valid_sample``: model selection and its cost; the test rows always rank every test user, and
#: the report names each method's choice). The rest is the matrix's, for every method: the protocol(s)
METHOD_EVAL_KEYS = {"batch_size", "valid_sample"}
FEATURE_KEYS = {"text_template", "text_encoder"}


@dataclass
class MethodEntry:
    name: str
    label: str
    config: dict = field(default_factory=dict)
    per_dataset: dict = field(default_factory=dict)
    only: list[str] | None = None     # run on these datasets only (None: on every dataset)
    evaluation: dict = field(default_factory=dict)   # METHOD_EVAL_KEYS for this entry's cells


@dataclass
class Matrix:
    name: str
    datasets: list
    methods: list[MethodEntry]
    seeds: list[int]
    device: str = "auto"
    precision: str = "auto"
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
    precision = check_precision(data.get("precision", "auto"), f"{source}: precision")
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
    _eval_configs(ev, source)
    return Matrix(name=str(data.get("name", Path(source).stem)), datasets=list(data["datasets"]),
                  methods=methods, seeds=seeds, device=str(data.get("device", "auto")),
                  precision=precision, evaluation=ev, features=feats,
                  description=str(data.get("description", "")),
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
    ev = m.get("evaluation", {}) or {}
    _need(isinstance(ev, dict), f"{where}.evaluation", f"expected a mapping of {sorted(METHOD_EVAL_KEYS)}")
    bad = set(ev) - METHOD_EVAL_KEYS
    _need(not bad, f"{where}.evaluation", f"unknown key(s) {sorted(bad)}: a method entry may set only "
          f"{sorted(METHOD_EVAL_KEYS)} (the other evaluation settings are the matrix's, for every method)")
    return MethodEntry(m["name"], m.get("label", m["name"]), dict(m.get("config", {})),
                       dict(per_dataset), None if only is None else list(only), dict(ev))


def _eval_configs(evaluation: dict, source: str) -> list[EvalConfig]:
    """The matrix's evaluation settings, one EvalConfig per protocol: ``evaluation.protocol``
    is one name or a list of names (each method and seed then gets one cell per protocol,
    which one training serves where the method allows: :func:`benchmarks.runner.protocol_siblings`)."""
    if "mask_history" in evaluation:
        raise ConfigError(f"{source}: evaluation.mask_history was replaced by the named "
                          f"evaluation.protocol: masked | unmasked | auto (true -> masked, false -> unmasked)")
    names = evaluation.get("protocol")
    if isinstance(names, (list, tuple)) and (not names or len(set(names)) != len(names)):
        raise ConfigError(f"{source}: evaluation.protocol: expected a protocol name or a list of distinct "
                          f"names, got {list(names)!r}")
    try:
        if not isinstance(names, (list, tuple)):   # one name, or EvalConfig's default
            return [build_config(EvalConfig, evaluation)]
        return [build_config(EvalConfig, {**evaluation, "protocol": name}) for name in names]
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


def expand_env(value: Any, where: str, field: str = "", keep_unset: bool = False) -> Any:
    """``${VAR}`` in a method config's strings -> the environment variable's value (e.g. a
    local checkpoint path in the paper preset). Only the cells that run are expanded, so a
    filtered run needs only its own variables; an unset variable stops with one error naming
    the field (``keep_unset``: stays ``${VAR}``, for a memory estimate that needs no file)."""
    if isinstance(value, dict):
        return {k: expand_env(v, where, f"{field}.{k}" if field else str(k), keep_unset) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(expand_env(v, where, f"{field}[{i}]", keep_unset) for i, v in enumerate(value))
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ and keep_unset:
                return m.group(0)
            if m.group(1) not in os.environ:
                raise ConfigError(f"{where}: config field {field!r} uses ${{{m.group(1)}}}, which is not set "
                                  f"in the environment (export it, e.g. a local checkpoint path)")
            return os.environ[m.group(1)]
        return _ENV_VAR.sub(sub, value)
    return value


def expand(matrix: Matrix, keep_unset_env: bool = False) -> list[Cell]:
    """The matrix's cells, every method config (with its per-dataset overrides) built and
    checked against its Config class: a wrong key or type stops here, before anything runs.
    ``keep_unset_env``: an unset ``${VAR}`` stays as written (:func:`expand_env`)."""
    eval_cfgs = _eval_configs(matrix.evaluation, matrix.source)
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
                                   f"{matrix.source}: method {entry.label!r}", keep_unset=keep_unset_env)
            try:
                cfg = build_config(cls.Config, overrides)
                if hasattr(cfg, "max_history"):
                    history_window(cfg.max_history, spec.options.max_history, type(cfg).__qualname__)
            except ConfigError as exc:
                raise ConfigError(f"{matrix.source}: method {entry.label!r}: {exc}") from None
            cell_evals = (_eval_configs({**matrix.evaluation, **entry.evaluation},
                                        f"{matrix.source}: method {entry.label!r}")
                          if entry.evaluation else eval_cfgs)
            for seed, cell_eval in itertools.product(matrix.seeds, cell_evals):
                resolved = {
                    "dataset": {"name": spec.name, "format": spec.format,
                                "options": spec.options.to_dict(),
                                "args": {k: str(v) for k, v in spec.reader_args.items()}},
                    "method": entry.name, "label": entry.label, "family": cls.family_of(cfg),
                    "config": dataclasses.asdict(cfg), "seed": seed,
                    "evaluation": cell_eval.to_dict(),
                    "features": matrix.features if cls.needs else {},
                    "suite_version": benchmarks.__version__,
                }
                cells.append(Cell(spec, entry, seed, resolved, stable_hash(resolved)))
    return cells


def matrix_record(matrix: Matrix) -> dict:
    """The matrix as run (what ``matrix.yaml`` in the run folder holds)."""
    return {"name": matrix.name, "description": matrix.description, "datasets": matrix.datasets,
            "seeds": matrix.seeds, "device": matrix.device, "precision": matrix.precision, "evaluation": matrix.evaluation,
            "features": matrix.features,
            "methods": [{"name": m.name, "label": m.label, "config": m.config, "datasets": m.per_dataset,
                         **({"only": m.only} if m.only is not None else {}),
                         **({"evaluation": m.evaluation} if m.evaluation else {})}
                        for m in matrix.methods]}
