"""The one training loop every torch-based method uses.

A :class:`TorchRecommender` says how to build its module, how to cut one epoch into batches
and what the loss of a batch is; :func:`train_loop` does the rest: optimiser steps, gradient
clipping, validation every ``eval_every`` epochs on the harness's NDCG@10, early stopping after
``patience`` validations without improvement, restoring the best state, a progress bar, and a
log of per-epoch loss, validation score, seconds and peak memory. Under ``accelerate launch``
the same loop trains data-parallel (see :mod:`benchmarks.distributed`).

Precision (:mod:`benchmarks.precision`, the run's ``ctx.precision``): every loss is computed
under the method's :meth:`~benchmarks.protocol.Recommender.autocast` (bf16 / fp16 autocast,
nothing in fp32); fp16 steps go through a gradient scaler (unscaled before clipping).

Memory: ``grad_accum`` cuts every batch into that many micro-batches
(:meth:`TorchRecommender.micro_batches`), each back-propagated with its loss weighted by its
share of what the loss averages over (:meth:`TorchRecommender.loss_count`: the samples by
default, the target tokens for the generative methods), and takes one optimiser step per batch:
the update equals the whole batch's up to float error where that count is the right one
(``batch_size`` stays the batch the method and its paper mean). ``gradient_checkpointing`` recomputes the
activations of the transformers models inside the method's module in the backward pass
(:func:`enable_gradient_checkpointing`).

The host waits on the device only where it must: the epoch's loss is summed on the device
(float64, so the logged mean is the one a per-step ``float(loss)`` sum gives), a non-finite
loss is looked for every :data:`FINITE_CHECK_EVERY` steps and at the end of every epoch (the
error names the epoch and the step where it first occurred), and the best state is copied to
host memory (a GPU clone would double the weights' memory), restored at the end.

Resuming: where the run names a checkpoint file (``ctx.checkpoint``; the runner does, one per
training), the loop writes its whole state there every ``ctx.checkpoint_seconds`` of training
and once more when it ends (weights, optimiser, scheduler, gradient scaler, every random stream,
each protocol's model selection with its best state, the epoch log, the training clock), and a
later run of the same training continues from that file exactly as if it had never stopped:
the same batches, the same dropout, the same losses, the same best epochs. A checkpoint made for
another method, config or seed is ignored with a warning, and so is one that lacks a protocol
the run selects on; protocols it has that the run no longer needs (their cells were written
before the stop) are dropped. The logs say where the training resumed (``resumed``: the epoch,
the protocols, the git commit of the code that wrote the checkpoint). Not under
data-parallel training, nor in a dry run.
"""

from __future__ import annotations

import abc
import dataclasses
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from benchmarks import distributed
from benchmarks.errors import ConfigError
from benchmarks.precision import grad_scaler
from benchmarks.protocol import Recommender, Validator, ValidatorPanel
from benchmarks.utils import (PeakMemory, atomic_write_bytes, git_commit, preserved_rng, progress_bar, rng_state, set_rng_state,
                              show_progress)

log = logging.getLogger(__name__)

#: optimiser steps between two looks for a non-finite loss (each one waits on the device)
FINITE_CHECK_EVERY = 100


@dataclass
class TrainConfig:
    """Fields every trained method has (method configs subclass this).

    ``patience`` counts validations, not epochs; ``max_train_minutes`` caps wall-clock
    training time (None = no cap) and is recorded when it stops a run. ``grad_accum``:
    micro-batches per batch (one optimiser step per batch); ``gradient_checkpointing``:
    recompute the transformer backbone's activations in the backward pass (see the module doc).
    """

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    grad_clip: float | None = None
    max_train_minutes: float | None = None
    grad_accum: int = 1
    gradient_checkpointing: bool = False


