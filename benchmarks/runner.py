"""Running a matrix: each unfinished cell trained, evaluated and written, by one driver.

:func:`run_matrix` is the driver, whatever runs the cells: it expands the matrix (every config
checked before the run folder is touched), cleans what a killed run left, records the matrix,
skips finished cells, hands the others to an executor, records every failure without stopping
the others (unless ``fail_fast``), and gathers ``results.csv`` after each cell. Executors:
:class:`LocalExecutor` (in this process, one cell after another; under a multi-process launch
every process trains each cell data-parallel and only the main process writes) and
:class:`RayExecutor` (one Ray task per cell). :func:`run_cell` does one cell: the dataset,
the run context (:func:`benchmarks.context.build_context`), the method, its training, the
evaluation, and the cell folder through :class:`benchmarks.rundir.RunDir`, built in a staging
folder and renamed into place when complete, so a finished cell is never recomputed and a run
killed at any moment resumes where it stopped. With ``track``, each complete cell is then
logged by a tracker of :mod:`benchmarks.tracking`, read back from its folder.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from benchmarks import distributed
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.catalog import DatasetSpec, load_dataset
from benchmarks.errors import ConfigError, GenrecError
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.matrix import Cell, Matrix, expand, matrix_record
from benchmarks.protocol import Context
from benchmarks.registry import METHODS
from benchmarks.rundir import RunDir
from benchmarks.tracking import open_tracker, track_cells
from benchmarks.utils import (Timer, device_description, git_commit, package_versions, progress_bar,
                              resolve_device, seed_everything, show_progress, stable_hash)

log = logging.getLogger(__name__)

#: errors that fail one cell (recorded) while the others run: a data error of its dataset, a
#: diverged model (NaN scores), a wrong value a config check could not see
CELL_ERRORS = (GenrecError, RuntimeError, ValueError, FloatingPointError)


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


def _cell_setup(cell: Cell, *, device: str, features: dict | None, memo: _DatasetMemo | None,
                progress: bool, precision: str, max_steps: int | None = None, meta: bool = False):
    """What a run and a dry run of ``cell`` share before the method is built: the seed set, the
    device resolved, the dataset and its evaluator (from ``memo``), the method's class and
    checked config, and its Context. Returns ``(device, dataset, evaluator, cls, cfg, ctx)``."""
    seed_everything(cell.seed)
    dev = resolve_device(device)
    eval_cfg = build_config(EvalConfig, cell.resolved["evaluation"])
    ds, evaluator = (memo or _DatasetMemo()).get(cell.dataset, eval_cfg, cell.seed)
    cls = METHODS.get(cell.method.name)
    cfg = build_config(cls.Config, cell.resolved["config"])
    ctx = build_context(ds, seed=cell.seed, device=dev, evaluator=evaluator, needs=cls.needs, features=features,
                        progress=progress, precision=precision, max_steps=max_steps, meta=meta)
    return dev, ds, evaluator, cls, cfg, ctx


def run_cell(cell: Cell, out: Path, *, device: str = "auto", features: dict | None = None,
             progress: bool = True, memo: _DatasetMemo | None = None, precision: str = "auto") -> Path:
    """Train and evaluate one cell on ``device`` in ``precision`` (auto | fp32 | bf16 | fp16);
    write its directory atomically; return its path."""
    return run_cells([cell], out, device=device, features=features, progress=progress, memo=memo,
                     precision=precision)[0]


def protocol_siblings(cells: list[Cell]) -> list[list[Cell]]:
    """``cells`` in groups that one training serves: cells of one dataset, method, config and
    seed whose evaluation differs only in ``protocol`` (masked / unmasked ...), where the
    method trains through :func:`benchmarks.training.train_loop` unchanged (it validates every
    protocol of a :class:`~benchmarks.protocol.ValidatorPanel`). Every other cell is a group
    of one. Groups keep the order of their first cell."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(training_key(cell), []).append(cell)
    return list(groups.values())


def training_key(cell: Cell) -> str:
    """The training ``cell`` is served by: its config hash, or, for a method that
    :func:`protocol_siblings` groups, the hash of its resolved config without the protocol
    (``siblings-<hash>``; one training for all of them). Names its training checkpoint
    (:meth:`benchmarks.rundir.RunDir.training_checkpoint`), so that a training stopped after
    some protocols' cells were written resumes for the rest."""
    from benchmarks.training import TorchRecommender

    cls = METHODS.get(cell.method.name)
    if issubclass(cls, TorchRecommender) and cls.fit is TorchRecommender.fit:
        rest = copy.deepcopy(cell.resolved)
        rest["evaluation"].pop("protocol", None)
        return "siblings-" + stable_hash(rest)
    return cell.hash


