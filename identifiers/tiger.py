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

import logging
from dataclasses import dataclass

from identifiers.base import IdentifierScheme, ItemIdentifiers, register_identifier
from identifiers.quantizers import RQVAEConfig, build_codebook_identifiers

log = logging.getLogger(__name__)

#: the shared smoke run on the toy dataset (30 items): tiny network and codebooks, seconds long
SMOKE = {"hidden": (64,), "codebook_size": 8, "epochs": 30, "kmeans_iters": 10}


@dataclass
class TigerConfig(RQVAEConfig):
    n_levels: int = 3
    collision: str = "token"


class CodebookScheme(IdentifierScheme):
    """Common build of the codebook schemes: text embeddings (+ CF embeddings where the config
    asks for them) -> the shared RQ-VAE -> ItemIdentifiers."""

    kind = "codes"
    needs = frozenset({"text"})
    #: overrides for the papers' training length
    paper_config: dict = {"epochs": 20000}

    def cf_embeddings(self):
        return None

    def build(self) -> ItemIdentifiers:
        if self.features is None:
            raise ValueError(f"{self.name} needs a FeatureStore (item text embeddings)")
        text = self.features.text_embeddings()[1:]
        cf = self.cf_embeddings()
        return build_codebook_identifiers(self.name, text, self.config, self.seed, cf=cf,
                                          progress=self.progress, log=log.info)


@register_identifier("tiger")
class Tiger(CodebookScheme):
    """TIGER semantic IDs: RQ-VAE 3 x 256 codes + a disambiguating 4th token."""

    Config = TigerConfig
    smoke_config = dict(SMOKE)