class TorchRecommender(Recommender):
    """A Recommender whose parameters live in one ``nn.Module`` trained by :func:`train_loop`."""

    Config = TrainConfig

    def __init__(self, config: TrainConfig, ctx):
        super().__init__(config, ctx)
        # parameters start from the seed alone, whatever consumed random numbers before (a
        # tokenizer trained now or read from the cache must not change the initialisation)
        from benchmarks.utils import seed_everything
        seed_everything(ctx.seed)
        if config.grad_accum < 1:
            raise ConfigError(f"{type(config).__qualname__}: field 'grad_accum': expected an integer >= 1, "
                              f"got {config.grad_accum}")
        self._shard: _Shard | None = None      # set by train_loop under data parallelism
        if ctx.meta:     # an estimate: shapes only, nothing allocated (never trained)
            with torch.device("meta"):
                self.module: nn.Module = self.build()
        else:
            self.module = self.build().to(self.device)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(self.module, f"{type(config).__qualname__}: field 'gradient_checkpointing'")

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """Create the module (called once, in __init__)."""

    @abc.abstractmethod
    def batches(self, rng: np.random.Generator) -> Iterable[Any]:
        """One epoch of training batches, shuffled with ``rng``."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Scalar loss of one batch (the module is in train mode)."""

    def loss_count(self, batch: Any) -> int | torch.Tensor:
        """What :meth:`loss` of ``batch`` is a mean over, counted (``grad_accum`` weighs each
        micro-batch's loss by its share): default, the samples (the first dimension)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])

    def micro_batches(self, batch: Any, n: int) -> list[tuple[Any, float | torch.Tensor]]:
        """``batch`` cut into at most ``n`` micro-batches along the first dimension, each with the
        weight of its loss: its share of the batch's :meth:`loss_count`. Default: a tensor or a
        tuple / list of tensors of one first dimension; a method with other batches overrides
        this."""
        if n == 1:
            return [(batch, 1.0)]
        parts = batch if isinstance(batch, (tuple, list)) else (batch,)
        sizes = {p.shape[0] for p in parts if isinstance(p, torch.Tensor)}
        if len(sizes) != 1 or not all(isinstance(p, torch.Tensor) for p in parts):
            raise ConfigError(f"{self.name}: field 'grad_accum': its batches are not tensors of one first "
                              f"dimension, so they cannot be cut (override micro_batches)")
        size = sizes.pop()
        chunks = [torch.tensor_split(p, min(n, size)) for p in parts]
        micros = [type(batch)(piece) if isinstance(batch, (tuple, list)) else piece[0] for piece in zip(*chunks)]
        counts = [self.loss_count(m) for m in micros]
        total = sum(counts)
        return [(m, c / total) for m, c in zip(micros, counts)]

    def n_batches(self) -> int | None:
        """Batches per epoch, for the progress bar (None if unknown)."""
        return None

    def memory_estimate(self, batch: Any, eval_batch: Any, *, e: int, mask_bytes: int,
                        autocast: bool) -> dict | None:
        """GPU bytes, from shapes (:mod:`benchmarks.memory`), of one training step's
        activations on ``batch`` (``held``, ``peak``: see the formulas there; ``batch`` is what
        one forward pass sees, a micro-batch under ``grad_accum``; checkpointing as
        configured) and of ranking
        ``eval_batch`` (a :class:`~benchmarks.protocol.UserBatch`; ``eval``: caches, logits,
        transients), plus ``formula`` (which one). ``e``: an activation element's bytes,
        ``mask_bytes``: a dropout mask element's, ``autocast``: fp32 parameters computing in
        ``e``. None (this default): no formula; the estimate then measures a real forward
        (:func:`benchmarks.memory.saved_bytes`)."""
        return None

    def share(self, batches: list, rng: np.random.Generator) -> list:
        """This process's share of one epoch's ``batches`` (a list of what each batch is built
        from: index arrays, cheap), to be built after this call: alone, all of them; under data
        parallelism every WORLD_SIZE-th of the same shuffled list, the same count on every
        process, and ``rng`` re-seeded per process so that what the batches draw from it
        afterwards (negatives, masks) differs between processes. A ``batches`` that does not
        call this still trains data-parallel, building every batch and using its share."""
        shard = self._shard
        if shard is None:
            return batches
        shard.taken = True
        rng.bit_generator.state = np.random.PCG64([int(rng.integers(2 ** 62)), shard.rank]).state
        return batches[shard.rank:shard.steps * shard.world:shard.world]

    def shuffled_slices(self, rng: np.random.Generator, n: int) -> list[np.ndarray]:
        """``n`` samples shuffled with ``rng`` and cut into ``batch_size`` index arrays, this
        process's :meth:`share` of them."""
        order = rng.permutation(n)
        bs = self.config.batch_size
        return self.share([order[start:start + bs] for start in range(0, n, bs)], rng)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.lr,
                                weight_decay=self.config.weight_decay)

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """A learning-rate scheduler stepped after every optimiser step, or None (default)."""
        return None

    def fit(self, validator: Validator | None = None) -> dict:
        return train_loop(self, validator)

    def loop_state(self) -> dict:
        """What the method itself keeps across epochs outside its module and the loop (a log it
        appends to at every validation, say), for a training checkpoint: plain Python values
        and tensors. Default: nothing. :meth:`load_loop_state` gets it back on resuming."""
        return {}

    def load_loop_state(self, state: dict) -> None:
        """Take back what :meth:`loop_state` returned when the checkpoint was written."""

    def eval(self) -> "TorchRecommender":
        self.module.eval()
        return self

    def train(self) -> "TorchRecommender":
        self.module.train()
        return self


