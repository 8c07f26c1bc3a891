"""Data-parallel training across processes launched by ``accelerate launch`` (or torchrun).

One process per device; the launcher sets RANK / WORLD_SIZE / LOCAL_RANK and the rendezvous
address. Every process runs the same matrix; inside a cell:

- the training loop (:func:`benchmarks.training.train_loop`) starts from rank 0's parameters
  (:meth:`Distributed.broadcast_module`: dense parameters and buffers are broadcast; sparse
  buffers, LightGCN's adjacency, are built by every process from the same data and only
  compared), gives each process every WORLD_SIZE-th batch of the SAME shuffled epoch (the same
  number of batches to every process; a method's ``batches`` builds only its own share, see
  ``TorchRecommender.share``), averages the gradients over processes before the optimiser step
  (:meth:`Distributed.average_gradients`: one all-reduce per dtype bucket), seeds each
  process's dropout and sampling apart (:func:`rank_seed`), and takes every decision that ends
  training on the main process and broadcasts it: the time cap (one clock), the validation score
  and early stopping, so that all processes stop after the same epoch; a non-finite loss on any
  process stops all of them (:meth:`Distributed.any_flag` at the loop's check points);
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

#: rank r > 0 of a data-parallel cell seeds its dropout and sampling with seed + r * this
RANK_SEED_STRIDE = 1_000_003

#: most elements one gradient all-reduce carries (a bucket's float32 copy: 64 MiB)
BUCKET_ELEMENTS = 2 ** 24


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process ``rank``'s dropout and batch sampling in a data-parallel cell of
    ``seed``: rank 0 keeps ``seed`` (it is the run's stream), rank r adds r * RANK_SEED_STRIDE."""
    return seed + rank * RANK_SEED_STRIDE


def _sparse_digest(t: torch.Tensor) -> torch.Tensor:
    """A float64 summary of a sparse tensor (shape, stored count, sums of its values and
    indices) that two processes compare instead of broadcasting the tensor."""
    if t.layout == torch.sparse_coo:
        t = t.coalesce()
        parts = [t.values(), t.indices()]
    elif t.layout == torch.sparse_csr:
        parts = [t.values(), t.crow_indices(), t.col_indices()]
    else:
        raise TypeError(f"not a sparse tensor: layout {t.layout}")
    head = [float(s) for s in t.shape] + [float(parts[0].numel())]
    sums = [p.double().sum().reshape(1) for p in parts]
    weighted = [(p.reshape(-1).double() * torch.arange(p.numel(), dtype=torch.float64, device=p.device)
                 .remainder(977)).sum().reshape(1) for p in parts]
    return torch.cat([torch.tensor(head, dtype=torch.float64, device=t.device), *sums, *weighted])


@dataclass
class Distributed:
    rank: int
    world: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where a tensor for a collective lives: the current GPU under nccl, else the CPU."""
        import torch.distributed as dist
        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and dense buffers to every process. A sparse buffer (LightGCN's
        COO and CSR adjacency) cannot be broadcast; each process builds it from the same data,
        and a summary of it is compared with rank 0's: a difference is a RuntimeError naming
        the buffer."""
        import torch.distributed as dist
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t.layout == torch.strided:
                dist.broadcast(t.data, src=0)
                continue
            mine = _sparse_digest(t.data).to(self.comm_device)
            theirs = mine.clone()
            dist.broadcast(theirs, src=0)
            if not torch.equal(mine, theirs):
                raise RuntimeError(f"data-parallel training: the sparse buffer {name!r} built by rank "
                                   f"{self.rank} differs from rank 0's (it must be built identically "
                                   f"from the data on every process)")

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Every trainable parameter's gradient replaced by its mean over processes.

        Gradients are all-reduced in buckets of one dtype (at most :data:`BUCKET_ELEMENTS`
        each; bf16 / fp16 ones summed in float32) and written back in the parameter's own dtype.
        A parameter without a gradient on some process counts as a zero gradient there; one
        without a gradient on every process keeps none (so the optimiser skips it, as it would
        alone) -- which needs one small all-reduce of who has what, read by the host, per step."""
        import torch.distributed as dist
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        for p in params:
            if p.grad is not None and p.grad.layout != torch.strided:
                raise TypeError("data-parallel training: sparse gradients are not supported "
                                f"(a parameter of shape {tuple(p.shape)} has one)")
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.comm_device)
        dist.all_reduce(has)
        live = [p for p, n in zip(params, has.tolist()) if n > 0]
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        buckets: dict[tuple, list[list[torch.nn.Parameter]]] = {}
        for p in live:
            chain = buckets.setdefault((p.grad.dtype, p.grad.device), [[]])
            if chain[-1] and sum(q.numel() for q in chain[-1]) + p.numel() > BUCKET_ELEMENTS:
                chain.append([])
            chain[-1].append(p)
        for (dtype, _), chain in buckets.items():
            wide = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
            for bucket in chain:
                flat = torch.cat([p.grad.reshape(-1).to(wide) for p in bucket])
                dist.all_reduce(flat)
                flat /= self.world
                offset = 0
                for p in bucket:
                    n = p.numel()
                    p.grad.copy_(flat[offset:offset + n].view_as(p.grad))   # back in the parameter's dtype
                    offset += n

    def broadcast_floats(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every process (float64)."""
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def broadcast_float(self, value: float) -> float:
        return self.broadcast_floats([value])[0]

    def all_ranks(self, value: torch.Tensor) -> torch.Tensor:
        """Every process's float64 scalar ``value`` (a tensor of WORLD_SIZE, on the host), for
        a decision every process must take alike (a non-finite loss on any of them)."""
        import torch.distributed as dist
        t = torch.zeros(self.world, dtype=torch.float64, device=self.comm_device)
        t[self.rank] = value.to(device=t.device, dtype=torch.float64)
        dist.all_reduce(t)
        return t.cpu()

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
