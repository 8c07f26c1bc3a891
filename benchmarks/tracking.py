"""Experiment tracking: finished cells logged to MLflow or written as TensorBoard event files.

The runner hands each cell to a tracker AFTER the cell is complete in its run folder, and the
tracker reads it back through :class:`benchmarks.rundir.CellDir` (config, train log, run record,
metrics), so tracking never changes what a cell computed and a tracking failure loses no
cell: it is reported, and the same command run again logs the finished cells the tracker does
not hold yet (a cell is known by its config hash and the time it finished).

What a cell becomes (the same names in both trackers):

- **params** (MLflow): the resolved config (``config.json``) flattened to dotted keys
  (``config.lr``, ``dataset.options.k_core``, ``evaluation.ks``); lists, numbers, booleans and
  ``null`` as JSON text;
- **step metrics**, the step being the epoch: ``epoch/loss`` and ``epoch/valid_ndcg_at_10``
  from the fit log, ``refit/loss`` where the protocol refits;
- **final metrics**: every row of ``metrics.csv`` as ``<split>/<subset>/<metric>_at_<k>``
  (``test/all/ndcg_at_10``; MLflow allows no ``@`` in a name);
- **tags**: dataset, method, label, family, seed, commit (also ``mlflow.source.git.commit``),
  protocol, matrix, config_hash, finished;
- **artefacts** (MLflow): the cell folder.

MLflow: one run per cell in the experiment named after the matrix, at the tracking URI given
(``--track-uri``), else ``MLFLOW_TRACKING_URI``, else MLflow's default. TensorBoard: one folder
per cell under the log folder given, else the run folder's ``tensorboard/``
(:attr:`benchmarks.rundir.RunDir.tensorboard`), the scalars and a text summary of the tags and
params. Both need the ``track`` extra (``pip install 'genrec-bench[track]'``); nothing else of
the suite imports either library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from benchmarks.errors import ConfigError
from benchmarks.rundir import CellDir, RunDir
from benchmarks.utils import stable_hash

log = logging.getLogger(__name__)

#: the trackers ``--track`` accepts
TRACKERS = ("mlflow", "tensorboard")

_EXTRA = "pip install 'genrec-bench[track]'"


def _missing_extra(kind: str, exc: ImportError) -> ConfigError:
    return ConfigError(f"--track {kind} needs the `track` extra ({exc.name or exc} is not installed): {_EXTRA}")


# --------------------------------------------------------------------------- what a cell becomes
def metric_name(split: str, subset: str, metric: str, k: int) -> str:
    """A final metric's name: ``test/all/ndcg_at_10``."""
    return f"{split}/{subset}/{metric}_at_{int(k)}"


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    """A nested mapping as ``{dotted.key: text}``; lists and scalars are leaves (JSON text, a
    string as it is), an empty mapping is the leaf ``{}``."""
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = _param_text(value)
    return out


def _read(cell: CellDir) -> tuple[dict, dict, dict]:
    """(config, train log, run record) of a complete cell; one error naming the file missing."""
    config, train_log, run = cell.config(), cell.train_log(), cell.run_info()
    for name, value in (("config.json", config), ("train_log.json", train_log), ("run.json", run)):
        if not isinstance(value, dict):
            raise ConfigError(f"{cell.path / name}: missing or not a JSON object; tracking needs a complete cell")
    return config, train_log, run


def cell_tags(cell: CellDir, matrix: str) -> dict[str, str]:
    """The tags of a cell: what it is and where its numbers come from."""
    config, _, run = _read(cell)
    return {"dataset": str(config["dataset"]["name"]), "method": str(config["method"]),
            "label": str(config["label"]), "family": str(config.get("family")),
            "seed": str(config["seed"]), "commit": str(run.get("git_commit")),
            "protocol": str((run.get("protocol") or {}).get("label")), "matrix": matrix,
            "config_hash": str(run["config_hash"]), "finished": str(run["finished"])}


def cell_params(cell: CellDir) -> dict[str, str]:
    """The cell's resolved config, flattened (:func:`flatten`)."""
    return flatten(_read(cell)[0])