def run_cells(cells: list[Cell], out: Path, *, device: str = "auto", features: dict | None = None,
              progress: bool = True, memo: _DatasetMemo | None = None, precision: str = "auto") -> list[Path]:
    """One training for ``cells`` (one cell, or a group of :func:`protocol_siblings`: the
    panel of their protocols' validators early-stops each protocol on its own), then each cell
    evaluated with its protocol's best state and written atomically. A cell of a group holds
    what a run of it alone holds (its train log ends where its protocol's patience ran out),
    plus the group's ``shared_training`` in its train log. A protocol that stops while another
    trains on has its cell written right then (not in data-parallel training: there at the end,
    with the others), so that a training stopped later keeps it; ``run.json``'s fit seconds are
    the training's until the cell was written. Returns the cells' paths."""
    from benchmarks.protocol import ValidatorPanel

    main = distributed.is_main()
    progress = show_progress(progress)   # passed on: features and identifiers draw nothing in a log
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    dev, ds, evaluator, cls, cfg, ctx = _cell_setup(cells[0], device=device, features=features, memo=memo,
                                                    progress=progress, precision=precision)
    from benchmarks.training import checkpoint_seconds

    every = checkpoint_seconds()
    checkpoint = RunDir(out).training_checkpoint(training_key(cells[0]))
    if every is not None:
        ctx = dataclasses.replace(ctx, checkpoint=checkpoint, checkpoint_seconds=every)
    evaluators = [evaluator] + [Evaluator(ds, build_config(EvalConfig, c.resolved["evaluation"]), seed=c.seed)
                                for c in cells[1:]]
    model = cls(cfg, ctx)

    def finish(i: int, log_: dict, state: dict | None, fit_seconds: float) -> None:
        """Evaluate cell ``i`` with its best state and write it (a data-parallel helper process
        takes part in a refit, then drops its scratch folder)."""
        cell, ev = cells[i], evaluators[i]
        with RunDir(out).building(cell.relpath, scratch=not main) as staging, Timer() as t_cell:
            if state is not None:
                model.module.load_state_dict(state)
            model.eval()
            test_model = model
            if ev.protocol.refit and not model.sequential:
                with Timer() as t_refit:
                    test_model, log_["refit"] = refit_on_validation(cls, cfg, ctx, log_)
                log_["refit"]["wall_seconds"] = round(t_refit.seconds, 2)
            if not main:
                return
            with Timer() as t_eval:
                result = ev.evaluate(model, splits=("valid",), progress=progress)
                test = ev.evaluate(test_model, splits=("test",), progress=progress)
                result.rows += test.rows
                result.per_user.update(test.per_user)
                result.throughput = test.throughput
            _write_cell(staging, cell, ds, model, ctx, dev, log_, result, started,
                        {"total": round(time.perf_counter() - t_start, 2), "fit": round(fit_seconds, 2),
                         "evaluate": round(t_eval.seconds, 2)})
        log.info("cell %s written (%.1f s to evaluate)", cell.relpath, t_cell.seconds)

    panel = None
    if len(cells) > 1:
        panel = ValidatorPanel([e.validation_ndcg for e in evaluators], [e.protocol.label for e in evaluators],
                               on_stop=lambda i, log_, state: finish(i, log_, state, time.perf_counter() - fit_started))
    fit_started = time.perf_counter()
    fit_log = model.fit(panel if panel is not None else ctx.validator)
    fit_seconds = time.perf_counter() - fit_started
    outcomes = panel.outcomes if panel is not None else [(fit_log, None)]
    for i, (log_, state) in enumerate(outcomes):
        if panel is None or i not in panel.written_early:
            finish(i, log_, state, fit_seconds)
    if main:    # every cell of the training is written: nothing left to resume
        checkpoint.unlink(missing_ok=True)
    return [out / c.relpath for c in cells]


def _write_cell(staging, cell: Cell, ds, model, ctx: Context, dev, fit_log: dict, result, started,
                wall: dict) -> None:
    """A cell's files, from its evaluation ``result`` and train log; its metrics last (they
    mark the cell complete)."""
    import torch

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
        "precision": ctx.precision,
        "torch_threads": torch.get_num_threads(),
        "deterministic_kernels": torch.are_deterministic_algorithms_enabled(),
        "started": started.isoformat(), "finished": datetime.now(timezone.utc).isoformat(),
        "wall_seconds": wall,
        "protocol": result.protocol, "cold_items": model.cold_scoring(),
        "dataset": {"info": ds.info, "stats": ds.stats()}})
    model.write_artefacts(staging)
    staging.write_metrics(rows)   # last: marks the cell complete


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
    model = cls(cfg, dataclasses.replace(ctx, dataset=data, cache=None, checkpoint=None))
    log_ = model.fit(None)
    return model, {"epochs": epochs, "train_interactions": data.stats()["train_interactions"],
                   "log": log_}


