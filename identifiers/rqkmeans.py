"""RQ-KMeans semantic ids: residual k-means over the item text embeddings (GRID, OneRec).

Ju et al., "Generative Recommendation with Semantic IDs: A Practitioner's Handbook" (GRID, CIKM
2025; snap-research/GRID ``configs/experiment/rkmeans_train_flat.yaml``); Deng et al., "OneRec"
(Kuaishou 2025, arXiv 2502.18965), whose tokenizer is residual (balanced) k-means as well. No
encoder, no decoder, no loss: L levels of k-means, level l clustering the residuals left by
levels 0..l-1:

    r_0 = x (item text embedding);  for l = 0..L-1:
        r_l <- r_l / ||r_l||            (``normalize_residuals``, GRID's default)
        C_l = kmeans(r_l, K)            (k-means++ seeding, Lloyd iterations; spherical, i.e.
                                         unit-norm centres, where the inputs are normalised)
        c_l = argmin_k ||r_l - C_l[k]||²,   r_{l+1} = r_l - C_l[c_l]

Defaults: 3 levels x 256 codes (TIGER's codebook sizes, as the issue asks; GRID sweeps widths
and depths), 100 Lloyd iterations. The k-means is the project's one implementation
(``identifiers.quantizers.kmeans``, full-batch Lloyd on torch, empty clusters re-seeded with the
farthest points), seeded from the cell seed through one torch generator that every level draws
from in turn, so the codes are a deterministic function of the embeddings and the seed. GRID
trains its k-means by mini-batch SGD (lr 0.5) over item batches; the catalogues here fit in
memory, and full-batch Lloyd is what mini-batch k-means approximates. OneRec balances its
clusters; this scheme does not (GRID does not).

With normalised residuals the centres are kept at unit norm too (spherical k-means: nearest
centre = most cosine-similar). Plain Euclidean means of unit vectors collapse here: an item
alone in its level-0 cluster has a zero residual, the zero residuals form a centre at the
origin, and a centre near the origin is nearer to EVERY unit vector than the centres of the
actual clusters, so the next level puts almost every item into one code (measured on ML-100K,
1,349 items, 3 x 256, seed 0: 79 % of items in one level-2 code and a collision rate of 0.557
with plain means; 19 % and 0.093 with unit-norm centres; 0.388 without normalising at all).

Collisions (items whose L codes coincide), ``collision``:
  - ``"extra-token"`` (default; TIGER's rule): a last token 0, 1, 2 ... numbers the items that
    share the L codes, in item order; its level is sized to the largest group.
  - ``"ties"``: identifiers are the L codes alone, so items that share them share their
    identifier (``ItemIdentifiers.ties``). A decoder that generates such an identifier returns
    every item behind it with the same score (the generative method lists tied items in item
    order, the harness's tie rule); the collision rate says how often that happens.

Arrays for the analyses: ``quantized`` (Σ_l C_l[c_l], in the text embedding's dimension; with
normalised residuals this is the sum of the chosen unit-scale centroids, not a reconstruction
of x), ``codebook_0`` and ``codebooks`` [L, K, d]. Stats: per-level code usage, collisions, and
``residual_mse``: the mean squared norm of each level's residual r_{l+1} (with normalised
residuals each level's input has unit norm, so 1 - residual_mse[l] is the share of its input's
energy that level's centroids explain).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.errors import ConfigError
from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers
from identifiers.quantizers import (LEVEL_LETTERS, code_usage, collision_report,
                                    disambiguation_token, kmeans, level_tokens, squared_distances)

log = logging.getLogger(__name__)

COLLISION_POLICIES = ("extra-token", "ties")


@dataclass
class RQKMeansConfig:
    n_levels: int = 3
    codebook_size: int = 256
    kmeans_iters: int = 100
    normalize_residuals: bool = True     # L2-normalise each level's input (GRID)
    collision: str = "extra-token"       # "extra-token" (TIGER's last token) | "ties"

    def validate(self) -> None:
        """Raise ConfigError naming the first field the scheme cannot run with."""
        if self.collision not in COLLISION_POLICIES:
            raise ConfigError(f"rq-kmeans collision: expected one of {', '.join(COLLISION_POLICIES)}, "
                              f"got {self.collision!r}")
        for key, low in (("n_levels", 1), ("codebook_size", 2), ("kmeans_iters", 1)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"rq-kmeans {key}: expected an integer >= {low}, got {value!r}")
        if self.n_levels + (self.collision == "extra-token") > len(LEVEL_LETTERS):
            raise ConfigError(f"rq-kmeans n_levels: at most {len(LEVEL_LETTERS) - 1} levels can be "
                              f"named, got {self.n_levels}")


def residual_kmeans(x: np.ndarray, cfg: RQKMeansConfig, seed: int,
                    device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Codes [n, L], centroids [L, K, d] and the mean squared norm of each level's residual
    [L] of residual k-means on the rows of ``x`` (see the module docstring), computed on
    ``device`` (its own random generator), returned in host memory."""
    gen = torch.Generator(device=device).manual_seed(seed)
    residual = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(device)
    codes, books, mse = [], [], []
    for _ in range(cfg.n_levels):
        if cfg.normalize_residuals:
            residual = F.normalize(residual, dim=1)
        centres = kmeans(residual, cfg.codebook_size, cfg.kmeans_iters, gen, spherical=cfg.normalize_residuals)
        c = squared_distances(residual, centres).argmin(1)
        residual = residual - centres[c]
        codes.append(c)
        books.append(centres)
        mse.append(float(residual.pow(2).sum(1).mean()))
    return {"codes": torch.stack(codes, 1).cpu().numpy().astype(np.int64),
            "codebooks": torch.stack(books).cpu().numpy().astype(np.float32),
            "residual_mse": np.asarray(mse)}


