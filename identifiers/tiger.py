"""TIGER's semantic IDs: an RQ-VAE with 3 codebooks of 256 codes plus a disambiguating token.

Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023, Sec. 3.1: item
text embedding -> RQ-VAE (MLP encoder 512-256-128 with ReLU, latent d = 32, 3 levels x 256
codes, k-means initialisation on the first batch, straight-through estimator, μ = 0.25) ->
three codes; items that share all three get a 4th token 0, 1, 2 ... so that identifiers are
unique. No Sinkhorn, no collaborative or diversity term. All of it is the shared quantiser of
``identifiers/quantizers.py`` (see its docstring for every choice the paper leaves open).

Text encoder: the paper uses Sentence-T5; the suite's default is all-MiniLM-L6-v2 (384-d,
``FeatureStore.text_embeddings``). Optimiser: the paper trains with Adagrad (lr 0.4); the suite
trains all three codebook schemes with LETTER's AdamW 1e-3 so that the comparison isolates the
identifier design (``optimizer="adagrad", lr=0.4`` gives TIGER's). Epochs: the paper trains
20k epochs; ``paper_config`` sets that, the default (300) is a CPU-sized run.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.registry import register_identifier
from identifiers.quantizers import SMOKE, CodebookScheme, RQVAEConfig


@dataclass
class TigerConfig(RQVAEConfig):
    n_levels: int = 3
    collision: str = "token"


@register_identifier("tiger")
class Tiger(CodebookScheme):
    """TIGER semantic IDs: RQ-VAE 3 x 256 codes + a disambiguating 4th token."""

    Config = TigerConfig
    smoke_config = dict(SMOKE)
