"""Data-parallel training across processes launched by ``accelerate launch`` (or torchrun).

One process per device; the launcher sets RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous
address. Every process runs the same matrix; inside a cell:

- the training loop (:func:`benchmarks.training.train_loop`) starts from rank 0's parameters,
  gives each process every WORLD_SIZE-th batch of the SAME shuffled epoch (the same number of
  batches to every process), averages the gradients over processes (one all-reduce of the
  flattened gradients per step) before the optimiser step, validates on the main process and
  broadcasts the score, so that early stopping decides the same everywhere;
- work that is not training (identifier tokenizers, text embeddings) runs on the main process
  first (:func:`main_first`), the others then read its cached result;
- only the main process evaluates and writes results.

Outside a launcher (WORLD_SIZE unset or 1) every function here is a no-op, so the same code
runs on one CPU. CPU processes use the gloo backend, GPUs nccl (accelerate chooses).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Distributed:
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_module(self, module: torch.nn.Module) -> None:
        import torch.distributed as dist
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def average_gradients(self, module: torch.nn.Module) -> None:
        import torch.distributed as dist
        params = [p for p in module.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def broadcast_float(self, value: float) -> float:
        import torch.distributed as dist
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=0)
        return float(t.item())

    def barrier(self) -> None:
        import torch.distributed as dist
        dist.barrier()


_STATE: Distributed | None = None


def current() -> Distributed | None:
    """The process group of this launch (initialised on first use), or None when alone."""
    global _STATE
    if world_size() <= 1:
        return None
    if _STATE is None:
        import torch.distributed as dist
        if not dist.is_initialized():
            from accelerate import PartialState
            PartialState(timeout=datetime.timedelta(hours=2))
        _STATE = Distributed(dist.get_rank(), dist.get_world_size())
    return _STATE


def is_main() -> bool:
    d = current()
    return d is None or d.is_main


@contextlib.contextmanager
def main_first():
    """The main process runs the block first; the others wait, then run it (and find its
    cached result)."""
    d = current()
    if d is not None and not d.is_main:
        d.barrier()
    yield
    if d is not None and d.is_main:
        d.barrier()


def local_device(device: str) -> str:
    """``cuda`` -> ``cuda:<LOCAL_RANK>`` under a launcher."""
    if device == "cuda" and world_size() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