def enable_gradient_checkpointing(module: nn.Module, where: str) -> int:
    """Switch on activation checkpointing (non-reentrant) in every outermost transformers model
    inside ``module`` (``activation_checkpointing_enable``, before transformers 5.24
    ``gradient_checkpointing_enable``; a PEFT wrapper passes it on); returns
    how many. A module on the way that says why it cannot be checkpointed
    (``gradient_checkpointing_unsupported``: a backbone whose forward keeps per-call state a
    recomputation would not see), or no transformers model at all, is a ConfigError naming
    ``where``."""
    found = 0

    def visit(m: nn.Module) -> None:
        nonlocal found
        reason = getattr(m, "gradient_checkpointing_unsupported", None)
        if reason:
            raise ConfigError(f"{where}: not supported by {type(m).__name__}: {reason}")
        if getattr(m, "supports_gradient_checkpointing", False):
            if hasattr(m, "activation_checkpointing_enable"):     # transformers >= 5.24's name
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                found += 1
                return
            if hasattr(m, "gradient_checkpointing_enable"):
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                found += 1
                return
        for child in m.children():
            visit(child)

    visit(module)
    if not found:
        raise ConfigError(f"{where}: the module has no transformers model to checkpoint "
                          f"(only the T5 and decoder-only backbones have one)")
    return found


def state_memory_mb(module: nn.Module) -> dict:
    """What training holds besides activations, in MiB, from the module's tensors
    (:func:`benchmarks.memory.state_bytes`): its weights (parameters and buffers), the
    gradients of its trainable parameters and Adam's two moments of each (the optimiser every
    method uses), each in its parameter's dtype."""
    from benchmarks.memory import state_bytes

    mib = 2 ** 20
    s = state_bytes(module)
    return {"weights_mb": round(s["weights"] / mib, 3), "gradients_mb": round(s["gradients"] / mib, 3),
            "optimizer_mb": round(s["optimizer"] / mib, 3),
            "state_mb": round((s["weights"] + s["gradients"] + s["optimizer"]) / mib, 3)}


def _state_copy(module: nn.Module) -> dict:
    """The module's state in host memory (a copy: it shares no storage with the module)."""
    return {k: v.detach().clone() if v.device.type == "cpu" else v.detach().to("cpu", copy=True)
            for k, v in module.state_dict().items()}


@dataclass
class _Shard:
    """One epoch of data-parallel training as a process sees it: its rank, the world size, the
    steps every process takes; ``taken``: the method's ``batches`` took its :meth:`share`."""

    rank: int
    world: int
    steps: int
    taken: bool = False