# --------------------------------------------------------------------------- the driver and its executors
#: what an executor reports per cell it has finished: the cell and, if it failed, its failure
#: record ({"cell", "error", ...}), else None
Outcome = tuple[Cell, "dict | None"]


def _failure(cell: Cell, exc: BaseException, with_traceback: bool) -> dict:
    log.error("cell %s failed: %s", cell.relpath, exc)
    out = {"cell": str(cell.relpath), "error": f"{type(exc).__name__}: {exc}"}
    if with_traceback:
        out["traceback"] = traceback.format_exc()
    return out


def _group_outcomes(group: list[Cell], out: Path, exc: BaseException, with_traceback: bool,
                    remote_traceback: str | None = None) -> Iterator[Outcome]:
    """What a failed group of :func:`protocol_siblings` reports: a failure for each of its
    cells, except those written before the failure (a protocol that had stopped while another
    trained on: its cell is complete and stays)."""
    for cell in group:
        if RunDir(out).complete(cell.relpath):
            yield cell, None
            continue
        failure = _failure(cell, exc, with_traceback=with_traceback)
        if remote_traceback:
            failure["traceback"] = remote_traceback
        yield cell, failure


class LocalExecutor:
    """The cells one after another in this process (and, under ``accelerate launch``, in every
    process of the launch: each trains data-parallel, the main one evaluates and writes)."""

    def run(self, cells: list[Cell], out: Path, matrix: Matrix, *, progress: bool,
            fail_fast: bool) -> Iterator[Outcome]:
        main = distributed.is_main()
        memo = _DatasetMemo()
        bar = progress_bar(total=len(cells), desc=f"matrix {matrix.name}", enabled=progress and main)
        for group in protocol_siblings(cells):
            cell = group[0]
            bar.set_postfix_str(f"{cell.dataset.name}/{cell.method.label}/seed{cell.seed}"
                                + (f" ({len(group)} protocols, one training)" if len(group) > 1 else ""))
            try:
                run_cells(group, out, device=matrix.device, features=matrix.features, progress=progress and main,
                          memo=memo, precision=matrix.precision)
            except CELL_ERRORS as exc:
                if fail_fast or not main:
                    raise
                yield from _group_outcomes(group, out, exc, with_traceback=True)
            else:
                for cell in group:
                    yield cell, None
            bar.update(len(group))
        bar.close()


#: the worker process's datasets (a ProcessExecutor worker runs many cells; each dataset is
#: read once per worker, like LocalExecutor's memo in its one process)
_WORKER_MEMO: _DatasetMemo | None = None


def _worker_init(threads: int, log_level: int) -> None:
    """A ProcessExecutor worker: ``threads`` torch threads, plain log lines (no bars), its memo."""
    global _WORKER_MEMO
    import torch

    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    _WORKER_MEMO = _DatasetMemo()


def _worker_cell(cell: Cell, out: str, device: str, features: dict, precision: str) -> str:
    return str(run_cell(cell, Path(out), device=device, features=features, progress=False,
                        memo=_WORKER_MEMO, precision=precision))


def _worker_cells(cells: list[Cell], out: str, device: str, features: dict, precision: str) -> list[str]:
    return [str(p) for p in run_cells(cells, Path(out), device=device, features=features, progress=False,
                                      memo=_WORKER_MEMO, precision=precision)]