@register_identifier("rq-kmeans")
class RQKMeans(IdentifierScheme):
    """RQ-KMeans semantic ids (GRID, OneRec): residual k-means, 3 x 256 codes, a collision policy."""

    kind = "codes"
    family = "codebook"
    Config = RQKMeansConfig
    needs = frozenset({"text"})
    smoke_config = {"codebook_size": 8, "kmeans_iters": 10}
    trains_on_device = True

    def build(self) -> ItemIdentifiers:
        cfg = self.config
        cfg.validate()
        if self.features is None:
            raise ValueError(f"{self.name} needs a FeatureStore (item text embeddings)")
        text = self.features.text_embeddings()[1:]
        start = time.perf_counter()
        out = residual_kmeans(text, cfg, self.seed, self.device)
        codes, books = out["codes"], out["codebooks"]
        stats = {"collision_policy": cfg.collision, "collisions_before": collision_report(codes),
                 "residual_mse": [round(v, 6) for v in out["residual_mse"].tolist()]}
        sizes = [cfg.codebook_size] * cfg.n_levels
        full = codes
        if cfg.collision == "extra-token":
            extra = disambiguation_token(codes)
            full = np.concatenate([codes, extra[:, None]], 1)
            sizes = sizes + [int(extra.max()) + 1]
        stats["collisions_after"] = collision_report(full)
        stats["code_usage"] = code_usage(full, sizes)
        stats["build_seconds"] = round(time.perf_counter() - start, 2)
        levels = [level_tokens(lvl, size) for lvl, size in enumerate(sizes)]
        tokens = [tuple(levels[lvl][c] for lvl, c in enumerate(row)) for row in full.tolist()]
        quantized = np.zeros((len(codes) + 1, books.shape[2]), np.float32)
        quantized[1:] = books[np.arange(cfg.n_levels)[None, :], codes].sum(1)
        log.info("%s: %d levels x %d codes, collisions %d -> %d (%s)", self.name, cfg.n_levels,
                 cfg.codebook_size, stats["collisions_before"]["collided_items"],
                 stats["collisions_after"]["collided_items"], cfg.collision)
        return ItemIdentifiers(self.name, "codes", tokens, vocab=[t for lv in levels for t in lv],
                               levels=levels, n_semantic_levels=cfg.n_levels, stats=stats,
                               arrays={"quantized": quantized, "codebook_0": books[0], "codebooks": books},
                               ties=cfg.collision == "ties")