class _LossTally:
    """One epoch's losses, summed on the device, and the first non-finite one (its step and
    value), kept on the device too: :meth:`check` is the only place the host waits."""

    def __init__(self, device: torch.device):
        dtype = torch.float32 if device.type == "mps" else torch.float64   # MPS has no float64
        self.total = torch.zeros((), dtype=dtype, device=device)
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), dtype=dtype, device=device)
        self.steps = 0

    def add(self, loss: torch.Tensor) -> None:
        self.steps += 1
        loss = loss.to(self.total.dtype)
        first = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(first, self.bad_step.new_full((), self.steps), self.bad_step)
        self.bad_value = torch.where(first, loss, self.bad_value)
        self.total += loss

    def check(self, name: str, epoch: int, dist=None) -> None:
        """Raise FloatingPointError if a loss was not finite; under data parallelism (``dist``)
        on every process if it was on any (every process calls this at the same steps)."""
        if dist is None:
            step = int(self.bad_step)
            if step >= 0:
                raise FloatingPointError(f"{name}: loss became {float(self.bad_value)} at epoch {epoch}, step {step}")
            return
        steps = dist.all_ranks(self.bad_step.clamp(min=0))
        if bool((steps > 0).any()):
            values = dist.all_ranks(self.bad_value)
            r = int(torch.where(steps > 0, steps, math.inf).argmin())   # the earliest (a NaN spreads)
            raise FloatingPointError(f"{name}: loss became {float(values[r])} at epoch {epoch}, step "
                                     f"{int(steps[r])} on rank {r} (of {dist.world} data-parallel processes)")

    def mean(self) -> float:
        return float(self.total) / max(self.steps, 1)


@dataclass(eq=False)      # one per validator, told apart by identity
class _Selection:
    """Model selection on one validator (one protocol): the best score, its epoch and the
    module's state then, validations since the last improvement, every score by epoch, and,
    once its patience has run out (or the loop ended), where its run ends: ``end`` (the last
    epoch it saw), ``stopped`` (why) and ``seconds`` (training time until then)."""

    best: float = -math.inf
    best_epoch: int = 0
    state: dict | None = None
    bad: int = 0
    scores: dict = field(default_factory=dict)
    end: int | None = None
    stopped: str | None = None
    seconds: float | None = None

    def stop(self, epoch: int, why: str, seconds: float) -> None:
        if self.stopped is None:
            self.end, self.stopped, self.seconds = epoch, why, seconds


#: the layout version of a training checkpoint (a file of another version is ignored)
CHECKPOINT_FORMAT = 1
#: environment variable: minutes of training between two checkpoints (default
#: :data:`CHECKPOINT_MINUTES`; 0: after every epoch; ``off``: none, a run starts over)
CHECKPOINT_ENV = "GENREC_BENCH_CHECKPOINT_MINUTES"
CHECKPOINT_MINUTES = 10.0


def checkpoint_seconds() -> float | None:
    """Seconds of training between two checkpoints, from :data:`CHECKPOINT_ENV` (None: off)."""
    raw = os.environ.get(CHECKPOINT_ENV, "").strip().lower()
    if not raw:
        return 60 * CHECKPOINT_MINUTES
    if raw == "off":
        return None
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes >= 0:
        raise ConfigError(f"environment variable {CHECKPOINT_ENV}: expected minutes >= 0 or 'off', got {raw!r}")
    return 60 * minutes


def _training_identity(model: "TorchRecommender") -> str:
    """What a training checkpoint must have been made for: the method, its config, the seed
    and the data's size (a checkpoint of another training is never resumed)."""
    ds = model.ctx.dataset
    return json.dumps({"method": model.name, "config": dataclasses.asdict(model.config), "seed": model.ctx.seed,
                       "users": ds.n_users, "items": ds.n_items}, sort_keys=True, default=str)


@dataclass
class _Resumable:
    """The training loop's state between two epochs: what a checkpoint holds and gives back."""

    epoch: int                      # the last epoch done
    selections: dict                # protocol label -> _Selection
    epochs: list
    elapsed: float                  # training seconds so far (the time cap's clock)
    done_steps: int
    resumes: list                   # the resumptions: [{"epoch", "protocols", "checkpoint_commit"}]
    stopped: str | None = None      # set when the training had ended (only the cells were left)


