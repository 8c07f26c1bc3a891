"""One process of the 2-process gloo test (tests/harness/test_distributed.py): it joins the
group (RANK, WORLD_SIZE, MASTER_ADDR / MASTER_PORT from the test), runs the scenarios through
``train_loop`` and writes what it saw to ``argv[1]`` as JSON. Run as
``python -m tests.harness._ddp_worker OUT.json``."""

import datetime
import hashlib
import json
import os
import sys
import types

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from benchmarks import training
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.protocol import ValidatorPanel
from benchmarks.registry import METHODS
from benchmarks.training import TorchRecommender, TrainConfig

RANK = int(os.environ["RANK"])


def digest(module: nn.Module) -> str:
    """The exact bits of every parameter (and dense buffer)."""
    h = hashlib.sha256()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.layout == torch.strided:
            h.update(name.encode() + t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def watch_steps(model, seen: list) -> None:
    """After every optimiser step, the parameters' digest into ``seen``."""
    make = model.optimizer

    def optimizer():
        opt = make()
        opt.register_step_post_hook(lambda *_: seen.append(digest(model.module)))
        return opt

    model.optimizer = optimizer


class _Net(nn.Module):
    """bf16 embeddings and an fp32 projection behind dropout; ``unused`` never gets a gradient."""

    def __init__(self, n_items: int):
        super().__init__()
        self.emb = nn.Embedding(n_items + 1, 8, dtype=torch.bfloat16)
        self.proj = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)
        self.unused = nn.Parameter(torch.ones(3))

    def forward(self, items):
        return self.drop(self.proj(self.emb(items).float()))


class MixedDtypes(TorchRecommender):
    """A toy model with bf16 and fp32 parameters; it records the items of every batch it builds,
    the noise it draws after taking its share, and the first dropout mask of each epoch."""

    def build(self):
        ds = self.dataset
        self.items = np.concatenate([np.asarray(s, np.int64) for s in ds.train])
        self.built, self.noise, self.masks, self.poison = [], [], [], None
        return _Net(self.n_items)

    def n_batches(self):
        return -(-len(self.items) // self.config.batch_size)

    def batches(self, rng):
        self.built.append([])
        for idx in self.shuffled_slices(rng, len(self.items)):
            self.built[-1].append(idx.tolist())
            self.noise.append(float(rng.random()))
            yield (torch.from_numpy(self.items[idx]),)

    def loss(self, batch):
        (items,) = batch
        out = self.module(items)
        if len(self.masks) < len(self.built):
            self.masks.append((out == 0).flatten().tolist())
        value = ((out - 1) ** 2).mean()
        if self.poison == (len(self.built), len(self.built[-1])):
            value = value * float("nan")
        return value

    def optimizer(self):
        return torch.optim.AdamW(self.module.parameters(), lr=1e-2, weight_decay=0.1)


def scores(values):
    """A validator returning ``values`` in turn (rank 0's decide; the others' are never read)."""
    it = iter(values)
    return lambda model: next(it)


def clock(step: float):
    """A stand-in for ``time`` whose perf_counter advances ``step`` seconds per call."""
    now = [0.0]

    def perf_counter():
        now[0] += step
        return now[0]

    return types.SimpleNamespace(perf_counter=perf_counter)


def main(out: str) -> None:
    dist.init_process_group("gloo", rank=RANK, world_size=int(os.environ["WORLD_SIZE"]),
                            timeout=datetime.timedelta(seconds=60))
    ds = toy_dataset()
    ctx = build_context(ds, seed=0, needs=frozenset(), progress=False)
    report = {}

    # LightGCN (sparse adjacency buffers) with early stopping decided by rank 0's scores
    cls = METHODS.get("lightgcn")
    model = cls(build_config(cls.Config, {**cls.smoke_config, "epochs": 8, "patience": 2, "batch_size": 64}), ctx)
    steps: list = []
    watch_steps(model, steps)
    valid = [0.1, 0.2, 0.15, 0.1, 0.3, 0.4, 0.5, 0.6] if RANK == 0 else [float(e) for e in range(8)]
    log = model.fit(scores(valid))
    report["lightgcn"] = {"steps": steps, "epochs": len(log["epochs"]), "stopped": log["stopped"],
                          "per_epoch": [e["steps"] for e in log["epochs"]], "best_epoch": log["best_epoch"],
                          "final": digest(model.module), "rank_seeds": log["rank_seeds"]}

    # two protocols in one training (a ValidatorPanel): each stops on rank 0's scores of its own
    model = cls(build_config(cls.Config, {**cls.smoke_config, "epochs": 9, "patience": 2, "batch_size": 64}), ctx)
    a = [0.1, 0.2, 0.15, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0] if RANK == 0 else [9.0] * 9
    b = [0.1, 0.2, 0.3, 0.4, 0.5, 0.45, 0.4, 0.0, 0.0] if RANK == 0 else [0.0] * 9
    panel = ValidatorPanel([scores(a), scores(b)], ["a", "b"])
    log = model.fit(panel)
    report["panel"] = {"logs": [{"epochs": len(lg["epochs"]), "best_epoch": lg["best_epoch"], "stopped": lg["stopped"],
                                 "valid": [e.get("valid_ndcg10") for e in lg["epochs"]],
                                 "shared": {k: v for k, v in lg["shared_training"].items() if k != "train_seconds"}}
                                for lg, _ in panel.outcomes],   # (each process has its own clock)
                       "returned_best": log["best_epoch"], "final": digest(model.module)}

    # bf16 + fp32 parameters, dropout, rank-sliced batches; rank 1's clock runs 10 min per call
    def mixed(**over):
        return MixedDtypes(build_config(TrainConfig, {"epochs": 3, "batch_size": 32, **over}), ctx)

    model = mixed(max_train_minutes=5.0)
    steps = []
    watch_steps(model, steps)
    if RANK == 1:
        training.time = clock(600.0)
    log = model.fit(None)
    training.time = __import__("time")
    m = model.module
    report["mixed"] = {"steps": steps, "epochs": len(log["epochs"]), "stopped": log["stopped"],
                       "per_epoch": [e["steps"] for e in log["epochs"]], "built": model.built,
                       "noise": model.noise, "masks": model.masks, "unused_grad": m.unused.grad is not None,
                       "dtypes": [str(m.emb.weight.dtype), str(m.emb.weight.grad.dtype), str(m.proj.weight.grad.dtype)],
                       "n_batches": model.n_batches()}

    # a NaN loss on rank 1 only (epoch 2, its 2nd batch): every rank raises
    model = mixed()
    if RANK == 1:
        model.poison = (2, 2)
    try:
        model.fit(None)
        report["nan"] = None
    except FloatingPointError as e:
        report["nan"] = str(e)
    report["nan_epochs_built"] = len(model.built)
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