class ProcessExecutor:
    """The cells on ``jobs`` worker processes of this machine (``--jobs N``), each with
    ``threads`` torch threads (default: the CPUs this process may use, divided among the
    jobs, at least 1). A cell runs exactly as in :class:`LocalExecutor` (its seed set at its
    start, its files written through :class:`RunDir`); only the thread count per cell and the
    order in which cells finish differ. Workers are spawned (no forked torch state) and reused
    for many cells; what several cells build (a dataset's preprocessing, text and CF
    embeddings, identifiers) is built once: the others wait on its cache entry's
    :func:`benchmarks.cache.build_lock`. Not for a multi-process (accelerate) launch."""

    def __init__(self, jobs: int, threads: int | None = None):
        if jobs < 1:
            raise ConfigError(f"--jobs: expected a positive number of worker processes, got {jobs}")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads per job: expected a positive number, got {threads}")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.jobs, self.threads = jobs, threads or max(1, cpus // jobs)

    def run(self, cells: list[Cell], out: Path, matrix: Matrix, *, progress: bool,
            fail_fast: bool) -> Iterator[Outcome]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if distributed.world_size() > 1:
            raise ConfigError("--jobs: cells in worker processes cannot run inside a multi-process "
                              "(accelerate / torchrun) launch; drop --jobs or launch one process")
        log.info("matrix %s: %d cells on %d worker processes, %d torch thread(s) each",
                 matrix.name, len(cells), self.jobs, self.threads)
        bar = progress_bar(total=len(cells), desc=f"matrix {matrix.name} ({self.jobs} jobs)", enabled=progress)
        pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(self.threads, logging.getLogger().level))
        try:
            pending = {pool.submit(_worker_cells, g, str(out), matrix.device, matrix.features, matrix.precision): g
                       for g in protocol_siblings(cells)}
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    group = pending.pop(future)
                    bar.update(len(group))
                    exc = future.exception()
                    if exc is None:
                        for cell in group:
                            yield cell, None
                        continue
                    if fail_fast or not isinstance(exc, CELL_ERRORS):
                        raise exc
                    remote = getattr(exc.__cause__, "tb", None)   # the worker's formatted traceback
                    yield from _group_outcomes(group, out, exc, with_traceback=False,
                                               remote_traceback=str(remote) if remote else None)
        except BaseException:
            # a failing cell under fail_fast, a bug, Ctrl-C: the running cells are stopped, not
            # waited for (a stopped cell leaves only its temporary folder, removed by the next run)
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        else:
            pool.shutdown(wait=True)
        finally:
            bar.close()


def _ray_cell(cell: Cell, out: str, device: str, features: dict, precision: str = "auto") -> str:
    """A Ray task: one cell, written exactly as an in-process run writes it."""
    logging.basicConfig(level=logging.INFO)
    return _worker_cell(cell, out, device, features, precision)   # no memo there: one cell per task


