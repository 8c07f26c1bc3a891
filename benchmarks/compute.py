"""A cell's training compute: the FLOPs of a training step, counted from the shapes (no GPU,
no weights), and what they come to per epoch, per cell and in GPU hours.

:func:`train_step_flops` runs one forward and backward pass of a method's loss under the
suite's FLOP counter (:func:`benchmarks.evaluation.flops.flop_counter`: torch's
``FlopCounterMode`` with the CPU attention kernel and sparse products added), which counts
the matrix-multiply family (mm, addmm, bmm, baddbmm, convolutions, scaled-dot-product
attention and their backward ops): the work a GPU's tensor cores do. Attention counts its
matrix products (Q K^T and A V, and their gradients), whichever kernel runs it (a flash
kernel's backward also recomputes Q K^T, a sixth more, not added); a product with a sparse
factor (LightGCN's propagation) counts its stored entries. Not counted: element-wise ops,
gathers, reductions and embedding look-ups (MF's dot products), a small share of a
transformer's work and bound by memory traffic rather than arithmetic (a loss with no product
counts 0 and gets no figure); the optimiser's update (about ten operations per trainable
parameter); a frozen weight's gradient (autograd computes none: a LoRA step counts the
adapters' and the activations' gradients only).

A module built on the meta device (a 1.5 B-parameter decoder or any model an estimate builds
from its shape) is counted without allocating anything: the batch stays a real CPU tensor
and each operation that meets a meta tensor sees its real inputs as meta tensors of the same
shape (:class:`_MetaWhereWeights`), so the data-dependent steps on the batch itself (trimming
the padding, picking the history items) run on the real values. Two reads of a meta tensor's
value are answered without data: a boolean (transformers asks whether an attention mask is
all ones, to skip it) is answered True, which changes no product's shape; ``unique`` over rows
(SETRec-T5's shared position bias) answers "every row distinct", which feeds only an embedding
look-up. Any other value read raises. ``tests/harness/test_compute.py`` checks that a
method's count on the meta device equals its count on a real module, and the counter against
the 2 m n k of a bare product, the explicit products of attention and a sparse product's
entries.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from benchmarks.evaluation.flops import flop_counter

#: the sustained rate a projected GPU hour assumes: 40 % of an H100 SXM's dense bf16 peak
#: (989 TFLOP/s). A floor for small models: a 5 M-parameter T5 step is bound by kernel
#: launches and memory traffic long before the tensor cores (the GPU run measures that).
GPU_PEAK_TFLOPS = 989.0
GPU_UTILISATION = 0.4
#: the estimate's column of those hours, named by the rate
GPU_HOURS_LABEL = f"GPU h/cell training, at {GPU_UTILISATION:.0%} of {GPU_PEAK_TFLOPS:g} TFLOP/s"


class _MetaWhereWeights(TorchDispatchMode):
    """Run an op on the meta device where any of its tensors is a meta tensor (the real ones
    replaced by meta tensors of their shape and dtype); ops on real tensors only run for real."""

    _SCALAR_READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not any(t.is_meta for t in tensors):
            return func(*args, **kwargs)
        if func in self._SCALAR_READS:
            if args[0].dtype == torch.bool:
                return True
            raise RuntimeError(f"the FLOP count read the value of a meta {args[0].dtype} tensor "
                               f"({func}): this loss's shapes depend on values the meta device lacks")
        if func is torch.ops.aten.unique_dim.default:        # every row distinct
            x = args[0]
            rows = x.shape[args[1] if len(args) > 1 else kwargs.get("dim", 0)]
            return (x, torch.empty(rows, dtype=torch.long, device="meta"),
                    torch.empty(rows, dtype=torch.long, device="meta"))
        meta = lambda a: torch.empty_like(a, device="meta") if isinstance(a, torch.Tensor) and not a.is_meta else a
        args, kwargs = tree_map(meta, args), tree_map(meta, kwargs)
        if kwargs.get("device") is not None:
            kwargs["device"] = torch.device("meta")
        return func(*args, **kwargs)


def count_flops(fn) -> int:
    """The matrix-multiply FLOPs of calling ``fn()``, by the suite's one counter
    (:func:`benchmarks.evaluation.flops.flop_counter`)."""
    with flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


def train_step_flops(model, batch: Any) -> int:
    """FLOPs of one forward and backward pass of ``model.loss(batch)`` (a
    :class:`~benchmarks.training.TorchRecommender`): on the meta device where its module is
    there, else for real on its device with the random generators left as they were and no
    gradient kept. The module is left in train mode (the loss's mode)."""
    module = model.module
    meta = any(p.is_meta for p in module.parameters())
    model.train()

    def step():
        loss = model.loss(batch)
        if loss.requires_grad:
            loss.backward()

    device = next(iter(module.parameters()), torch.empty(0)).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if meta:
            with _MetaWhereWeights():
                flops = count_flops(step)
        else:
            flops = count_flops(step)
    for p in module.parameters():
        p.grad = None
    return flops


def projected_compute(model, batch: Any) -> dict:
    """A cell's training compute from one counted step at ``batch`` (the widest of an epoch's
    first batches, so an upper bound per step): TFLOP per optimiser step, PFLOP per epoch
    (x ``n_batches``) and per cell (x ``epochs``, no early stop: an upper bound), and the GPU
    hours of the cell's training at :data:`GPU_UTILISATION` of :data:`GPU_PEAK_TFLOPS` (a
    floor: see there). Empty where nothing is counted (no dense product, or no batch)."""
    if batch is None:
        return {}
    flops = train_step_flops(model, batch)
    if flops <= 0:
        return {}
    out: dict = {"train_tflop_step": float(f"{flops / 1e12:.3g}")}
    steps, epochs = model.n_batches(), model.config.epochs       # a TorchRecommender's (None: unknown)
    if steps and epochs:
        cell = flops * steps * epochs
        out["train_pflop_epoch"] = float(f"{flops * steps / 1e15:.3g}")
        out["train_pflop_cell"] = float(f"{cell / 1e15:.3g}")
        out["gpu_train_hours"] = float(f"{cell / (GPU_PEAK_TFLOPS * 1e12 * GPU_UTILISATION) / 3600:.3g}")
    return out
