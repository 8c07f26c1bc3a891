"""What a ranking costs in arithmetic, for the benchmark scripts that compare decodings at equal
model size (``bench_setrec``, ``bench_rpg``): the counted FLOPs of one call, per user, and the
parameters of a transformer's blocks (the size the comparison holds equal).

FLOPs are COUNTED, not timed (``torch.utils.flop_counter``: matrix products and attention):
the best speed-up a compute-bound machine can show. Gathers, sorts and top-k cost no FLOPs
there, which is why a gather-based ranking (RPG's) counts only its network. torch's counter
has no formula for the CPU kernel of ``scaled_dot_product_attention``
(``_scaled_dot_product_flash_attention_for_cpu``, what transformers' ``sdpa`` attention runs
on a CPU) and would count that attention as zero; :func:`flop_counter` adds the formula torch
uses for its GPU kernels (two matrix products, the causal half not subtracted) and, for its
backward, the gradients' four products (without the recomputation of Q K^T a flash kernel does,
which is also what the meta device, where attention decomposes into products, counts). It also
counts a product with a sparse factor by the factor's stored entries (torch's counter takes
every product as dense: LightGCN's 34k x 34k adjacency would count 2 x 34k^2 x 64 per layer
instead of 2 x its 0.3 M entries x 64). The training-step counts of the estimate
(:mod:`benchmarks.compute`) use the same counter.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch


def counted_gflop(fn: Callable[[], object], n_users: int, *models: torch.nn.Module) -> float:
    """Counted multiply-adds x 2 of ``fn()`` (one batch of ``n_users``), per user, in GFLOP.
    The models' parameters are frozen meanwhile: the counter's module hooks reject the
    grad-requiring views that no_grad creates of parameters (e.g. SETRec's expanded queries)."""
    if n_users < 1:
        raise ValueError(f"counted_gflop: n_users must be at least 1, got {n_users}")
    counter = flop_counter()
    with frozen(*models), torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() / n_users / 1e9


@contextlib.contextmanager
def frozen(*models: torch.nn.Module):
    """The models' trainable parameters set to ``requires_grad=False`` for the block, restored
    after it (what counting under no_grad needs, see :func:`counted_gflop`)."""
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _cpu_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                                 **kwargs) -> int:
    return 2 * _cpu_attention_flop(query_shape, key_shape, value_shape)      # four products, the forward's two


def _product_flop(a: torch.Tensor, b: torch.Tensor) -> int:
    """A x B: 2 m n k dense; with a sparse factor, 2 x its stored entries x the dense side's other
    dimension."""
    if a.layout != torch.strided:
        return 2 * a._nnz() * b.shape[1]
    if b.layout != torch.strided:
        return 2 * b._nnz() * a.shape[0]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _mm_flop(a, b, *args, out_val=None, **kwargs) -> int:
    return _product_flop(a, b)


def _addmm_flop(bias, a, b, *args, out_val=None, **kwargs) -> int:
    return _product_flop(a, b)


for _f in (_mm_flop, _addmm_flop):
    _f._get_raw = True        # torch's counter passes these the tensors (their layout), not shapes


def flop_counter():
    """A ``FlopCounterMode`` (no display) that also counts the CPU attention kernel (forward and
    backward) and sparse products by their entries (see the module doc)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flop,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flop,
        aten.mm: _mm_flop, aten.addmm: _addmm_flop, aten._sparse_addmm: _addmm_flop})


def block_parameters(module: torch.nn.Module) -> int:
    """Parameters of a transformer's blocks and final norms, embeddings and heads excluded: a
    T5's ``block`` lists and ``final_layer_norm``, a Qwen2 / LLaMA's ``layers`` and ``norm``."""
    def is_block(name: str) -> bool:
        parts = name.split(".")
        return "block" in parts or "layers" in parts or (len(parts) > 1 and parts[-2] in ("final_layer_norm", "norm"))
    return sum(p.numel() for n, p in module.named_parameters() if is_block(n))