def cell_step_metrics(cell: CellDir) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(epoch, value), ...]}`` from the fit log (a method without epochs: empty)."""
    _, train_log, _ = _read(cell)
    out: dict[str, list[tuple[int, float]]] = {}
    sources = [("epoch", train_log.get("epochs") or [])]
    refit = train_log.get("refit")
    if isinstance(refit, dict) and isinstance(refit.get("log"), dict):
        sources.append(("refit", refit["log"].get("epochs") or []))
    for prefix, epochs in sources:
        for entry in epochs:
            step = int(entry["epoch"])
            for key, name in (("loss", "loss"), ("valid_ndcg10", "valid_ndcg_at_10")):
                if entry.get(key) is not None:
                    out.setdefault(f"{prefix}/{name}", []).append((step, float(entry[key])))
    return out


def cell_final_metrics(cell: CellDir) -> dict[str, float]:
    """Every row of the cell's metrics.csv: ``{split/subset/metric_at_k: value}``."""
    df = cell.metrics()
    return {metric_name(s, sub, m, k): float(v)
            for s, sub, m, k, v in df[["split", "subset", "metric", "k", "value"]].itertuples(index=False)}


def _millis(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def _run_name(tags: dict[str, str]) -> str:
    return f"{tags['dataset']}/{tags['label']}/seed{tags['seed']}"


# --------------------------------------------------------------------------- trackers
class Tracker(Protocol):
    kind: str
    where: str

    def logged(self, cell: CellDir) -> bool:
        """Whether this tracker already holds the cell (same config hash, same finish time)."""

    def log(self, cell: CellDir) -> str:
        """Log one complete cell; return where it went (a run id, a folder)."""


class MlflowTracker:
    """One MLflow run per cell in the experiment named after the matrix."""

    kind = "mlflow"

    def __init__(self, matrix: str, uri: str | None = None):
        try:
            import mlflow
            from mlflow import MlflowClient
            from mlflow.exceptions import MlflowException
        except ImportError as exc:
            raise _missing_extra("mlflow", exc) from None
        self.matrix = matrix
        self.where = uri or mlflow.get_tracking_uri()
        try:
            self.client = MlflowClient(tracking_uri=self.where)
            found = self.client.get_experiment_by_name(matrix)
            self.experiment = found.experiment_id if found else self.client.create_experiment(matrix)
        except (MlflowException, OSError, ValueError) as exc:
            raise ConfigError(f"--track mlflow: cannot open experiment {matrix!r} at tracking URI "
                              f"{self.where} ({exc})") from None

    def logged(self, cell: CellDir) -> bool:
        tags = cell_tags(cell, self.matrix)
        runs = self.client.search_runs(
            [self.experiment], max_results=1,
            filter_string=(f"tags.config_hash = '{tags['config_hash']}' and tags.finished = '{tags['finished']}' "
                           "and attributes.status = 'FINISHED'"))
        return bool(runs)

    def log(self, cell: CellDir) -> str:
        from mlflow.entities import Metric, Param
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

        tags = cell_tags(cell, self.matrix)
        run = cell.run_info()
        params, steps, finals = cell_params(cell), cell_step_metrics(cell), cell_final_metrics(cell)
        all_tags = {**tags, "mlflow.source.git.commit": tags["commit"]}
        created = self.client.create_run(self.experiment, start_time=_millis(run["started"]),
                                         tags=all_tags, run_name=_run_name(tags))
        run_id = created.info.run_id
        try:
            stamp = _millis(run["finished"])
            metrics = [Metric(name, value, stamp, step) for name, points in steps.items() for step, value in points]
            metrics += [Metric(name, value, stamp, 0) for name, value in finals.items()]
            plist = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(plist), MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(run_id, params=plist[i:i + MAX_PARAMS_TAGS_PER_BATCH])
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])
            self.client.log_artifacts(run_id, str(cell.path))
        except BaseException:
            with contextlib.suppress(Exception):   # the error being raised is the one to report
                self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED", end_time=stamp)
        return run_id


