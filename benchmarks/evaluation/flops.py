"""What a ranking costs in arithmetic, for the benchmark scripts that compare decodings at equal
model size (``bench_setrec``, ``bench_rpg``): the counted FLOPs of one call, per user, and the
parameters of a T5's transformer blocks (the size the comparison holds equal).

FLOPs are COUNTED, not timed (``torch.utils.flop_counter``: matrix products and attention):
the best speed-up a compute-bound machine can show. Gathers, sorts and top-k cost no FLOPs
there, which is why a gather-based ranking (RPG's) counts only its network.
"""

from __future__ import annotations

from typing import Callable

import torch


def counted_gflop(fn: Callable[[], object], n_users: int, *models: torch.nn.Module) -> float:
    """Counted multiply-adds x 2 of ``fn()`` (one batch of ``n_users``), per user, in GFLOP.
    The models' parameters are frozen meanwhile: the counter's module hooks reject the
    grad-requiring views that no_grad creates of parameters (e.g. SETRec's expanded queries)."""
    from torch.utils.flop_counter import FlopCounterMode

    if n_users < 1:
        raise ValueError(f"counted_gflop: n_users must be at least 1, got {n_users}")
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    counter = FlopCounterMode(display=False)
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad(), counter:
            fn()
    finally:
        for p in params:
            p.requires_grad_(True)
    return counter.get_total_flops() / n_users / 1e9


def block_parameters(module: torch.nn.Module) -> int:
    """Parameters of a T5's transformer blocks and final norms (embeddings and heads excluded)."""
    return sum(p.numel() for n, p in module.named_parameters() if ".block." in n or "final_layer_norm" in n)
