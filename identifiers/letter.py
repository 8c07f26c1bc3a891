"""LETTER: the LC-Rec quantiser plus collaborative and diversity regularisation.

Wang et al., "Learnable Item Tokenization for Generative Recommendation", CIKM 2024, Sec. 4.2:
RQ-VAE with L = 4, N = 256, d = 32, Sinkhorn on the last level as LC-Rec (semantic
regularisation, Eq. 1-2), plus
- collaborative regularisation (Eq. 3): in-batch InfoNCE between the quantised embedding ẑ_i
  and the item's 32-d CF embedding h_i (SASRec item embeddings), weight α = 0.02;
- diversity regularisation (Sec. 4.2.3): constrained k-means of each codebook into K = 10
  clusters; cross-entropy pulling an item's code towards a random other code of its cluster,
  weight β = 1e-4.
Total loss Eq. 5. The formulas, the vectorised diversity term and every choice the paper leaves
open are in ``identifiers/quantizers.py``. The ranking-guided generation loss (Eq. 6) belongs
to the backbone, not to the tokenizer.

CF embeddings come from ``FeatureStore.cf_embeddings(latent_dim)``: the published LETTER file
where a dataset ships one (Beauty), else a SASRec trained on the dataset (``cf_sasrec``
overrides its config). ``alpha=0`` / ``beta=0`` give the ablations (LETTER Table 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.registry import register_identifier
from identifiers.lcrec import LCRecConfig
from identifiers.quantizers import SMOKE, CodebookScheme


@dataclass
class LetterConfig(LCRecConfig):
    alpha: float = 0.02
    beta: float = 1e-4
    diversity_clusters: int = 10
    cf_source: str = "auto"                 # FeatureStore.cf_embeddings source
    cf_sasrec: dict | None = None           # SASRec config overrides when CF embeddings are trained

    def nested_configs(self) -> dict[str, type]:
        """``cf_sasrec`` holds SASRec config fields (checked by ``build_config``)."""
        from benchmarks.registry import METHODS
        return {"cf_sasrec": METHODS.get("sasrec").Config}


@register_identifier("letter")
class Letter(CodebookScheme):
    """LETTER tokenizer: LC-Rec's RQ-VAE + CF alignment (α) + code diversity (β)."""

    Config = LetterConfig
    needs = frozenset({"text", "cf"})
    smoke_config = {**SMOKE, "diversity_clusters": 2, "recluster_every": 5,
                    "cf_sasrec": {"epochs": 2, "n_heads": 1, "inner": 16}}

    def prepare(self) -> None:
        self.cf_embeddings()   # trained through the shared loop: every process takes part

    def cf_embeddings(self):
        if self.config.alpha <= 0:
            return None
        return self.features.cf_embeddings(dim=self.config.latent_dim, source=self.config.cf_source,
                                           sasrec_config=self.config.cf_sasrec)[1:]
