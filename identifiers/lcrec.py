"""LC-Rec's item indices: an RQ-VAE with 4 codebooks of 256 codes, Sinkhorn on the last level.

Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation", ICDE 2024, Sec. III-B: the TIGER-style RQ-VAE with L = 4 levels, where the
last level assigns the codes of a training batch with the Sinkhorn-Knopp algorithm
(ε = 0.003, 50 iterations, on centred distances) so that items spread uniformly over its codes
and collisions vanish ("uniform semantic mapping"). Identifiers are the 4 codes, with no extra
token: items still colliding after training get another free last-level code (minimum-cost
reassignment, reported as ``stats["reassigned_items"]``; see ``identifiers/quantizers.py``).
The paper encodes item text with LLaMA; the suite's default encoder is all-MiniLM-L6-v2.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.registry import register_identifier
from identifiers.quantizers import SMOKE, CodebookScheme, RQVAEConfig


@dataclass
class LCRecConfig(RQVAEConfig):
    n_levels: int = 4
    sinkhorn_levels: tuple[int, ...] = (-1,)
    collision: str = "reassign"


@register_identifier("lcrec")
class LCRec(CodebookScheme):
    """LC-Rec indices: RQ-VAE 4 x 256 codes, Sinkhorn-balanced last level, collision-free."""

    Config = LCRecConfig
    smoke_config = dict(SMOKE)
