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
"""

from __future__ import annotations

import abc
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from benchmarks import distributed
from benchmarks.precision import grad_scaler
from benchmarks.protocol import Recommender, Validator
from benchmarks.utils import PeakMemory, progress_bar, show_progress

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Fields every trained method has (method configs subclass this).

    ``patience`` counts validations, not epochs; ``max_train_minutes`` caps wall-clock
    training time (None = no cap) and is recorded when it stops a run.
    """

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10
    eval_every: int = 1
    grad_clip: float | None = None
    max_train_minutes: float | None = None


class TorchRecommender(Recommender):
    """A Recommender whose parameters live in one ``nn.Module`` trained by :func:`train_loop`."""

    Config = TrainConfig

    def __init__(self, config: TrainConfig, ctx):
        super().__init__(config, ctx)
        # parameters start from the seed alone, whatever consumed random numbers before (a
        # tokenizer trained now or read from the cache must not change the initialisation)
        from benchmarks.utils import seed_everything
        seed_everything(ctx.seed)
        self.module: nn.Module = self.build().to(self.device)

    @abc.abstractmethod
    def build(self) -> nn.Module:
        """Create the module (called once, in __init__)."""

    @abc.abstractmethod
    def batches(self, rng: np.random.Generator) -> Iterable[Any]:
        """One epoch of training batches, shuffled with ``rng``."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Scalar loss of one batch (the module is in train mode)."""

    def n_batches(self) -> int | None:
        """Batches per epoch, for the progress bar (None if unknown)."""
        return None

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.module.parameters(), lr=self.config.lr,
                                weight_decay=self.config.weight_decay)

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """A learning-rate scheduler stepped after every optimiser step, or None (default)."""
        return None

    def fit(self, validator: Validator | None = None) -> dict:
        return train_loop(self, validator)

    def eval(self) -> "TorchRecommender":
        self.module.eval()
        return self

    def train(self) -> "TorchRecommender":
        self.module.train()
        return self


def _state_copy(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_loop(model: TorchRecommender, validator: Validator | None) -> dict:
    """Train ``model`` with early stopping on ``validator`` (higher is better); see module doc."""
    cfg = model.config
    rng = np.random.default_rng(model.ctx.seed)
    dist = distributed.current()
    if dist is not None:
        dist.broadcast_module(model.module)
    opt = model.optimizer()
    scaler = grad_scaler(model.precision, model.device)   # inert unless fp16
    n_batches = model.n_batches()
    world = dist.world if dist is not None else 1
    per_rank = n_batches // world if n_batches else None   # the same step count everywhere
    if dist is not None and not per_rank:
        raise ValueError(f"{model.name}: data-parallel training needs n_batches() >= {world}")
    sched = model.scheduler(opt, cfg.epochs * (per_rank or 0)) if per_rank else None
    best, best_epoch, best_state, bad = -math.inf, 0, None, 0
    epochs: list[dict] = []
    stopped = "max epochs"
    started = time.perf_counter()
    progress = show_progress(model.ctx.progress)   # off in a log file: the epoch lines below are the record
    bar = progress_bar(range(1, cfg.epochs + 1), desc=f"train {model.name}", enabled=progress)
    for epoch in bar:
        model.train()
        total, steps = 0.0, 0
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            for i, batch in enumerate(progress_bar(model.batches(rng), total=n_batches, leave=False,
                                                   desc=f"epoch {epoch}", enabled=progress)):
                if dist is not None:
                    if i >= per_rank * world:
                        break
                    if i % world != dist.rank:
                        continue
                with model.autocast():
                    loss = model.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{model.name}: loss became {loss.item()} at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if dist is not None:
                    dist.average_gradients(model.module)
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.module.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                if sched is not None:
                    sched.step()
                total += float(loss.detach())
                steps += 1
        entry = {"epoch": epoch, "loss": total / max(steps, 1), "steps": steps,
                 "seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb": mem.peak_rss_mb}
        if mem.peak_cuda_mb is not None:
            entry["peak_cuda_mb"] = mem.peak_cuda_mb
        out_of_time = (cfg.max_train_minutes is not None
                       and time.perf_counter() - started > 60 * cfg.max_train_minutes)
        if validator is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs or out_of_time):
            model.eval()
            if dist is None:
                score = float(validator(model))
            else:   # the main process validates; everyone takes its score
                score = dist.broadcast_float(float(validator(model)) if dist.is_main else 0.0)
            entry["valid_ndcg10"] = score
            if score > best:
                best, best_epoch, best_state, bad = score, epoch, _state_copy(model.module), 0
            else:
                bad += 1
        epochs.append(entry)
        log.info("%s epoch %d: loss %.4f%s (%.1f s)", model.name, epoch, entry["loss"],
                 f", valid NDCG@10 {entry['valid_ndcg10']:.4f}" if "valid_ndcg10" in entry else "",
                 entry["seconds"])
        bar.set_postfix(loss=f"{entry['loss']:.4f}",
                        val=f"{entry.get('valid_ndcg10', float('nan')):.4f}", best=best_epoch)
        if validator is not None and bad >= cfg.patience:
            stopped = f"early stopping (patience {cfg.patience})"
            break
        if out_of_time:
            stopped = f"time cap ({cfg.max_train_minutes} min)"
            break
    bar.close()
    if best_state is not None:
        model.module.load_state_dict(best_state)
    model.eval()
    secs = [e["seconds"] for e in epochs]
    return {"epochs": epochs, "best_epoch": best_epoch or len(epochs), "world_size": world,
            "precision": model.precision,
            "best_valid_ndcg10": None if best == -math.inf else best, "stopped": stopped,
            "train_seconds": round(time.perf_counter() - started, 2),
            "mean_epoch_seconds": round(float(np.mean(secs)), 3) if secs else 0.0,
            "peak_rss_mb": max((e["peak_rss_mb"] for e in epochs), default=0.0)}


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