class TensorBoardTracker:
    """One event-file folder per cell: ``<logdir>/<dataset>/<label>/seed<S>-<hash>/``."""

    kind = "tensorboard"

    def __init__(self, matrix: str, logdir: Path):
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise _missing_extra("tensorboard", exc) from None
        self._writer = SummaryWriter
        self.matrix = matrix
        self.logdir = Path(logdir)
        self.where = str(self.logdir)

    def folder(self, cell: CellDir) -> Path:
        tags = cell_tags(cell, self.matrix)
        return self.logdir / CellDir.relpath(tags["dataset"], tags["label"], int(tags["seed"]),
                                             tags["config_hash"]).relative_to("cells")

    def _suffix(self, cell: CellDir) -> str:
        """The event file's suffix: which computation of the cell it holds (hash and finish time)."""
        tags = cell_tags(cell, self.matrix)
        return f".{tags['config_hash']}-{stable_hash(tags['finished'], 8)}"

    def logged(self, cell: CellDir) -> bool:
        folder = self.folder(cell)
        return folder.is_dir() and any(folder.glob(f"events.out.tfevents.*{self._suffix(cell)}"))

    def log(self, cell: CellDir) -> str:
        tags, params = cell_tags(cell, self.matrix), cell_params(cell)
        steps, finals = cell_step_metrics(cell), cell_final_metrics(cell)
        wall = _millis(tags["finished"]) / 1000
        final = self.folder(cell)
        tmp = final.with_name(final.name + f".tmp-{int(time.time() * 1e6)}")
        tmp.mkdir(parents=True)
        try:
            writer = self._writer(str(tmp), filename_suffix=self._suffix(cell))
            for name, points in steps.items():
                for step, value in points:
                    writer.add_scalar(name, value, step, walltime=wall)
            for name, value in finals.items():
                writer.add_scalar(name, value, 0, walltime=wall)
            writer.add_text("tags", "\n".join(f"    {k}: {v}" for k, v in tags.items()), 0, walltime=wall)
            writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0, walltime=wall)
            writer.close()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():   # an earlier computation of this cell (its folder was removed and rerun)
            shutil.rmtree(final)
        tmp.rename(final)
        return str(final)


def open_tracker(kind: str, *, matrix: str, run: RunDir, uri: str | None = None) -> Tracker:
    """The tracker ``kind`` (one of :data:`TRACKERS`) for a run of ``matrix`` into ``run``:
    MLflow at ``uri`` (else ``MLFLOW_TRACKING_URI``, else MLflow's default), TensorBoard into
    the folder ``uri`` (else ``run.tensorboard``). Opened before any cell runs, so a missing
    extra or an unreachable tracking URI stops the run at once."""
    if kind == "mlflow":
        return MlflowTracker(matrix, uri)
    if kind == "tensorboard":
        return TensorBoardTracker(matrix, Path(uri) if uri else run.tensorboard)
    raise ConfigError(f"--track: expected one of {', '.join(repr(t) for t in TRACKERS)}, got {kind!r}")


def track_cells(tracker: Tracker, cells: list[CellDir], *, skip_logged: bool = False) -> tuple[int, list[dict]]:
    """Log ``cells`` (complete) with ``tracker``; ``skip_logged``: leave out those it holds
    already. A cell whose logging fails is reported (log and return value) and the others go
    on: the cell itself stays as it is. Returns (cells logged, failures ``{"cell", "error"}``)."""
    done, failed = 0, []
    for cell in cells:
        try:
            if skip_logged and tracker.logged(cell):
                continue
            where = tracker.log(cell)
        except Exception as exc:  # noqa: BLE001  (any tracker error: the cell is kept, the error reported)
            log.error("tracking (%s at %s) failed for %s: %s: %s", tracker.kind, tracker.where, cell.path,
                      type(exc).__name__, exc)
            failed.append({"cell": str(cell.path), "error": f"{type(exc).__name__}: {exc}"})
        else:
            done += 1
            log.info("tracked %s -> %s %s", cell.path.name, tracker.kind, where)
    return done, failed