class RayExecutor:
    """One Ray task per cell on a local Ray cluster (``address=None``) or the cluster at
    ``address``, with ``cpus_per_cell`` / ``gpus_per_cell`` resources each. Needs the ``ray``
    extra (``pip install genrec-bench[ray]``); the workers must be able to import this package
    (installed, or shipped with a runtime_env)."""

    def __init__(self, address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'genrec-bench[ray]'") from None
        self.address, self.cpus, self.gpus = address, cpus_per_cell, gpus_per_cell

    def run(self, cells: list[Cell], out: Path, matrix: Matrix, *, progress: bool,
            fail_fast: bool) -> Iterator[Outcome]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, ignore_reinit_error=True,
                     log_to_driver=False, runtime_env={"env_vars": {"TQDM_DISABLE": "1"}})
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(_ray_cell)
        pending = {task.remote(c, str(out), matrix.device, matrix.features, matrix.precision): c for c in cells}
        bar = progress_bar(total=len(pending), desc=f"matrix {matrix.name} (ray)", enabled=progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(done[0])
            try:
                ray.get(done[0])
            except Exception as exc:  # noqa: BLE001  (a task's error arrives wrapped by Ray)
                if fail_fast:
                    for ref in pending:
                        ray.cancel(ref, force=True)
                    raise
                yield cell, _failure(cell, exc, with_traceback=False)
            else:
                yield cell, None
            finally:
                bar.update(1)
        bar.close()


def run_matrix(matrix: Matrix, out: Path, *, executor: LocalExecutor | ProcessExecutor | RayExecutor | None = None,
               progress: bool = True, fail_fast: bool = False, track: str | None = None,
               track_uri: str | None = None) -> dict:
    """Run every unfinished cell with ``executor`` (default: :class:`LocalExecutor`); collect
    results; return a summary ``{"cells", "skipped", "ran", "failed"}`` (with ``track``, also
    ``"tracked"``, ``"tracking_failed"`` and ``"tracked_to"``).

    A matrix whose configs do not check stops before the run folder is touched. A cell that
    fails at run time (a data error of its dataset, a diverged model ...) is recorded in the
    summary and ``failures.json`` and the other cells run, unless ``fail_fast``. Under a
    multi-process launch only the main process cleans, records and writes. ``track``: a
    tracker of :mod:`benchmarks.tracking` (``mlflow``, ``tensorboard``; ``track_uri``: where)
    logs each cell once it is complete, and the cells finished by an earlier run that it does
    not hold yet; a tracking failure is recorded in ``tracking_failed`` and loses no cell."""
    executor = executor or LocalExecutor()
    out = Path(out)
    run = RunDir(out)
    cells = expand(matrix)   # every config checked before the run folder is touched
    main = distributed.is_main()
    tracker = open_tracker(track, matrix=matrix.name, run=run, uri=track_uri) if track and main else None
    out.mkdir(parents=True, exist_ok=True)
    if main:
        run.clean_stale()
        run.write_matrix(matrix_record(matrix), keep_methods=True)   # a --methods selection keeps the rest
    todo = [c for c in cells if not run.complete(c.relpath)]
    if distributed.current() is not None:   # decided before anyone writes: the same list everywhere
        distributed.current().barrier()
    summary = {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": 0, "failed": []}
    log.info("matrix %s: %d cells, %d finished already", matrix.name, len(cells), summary["skipped"])

    def cell_dir(c: Cell):
        return run.cell(c.dataset.name, c.method.label, c.seed, c.hash)

    if tracker is not None:
        summary.update(tracked=0, tracking_failed=[], tracked_to=f"{tracker.kind} {tracker.where}")
        pending = {c.relpath for c in todo}
        earlier = [cell_dir(c) for c in cells if c.relpath not in pending]
        n, failed = track_cells(tracker, earlier, skip_logged=True)
        summary["tracked"] += n
        summary["tracking_failed"] += failed
    for cell, failure in executor.run(todo, out, matrix, progress=progress, fail_fast=fail_fast):
        if failure is None:
            summary["ran"] += 1
            if tracker is not None:   # after the cell is complete in its folder: it is read from there
                n, failed = track_cells(tracker, [cell_dir(cell)])
                summary["tracked"] += n
                summary["tracking_failed"] += failed
        else:
            summary["failed"].append(failure)
        if main:
            run.collect_results()
    if main:
        run.collect_results()
        run.write_failures(summary["failed"])
    return summary


# --------------------------------------------------------------------------- dry run
def dry_run_cell(cell: Cell, *, device: str = "auto", features: dict | None = None, precision: str = "auto",
                 steps: int = 3, users: int = 32, memo: _DatasetMemo | None = None) -> dict:
    """One cell built at its real size (its dataset, identifiers and features as configured,
    and cached as a real run would), trained for ``steps`` optimiser steps without validation,
    then ``users`` test users ranked; nothing is written to a run folder. Returns its row:
    parameters, the training state's memory (:func:`benchmarks.training.state_memory_mb`), the
    peak memory measured over the steps and the ranking (resident, and CUDA's where on a GPU),
    seconds per step and users per second."""
    from benchmarks.training import TorchRecommender, state_memory_mb
    from benchmarks.utils import PeakMemory

    dev, ds, evaluator, cls, cfg, ctx = _cell_setup(cell, device=device, features=features, memo=memo,
                                                    progress=False, precision=precision, max_steps=steps)
    with Timer() as t_build:
        model = cls(cfg, ctx)
    row: dict = {"dataset": ds.name, "method": cell.method.label, "seed": cell.seed, "device": dev,
                 "precision": ctx.precision, "build_seconds": round(t_build.seconds, 2)}
    torch_model = isinstance(model, TorchRecommender)
    if torch_model:
        row["parameters"] = sum(p.numel() for p in model.module.parameters())
        row["trainable"] = sum(p.numel() for p in model.module.parameters() if p.requires_grad)
        row.update(state_memory_mb(model.module))
    row.update(_gpu_estimate(model, ds, evaluator, cell, gpu_precision(precision)))
    with PeakMemory(device=model.device) as mem:
        with Timer() as t_fit:
            fit_log = model.fit(None)
        ranked = ds.eval_users("test")[:users]
        _, timing = evaluator.rank(model, "test", ranked)
    done = sum(e.get("steps", 0) for e in fit_log.get("epochs", []))
    row.update({"steps": done, "seconds_per_step": round(t_fit.seconds / done, 3) if done else None,
                "ranked_users": int(timing["users"]),
                "users_per_s": round(timing["users"] / timing["seconds"], 1) if timing["seconds"] else None,
                "peak_rss_mb": mem.peak_rss_mb, "peak_cuda_mb": mem.peak_cuda_mb})
    row.update(projected_time(model, ds, evaluator, row["seconds_per_step"], row["users_per_s"]))
    return row


def projected_time(model, ds, evaluator: Evaluator, seconds_per_step: float | None,
                   users_per_s: float | None) -> dict:
    """A cell's time on the machine the dry run measured, projected from its few steps and
    users: an epoch = seconds per step x optimiser steps per epoch (``n_batches``) + one
    validation ranking (its validation users, or the ``valid_sample``) / users per second,
    every ``eval_every`` epochs; the cell = ``epochs`` such epochs (no early stop: an upper
    bound) + the final rankings (every validation and test user; again per warm / cold subset
    where the dataset has cold items). None where a figure is missing (MostPop: no steps)."""
    cfg = getattr(model, "config", None)
    steps = model.n_batches() if hasattr(model, "n_batches") else None
    if not users_per_s or cfg is None or not hasattr(cfg, "epochs"):
        return {}
    valid = len(evaluator.validation_users())
    final = (len(ds.eval_users("valid")) + len(ds.eval_users("test"))) * (2 if evaluator.cold[1:].any() else 1)
    per_valid = valid / users_per_s
    out: dict = {}
    if seconds_per_step is not None and steps:
        epoch = seconds_per_step * steps + per_valid / cfg.eval_every
        # three significant digits (a fixed number of decimals made a toy cell's epoch 0.0 h)
        out["epoch_hours"] = float(f"{epoch / 3600:.3g}")
        out["cell_hours"] = float(f"{(cfg.epochs * epoch + final / users_per_s) / 3600:.3g}")
    return out


# --------------------------------------------------------------------------- memory estimate
#: the card the estimate is checked against: 80 GB (A100 / H100 80GB: 79.6 GiB usable), less
#: 1.5 GiB for the CUDA context, cuBLAS / cuDNN workspaces and the allocator's slack
GPU_GB = 80
FITS_GIB = 78.0


def gpu_precision(precision: str) -> str:
    """The precision a cell would run in on a current GPU (``auto``: bf16, as
    :func:`benchmarks.precision.resolve_precision` resolves it on one with bf16)."""
    return "bf16" if precision == "auto" else precision


def _widest_batch(model, seed: int, look: int = 50):
    """The widest (most elements) of the first ``look`` training batches of an epoch (a whole
    batch: one optimiser step, all its micro-batches)."""
    import itertools

    import numpy as np
    import torch

    size = lambda b: sum(t.numel() for t in (b if isinstance(b, (tuple, list)) else (b,)) if isinstance(t, torch.Tensor))
    batches = list(itertools.islice(model.batches(np.random.default_rng(seed)), look))
    if not batches:
        return None
    return max(batches, key=size)


def _gpu_estimate(model, ds, evaluator: Evaluator, cell: Cell, precision: str, compute: bool = False) -> dict:
    """Estimated GPU memory of one cell (see :mod:`benchmarks.memory`): the training step at its
    widest batch (state + autocast copies + activations, the method's formula where it has one,
    else the bytes one real forward on this machine saves) and the evaluation (state kept
    through the validation rankings + one batch of the ``evaluation.batch_size`` test users
    with the longest histories), in GiB, and whether both fit an 80 GB card; with ``compute``,
    the training's compute from one counted step at the widest batch
    (:func:`benchmarks.compute.projected_compute`; ``flops_error`` says why where a loss cannot be
    counted; free on the meta device, one real step otherwise: the estimate's, not the dry
    run's, whose paper-size steps take minutes on a CPU)."""
    import numpy as np
    import torch

    from benchmarks.compute import projected_compute
    from benchmarks.evaluation.evaluator import user_batch
    from benchmarks.memory import GIB, autocast_copies, saved_bytes, state_bytes
    from benchmarks.training import TorchRecommender

    e = 2 if precision in ("bf16", "fp16") else 4
    users = ds.eval_users("test")
    lengths = np.array([len(h) for h in ds.history("test", users)])
    picked = users[np.argsort(-lengths, kind="stable")[:evaluator.cfg.batch_size]]
    eval_batch = user_batch(ds, "test", picked)
    row: dict = {"gpu_precision": precision, "eval_batch": len(picked)}
    scores = 3 * len(picked) * (ds.n_items + 1) * 4        # scores, their masked copy, the top-K
    if not isinstance(model, TorchRecommender):
        row.update({"train_bytes": 0, "eval_bytes": scores, "activations_from": "-"})
    else:
        module = model.module
        state = state_bytes(module)
        fp32 = sum(p.numel() for p in module.parameters() if p.dtype == torch.float32)
        autocast = e == 2 and fp32 > state["parameters"] / 2
        held = state["weights"] + state["gradients"] + state["optimizer"]
        whole = _widest_batch(model, cell.seed)
        # what one forward sees: the first micro-batch where grad_accum > 1
        batch = None if whole is None else model.micro_batches(whole, model.config.grad_accum)[0][0]
        est = model.memory_estimate(batch, eval_batch, e=e, mask_bytes=1, autocast=autocast) if batch is not None else None
        if est is not None:
            act, ev, source = est["peak"], est["eval"], est["formula"]
        elif batch is None:
            act, ev, source = 0, scores, "-"
        else:
            if any(p.is_meta for p in module.parameters()):
                raise ValueError(f"{model.name}: no memory formula, and its module on the meta device cannot run")
            model.train()
            tensors = tuple(t for t in (batch if isinstance(batch, (tuple, list)) else (batch,))
                            if isinstance(t, torch.Tensor))
            act = saved_bytes(lambda: model.loss(batch), module, tensors)
            ev, source = scores, "measured"
        copies = autocast_copies(module) if autocast else 0
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        row.update({"state_bytes": held, "activation_bytes": act, "train_bytes": held + copies + act,
                    "eval_bytes": held + ev, "activations_from": source,
                    "train_batch": "x".join(map(str, first.shape)) if isinstance(first, torch.Tensor) else None})
        try:
            row.update(projected_compute(model, whole) if compute else {})
        except (RuntimeError, NotImplementedError) as exc:      # visible, not a failed cell
            row["flops_error"] = f"{type(exc).__name__}: {exc}"
    for key in ("state", "activation", "train", "eval"):
        if f"{key}_bytes" in row:
            row[f"{key}_gib"] = round(row[f"{key}_bytes"] / GIB, 2)
    row["fits_80gb"] = "yes" if max(row["train_bytes"], row["eval_bytes"]) <= FITS_GIB * GIB else "NO"
    return row


#: the most epochs an estimate trains a tokenizer (RQ-VAE) for: its identifiers' lengths and
#: vocabulary are the configured ones from there (LC-Rec's and LETTER's fixed 256-code last level
#: needs some training to tell the colliding items apart)
ESTIMATE_TOKENIZER_EPOCHS = 100
SHORT_TOKENIZER = f"identifiers from a tokenizer of at most {ESTIMATE_TOKENIZER_EPOCHS} epochs"
SHORT_CF = "CF embeddings from a 1-epoch SASRec"


def _estimate_config(cell: Cell, llm_shape: str | None) -> tuple[dict, str | None]:
    """The cell's config for an estimate, where only shapes matter: a decoder-only backbone's
    ``checkpoint`` replaced by a from-config model of its shape (a local folder's config.json,
    else ``llm_shape``, one of :data:`backbones.causal.SHAPES`), with LoRA as the checkpoint
    would have it and its dtype; the identifier scheme's tokenizer trained at most
    :data:`ESTIMATE_TOKENIZER_EPOCHS` epochs and any CF SASRec (LETTER's, SETRec's) 1 epoch.
    Returns the config and a note (None: unchanged)."""
    from backbones.causal import SHAPES, shape_config, shape_of
    from benchmarks.registry import IDENTIFIERS

    cfg = copy.deepcopy(cell.resolved["config"])
    notes = []
    scheme = cfg.get("identifier")
    if isinstance(scheme, str) and scheme in IDENTIFIERS:
        scheme_cfg = build_config(IDENTIFIERS.get(scheme).Config, cfg.get("identifier_config") or {})
        fields = {f.name for f in dataclasses.fields(scheme_cfg)}
        ident = dict(cfg.get("identifier_config") or {})
        if "epochs" in fields and scheme_cfg.epochs > ESTIMATE_TOKENIZER_EPOCHS:
            ident["epochs"] = ESTIMATE_TOKENIZER_EPOCHS
            notes.append(SHORT_TOKENIZER)
        if "cf_sasrec" in fields:
            ident["cf_sasrec"] = {**(ident.get("cf_sasrec") or {}), "epochs": 1}
            notes.append(SHORT_CF)
        cfg["identifier_config"] = ident
    if "cf_sasrec_config" in cfg and cfg.get("n_cf"):
        cfg["cf_sasrec_config"] = {**(cfg["cf_sasrec_config"] or {}), "epochs": 1}
        notes.append(SHORT_CF)
    bcfg = cfg.get("backbone_config") or {}
    if cfg.get("backbone") == "causal" and bcfg.get("checkpoint"):
        ckpt = str(bcfg["checkpoint"])
        shape = shape_of(ckpt) if "${" not in ckpt else None
        name = Path(ckpt).name
        if shape is None:
            if llm_shape is None:
                raise ConfigError(f"method {cell.method.label!r}: backbone_config.checkpoint {ckpt!r} is no local "
                                  f"folder with a config.json: export it, or estimate at a named shape with "
                                  f"--llm-shape (known: {', '.join(SHAPES)})")
            if llm_shape.lower() not in SHAPES:
                raise ConfigError(f"--llm-shape: unknown shape {llm_shape!r}; known: {', '.join(SHAPES)}")
            shape, name = shape_config(llm_shape), llm_shape
        lora = bcfg.get("lora", "auto")
        cfg["backbone_config"] = {**{k: v for k, v in bcfg.items() if k != "checkpoint"}, **shape,
                                  "lora": True if lora == "auto" else lora}
        notes.append(f"{name} shape from config, text tokenised by the method's text_tokenizer")
    return cfg, "; ".join(dict.fromkeys(notes)) or None


def estimate_cell(cell: Cell, *, features: dict | None = None, precision: str = "auto",
                  llm_shape: str | None = None, memo: _DatasetMemo | None = None,
                  scratch: Path | None = None) -> dict:
    """One cell's GPU memory estimate WITHOUT training: its dataset and features (cached as a
    run caches them), its identifiers from a shortened tokenizer (:func:`_estimate_config`;
    cached under ``scratch`` only, or not at all), and a method with a memory formula built on
    the meta device (a decoder-only checkpoint at its shape); one without a formula is built
    for real (the baselines, RPG: small) and its widest batch's forward measured. Returns the
    row of :func:`_gpu_estimate` with the parameter counts and the note."""
    import dataclasses as dc

    from benchmarks.memory import state_bytes
    from benchmarks.training import TorchRecommender

    config, note = _estimate_config(cell, llm_shape)
    shaped = dc.replace(cell, resolved={**cell.resolved, "config": config})
    cls = METHODS.get(cell.method.name)
    meta = issubclass(cls, TorchRecommender) and cls.memory_estimate is not TorchRecommender.memory_estimate
    _, ds, evaluator, cls, cfg, ctx = _cell_setup(shaped, device="cpu", features=features, memo=memo,
                                                  progress=False, precision="fp32", meta=meta)
    if note and SHORT_TOKENIZER in note:
        ctx.cache = scratch       # shortened identifiers: never in the run's cache
    with Timer() as t_build:
        model = cls(cfg, ctx)
    row: dict = {"dataset": ds.name, "method": cell.method.label, "seed": cell.seed,
                 "build_seconds": round(t_build.seconds, 2)}
    if isinstance(model, TorchRecommender):
        counts = state_bytes(model.module)
        row.update(parameters=counts["parameters"], trainable=counts["trainable"])
    row.update(_gpu_estimate(model, ds, evaluator, shaped, gpu_precision(precision), compute=True))
    if note:
        row["note"] = note
    return row


def estimate(matrix: Matrix, *, llm_shape: str | None = None, progress: bool = True) -> list[dict]:
    """:func:`estimate_cell` for every cell of ``matrix`` (an unset ``${VAR}`` in a config is
    kept: a checkpoint is not read, its shape is named); a cell that fails gets its row with
    ``error``."""
    import tempfile

    cells = expand(matrix, keep_unset_env=True)
    memo = _DatasetMemo()
    rows = []
    with tempfile.TemporaryDirectory(prefix="genrec-estimate-") as scratch:   # shortened identifiers, shared
        for cell in progress_bar(cells, desc=f"estimate {matrix.name}", enabled=progress):
            try:
                rows.append(estimate_cell(cell, features=matrix.features, precision=matrix.precision,
                                          llm_shape=llm_shape, memo=memo, scratch=Path(scratch)))
            except CELL_ERRORS as exc:
                log.error("cell %s failed in the estimate: %s", cell.relpath, exc)
                rows.append({"dataset": cell.dataset.name, "method": cell.method.label, "seed": cell.seed,
                             "error": f"{type(exc).__name__}: {exc}"})
    return rows


def dry_run(matrix: Matrix, *, steps: int = 3, users: int = 32, progress: bool = True) -> list[dict]:
    """:func:`dry_run_cell` for every cell of ``matrix`` (every config checked first, as by a
    run), one after another in this process; a cell that fails gets its row with ``error``."""
    cells = expand(matrix)
    memo = _DatasetMemo()
    rows = []
    for cell in progress_bar(cells, desc=f"dry run {matrix.name}", enabled=progress):
        try:
            rows.append(dry_run_cell(cell, device=matrix.device, features=matrix.features,
                                     precision=matrix.precision, steps=steps, users=users, memo=memo))
        except CELL_ERRORS as exc:
            log.error("cell %s failed in the dry run: %s", cell.relpath, exc)
            rows.append({"dataset": cell.dataset.name, "method": cell.method.label, "seed": cell.seed,
                         "error": f"{type(exc).__name__}: {exc}"})
    return rows