def _save_checkpoint(path: Path, model: "TorchRecommender", opt, sched, scaler, rng: np.random.Generator,
                     st: _Resumable) -> float:
    """Write the loop's state to ``path`` atomically (a stop mid-write keeps the last file);
    returns the seconds it took."""
    t0 = time.perf_counter()
    state = {"format": CHECKPOINT_FORMAT, "identity": _training_identity(model), "commit": git_commit(),
             "module": model.module.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict() if sched is not None else None, "scaler": scaler.state_dict(),
             "loop_rng": rng.bit_generator.state, "rng": rng_state(),
             # fields one by one (asdict would copy the best states; two protocols may share one)
             "selections": {label: {f.name: getattr(sel, f.name) for f in dataclasses.fields(sel)}
                            for label, sel in st.selections.items()},
             "epoch": st.epoch, "epochs": st.epochs, "elapsed": st.elapsed, "done_steps": st.done_steps,
             "resumes": st.resumes, "stopped": st.stopped, "method": model.loop_state()}
    buf = io.BytesIO()
    torch.save(state, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return time.perf_counter() - t0


def _load_checkpoint(path: Path, model: "TorchRecommender", opt, sched, scaler, rng: np.random.Generator,
                     labels: list[str]) -> _Resumable | None:
    """The state a checkpoint at ``path`` holds, loaded into the module, optimiser, scheduler,
    scaler and random streams, when it was made for this training and every protocol in
    ``labels``; None (after a warning saying why) otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # a file from an older torch, a truncated copy: start over, say why
        log.warning("%s: ignoring training checkpoint %s (unreadable: %s)", model.name, path, exc)
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("identity") != _training_identity(model):
        log.warning("%s: ignoring training checkpoint %s (made for another method, config, seed or dataset)",
                    model.name, path)
        return None
    missing = [lab for lab in labels if lab not in state["selections"]]
    if missing:
        log.warning("%s: ignoring training checkpoint %s: it selected on protocols %s, this run also needs %s",
                    model.name, path, sorted(state["selections"]), missing)
        return None
    model.module.load_state_dict(state["module"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None and state["scheduler"] is not None:
        sched.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rng.bit_generator.state = state["loop_rng"]
    set_rng_state(state["rng"])
    model.load_loop_state(state["method"])
    selections = {label: _Selection(**state["selections"][label]) for label in labels}
    log.info("%s: resumed from training checkpoint %s after epoch %d (protocols %s)", model.name, path,
             state["epoch"], ", ".join(labels) or "-")
    resumes = state["resumes"] + [{"epoch": state["epoch"], "protocols": list(labels),
                                   "checkpoint_commit": state.get("commit")}]
    return _Resumable(state["epoch"], selections, state["epochs"], state["elapsed"], state["done_steps"],
                      resumes, state["stopped"])


def _selection_log(sel: _Selection | None, epochs: list[dict], world: int, precision: str,
                   total_seconds: float, stopped: str) -> dict:
    """The train log a run selecting on ``sel`` alone writes: its epochs (up to ``sel.end``,
    each with ITS validation score), best epoch and score, why it stopped (``sel``'s reason;
    ``stopped``, the loop's, for a run without validation, ``sel`` None)."""
    if sel is not None:
        mine = [dict(e) for e in epochs if e["epoch"] <= sel.end]
        for e in mine:
            if e["epoch"] in sel.scores:
                e["valid_ndcg10"] = sel.scores[e["epoch"]]
        best, best_epoch, stopped, seconds = sel.best, sel.best_epoch, sel.stopped, sel.seconds
    else:
        mine, best, best_epoch, seconds = epochs, -math.inf, 0, total_seconds
    secs = [e["seconds"] for e in mine]
    return {"epochs": mine, "best_epoch": best_epoch or len(mine), "world_size": world,
            "precision": precision,
            "best_valid_ndcg10": None if best == -math.inf else best, "stopped": stopped,
            "train_seconds": round(seconds, 2),
            "mean_epoch_seconds": round(float(np.mean(secs)), 3) if secs else 0.0,
            "peak_rss_mb": max((e["peak_rss_mb"] for e in mine), default=0.0)}


def _write_stopped(model: TorchRecommender, panel: ValidatorPanel, selections: list[_Selection],
                   epochs: list[dict], epoch: int, elapsed: float, written: dict[int, dict],
                   resumes: list[dict]) -> float:
    """Hand each protocol that stopped at ``epoch`` while another trains on to the panel's
    ``on_stop`` (the runner writes its cell), with the log its own run would have (kept in
    ``written`` by the protocol's index: its outcome at the end); then put the
    module's weights and every random stream back, so the training goes on unchanged. Returns
    the seconds that took (the loop leaves them out of its training clock and time cap)."""
    still = [panel.labels[j] for j, s in enumerate(selections) if s.stopped is None]
    done = [i for i, s in enumerate(selections) if s.end == epoch and i not in panel.written_early]
    if not still or not done:
        return 0.0
    t0 = time.perf_counter()
    current = _state_copy(model.module)
    for i in done:
        log_ = _selection_log(selections[i], epochs, 1, model.precision, elapsed, selections[i].stopped)
        log_["shared_training"] = {"protocols": list(panel.labels), "epochs": epoch,
                                   "train_seconds": round(elapsed, 2), "written_while_training": still}
        if resumes:
            log_["resumed"] = resumes
        log.info("%s: protocol %s stopped at epoch %d; writing its cell while %s trains on",
                 model.name, panel.labels[i], epoch, ", ".join(still))
        with preserved_rng():
            panel.on_stop(i, log_, selections[i].state)
        panel.written_early.append(i)
        written[i] = log_
    model.module.load_state_dict(current)
    model.train()
    return time.perf_counter() - t0


def train_loop(model: TorchRecommender, validator: Validator | ValidatorPanel | None) -> dict:
    """Train ``model`` with early stopping on ``validator`` (higher is better); see module doc.

    ``validator`` may be a :class:`~benchmarks.protocol.ValidatorPanel` (one validator per
    evaluation protocol): every validation then scores each protocol whose patience has not run
    out, each keeps its own best state, and training goes on until the last one has stopped;
    the panel's ``outcomes`` get each protocol's log and best state, the module the first
    protocol's best state, and the returned log is the first protocol's (with
    ``shared_training``: the protocols and how long the one training ran). A protocol that
    stops while another trains on goes to the panel's ``on_stop`` right then (outside
    data-parallel training; :class:`~benchmarks.protocol.ValidatorPanel`); its log's
    ``shared_training`` then gives the epochs and seconds until then and the protocols still
    training (``written_while_training``); the time that took is not training time (neither in
    the logs' seconds nor against ``max_train_minutes``)."""
    cfg = model.config
    panel = validator if isinstance(validator, ValidatorPanel) else None
    validators = panel.validators if panel is not None else [validator] if validator is not None else []
    labels = panel.labels if panel is not None else [""] * len(validators)
    rng = np.random.default_rng(model.ctx.seed)
    dist = distributed.current()
    if dist is not None:
        dist.broadcast_module(model.module)
        if dist.rank:   # dropout apart per process (rank 0 goes on with the run's stream)
            torch.manual_seed(distributed.rank_seed(model.ctx.seed, dist.rank))
    opt = model.optimizer()
    scaler = grad_scaler(model.precision, model.device)   # inert unless fp16
    n_batches = model.n_batches()
    world = dist.world if dist is not None else 1
    per_rank = n_batches // world if n_batches else None   # the same step count everywhere
    if dist is not None and not per_rank:
        raise ValueError(f"{model.name}: data-parallel training needs n_batches() >= {world}")
    sched = model.scheduler(opt, cfg.epochs * (per_rank or 0)) if per_rank else None
    selections = [_Selection() for _ in validators]
    written_early: dict[int, dict] = {}     # protocol index -> the log its early-written cell got
    epochs: list[dict] = []
    stopped = "max epochs"
    cap, done_steps = model.ctx.max_steps, 0      # a dry run's step cap (protocol.Context)
    checkpoint = model.ctx.checkpoint if dist is None and cap is None and not model.ctx.meta else None
    # what each selection is saved under: the panel's protocols, else the run's (ctx.protocol)
    sel_labels = list(labels) if panel is not None else [model.ctx.protocol] * len(validators)
    first, resumes, finished, elapsed0 = 1, [], None, 0.0
    if checkpoint is not None and Path(checkpoint).is_file():
        got = _load_checkpoint(Path(checkpoint), model, opt, sched, scaler, rng, sel_labels)
        if got is not None:
            selections = [got.selections[lab] for lab in sel_labels]
            epochs, done_steps, finished, elapsed0 = got.epochs, got.done_steps, got.stopped, got.elapsed
            first = got.epoch + 1
            resumes = got.resumes
    started = time.perf_counter() - elapsed0
    last_save = time.perf_counter()

    def state_now(epoch: int, ended: str | None = None) -> _Resumable:
        return _Resumable(epoch, dict(zip(sel_labels, selections)), epochs, time.perf_counter() - started, done_steps,
                          resumes, ended)

    progress = show_progress(model.ctx.progress)   # off in a log file: the epoch lines below are the record
    todo = range(first, cfg.epochs + 1) if finished is None else range(0)
    bar = progress_bar(todo, desc=f"train {model.name}", enabled=progress, initial=first - 1,
                       total=cfg.epochs)
    if finished is not None:
        stopped = finished
    for epoch in bar:
        model.train()
        tally = _LossTally(model.device)
        t0 = time.perf_counter()
        epoch_rng = rng
        if dist is not None:    # the same epoch everywhere, its sampling per process (TorchRecommender.share)
            model._shard = _Shard(dist.rank, world, per_rank)
            epoch_rng = np.random.default_rng(int(rng.integers(2 ** 62)))
        with PeakMemory(device=model.device) as mem:
            for i, batch in enumerate(progress_bar(model.batches(epoch_rng), total=per_rank or n_batches,
                                                   leave=False, desc=f"epoch {epoch}", enabled=progress)):
                if cap is not None and done_steps >= cap:
                    break
                if dist is not None and not model._shard.taken:   # every batch built: take ours
                    if i >= per_rank * world:
                        break
                    if i % world != dist.rank:
                        continue
                elif dist is not None and tally.steps >= per_rank:
                    break
                opt.zero_grad(set_to_none=True)
                loss = None
                for micro, weight in model.micro_batches(batch, cfg.grad_accum):
                    with model.autocast():
                        part = model.loss(micro)
                    part = part if isinstance(weight, float) and weight == 1.0 else part * weight
                    scaler.scale(part).backward()
                    loss = part.detach() if loss is None else loss + part.detach()
                if dist is not None:
                    dist.average_gradients(model.module)
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.module.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                if sched is not None:
                    sched.step()
                tally.add(loss)
                done_steps += 1
                if tally.steps % FINITE_CHECK_EVERY == 0:
                    tally.check(model.name, epoch, dist)
            tally.check(model.name, epoch, dist)
        model._shard = None
        entry = {"epoch": epoch, "loss": tally.mean(), "steps": tally.steps,
                 "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": mem.peak_rss_mb}
        if mem.peak_cuda_mb is not None:
            entry["peak_cuda_mb"] = mem.peak_cuda_mb
        out_of_time = (cfg.max_train_minutes is not None
                       and time.perf_counter() - started > 60 * cfg.max_train_minutes)
        if dist is not None and cfg.max_train_minutes is not None:   # one clock: the main process's
            out_of_time = bool(dist.broadcast_float(float(out_of_time)))
        live = [i for i, s in enumerate(selections) if s.stopped is None]
        said = ""
        if live and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
            model.eval()
            scores = [0.0] * len(live)
            if dist is None or dist.is_main:
                scores = [float(validators[i](model)) for i in live]
            if dist is not None:   # the main process validates; everyone takes its scores
                scores = [float(x) for x in dist.broadcast_floats(scores)]
            state = None      # one copy for every protocol that improved at this epoch
            for i, score in zip(live, scores):
                s = selections[i]
                s.scores[epoch] = score
                if score > s.best:
                    state = state if state is not None else _state_copy(model.module)
                    s.best, s.best_epoch, s.state, s.bad = score, epoch, state, 0
                else:
                    s.bad += 1
                if s.bad >= cfg.patience:
                    s.stop(epoch, f"early stopping (patience {cfg.patience})", time.perf_counter() - started)
            said = ", valid NDCG@10 " + ", ".join(f"{labels[i]} {score:.4f}".strip() for i, score in zip(live, scores))
        epochs.append(entry)
        log.info("%s epoch %d: loss %.4f%s (%.1f s)", model.name, epoch, entry["loss"], said, entry["seconds"])
        if panel is not None and panel.on_stop is not None and dist is None:
            started += _write_stopped(model, panel, selections, epochs, epoch, time.perf_counter() - started,
                                      written_early, resumes)
        ending = ((selections and all(s.stopped is not None for s in selections)) or out_of_time
                  or epoch == cfg.epochs or (cap is not None and done_steps >= cap))
        if checkpoint is not None and not ending and time.perf_counter() - last_save >= model.ctx.checkpoint_seconds:
            started += _save_checkpoint(Path(checkpoint), model, opt, sched, scaler, rng, state_now(epoch))
            last_save = time.perf_counter()
        first = selections[0] if selections else None
        bar.set_postfix(loss=f"{entry['loss']:.4f}",
                        val=f"{first.scores.get(epoch, float('nan')) if first else float('nan'):.4f}",
                        best=first.best_epoch if first else 0)
        if selections and all(s.stopped is not None for s in selections):
            stopped = selections[-1].stopped
            break
        if out_of_time:
            stopped = f"time cap ({cfg.max_train_minutes} min)"
            break
        if cap is not None and done_steps >= cap:
            stopped = f"dry run ({cap} steps)"
            break
    bar.close()
    elapsed = time.perf_counter() - started
    last = epochs[-1]["epoch"] if epochs else 0
    for s in selections:     # the ones still going when the loop ended end with it
        s.stop(last, stopped, elapsed)
    if checkpoint is not None and finished is None:   # a stop while the cells are written loses no training
        _save_checkpoint(Path(checkpoint), model, opt, sched, scaler, rng, state_now(last, stopped))
    logs = [_selection_log(s, epochs, world, model.precision, elapsed, stopped) for s in selections] or \
        [_selection_log(None, epochs, world, model.precision, elapsed, stopped)]
    if dist is not None:   # each process's dropout / sampling seed (distributed.rank_seed)
        for log_ in logs:
            log_["rank_seeds"] = [distributed.rank_seed(model.ctx.seed, r) for r in range(world)]
    if resumes:
        for log_ in logs:
            log_["resumed"] = resumes
    if panel is not None:
        shared = {"protocols": list(labels), "epochs": last, "train_seconds": round(elapsed, 2)}
        for log_ in logs:
            log_["shared_training"] = shared
        panel.outcomes = [(written_early.get(i, log_), s.state) for i, (log_, s) in enumerate(zip(logs, selections))]
    if selections and selections[0].state is not None:
        model.module.load_state_dict(selections[0].state)
    model.eval()
    return written_early.get(0, logs[0])


def warmup_decay(schedule: str, warmup_steps: int, total_steps: int):
    """LR factor per step: linear warm-up over ``warmup_steps``, then ``cosine`` / ``linear``
    decay to 0 at ``total_steps``, or ``constant``. For ``LambdaLR``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "linear":
            return 1 - progress
        return 1.0
    return factor


def warmup_decay_scheduler(optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """:func:`warmup_decay` as a ``LambdaLR`` (None for a constant rate without warm-up)."""
    if schedule == "constant" and not warmup_steps:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay(schedule, warmup_steps, total_steps))
