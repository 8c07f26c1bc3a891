"""The one residual-quantisation module behind every codebook identifier (TIGER, LC-Rec, LETTER).

Papers: Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER, NeurIPS 2023);
Zheng et al., "Adapting Large Language Models by Integrating Collaborative Semantics for
Recommendation" (LC-Rec, ICDE 2024); Wang et al., "Learnable Item Tokenization for Generative
Recommendation" (LETTER, CIKM 2024). The three schemes are configurations of :class:`RQVAEConfig`
(``identifiers/tiger.py``, ``lcrec.py``, ``letter.py``: a Config subclass with the paper's defaults
and a :class:`CodebookScheme` subclass each); nothing here is scheme-specific.

Model (LETTER Sec. 4.2.1; TIGER Sec. 3.1)
    s (item text embedding) -> MLP encoder -> z (d = 32) -> L levels of residual quantisation
    (Eq. 1: c_l = argmin_i ||r_{l-1} - e_{l,i}||², r_l = r_{l-1} - e_{l,c_l}, r_0 = z) ->
    ẑ = Σ_l e_{l,c_l} -> MLP decoder -> ŝ. Encoder: Linear+ReLU through ``hidden``
    (TIGER's 512, 256, 128), a final Linear to d without activation; the decoder mirrors it.
    No dropout or batch norm (the papers mention none; the LETTER/LC-Rec code defaults are off).
    Weights Xavier-normal, biases zero (as the LETTER/LC-Rec code).
    Straight-through estimator: the decoder sees ẑ = z + sg[Σ e - z], so the reconstruction
    gradient reaches the encoder as if quantisation were the identity.

Input scale (``standardize``, default on; the papers say nothing)
    The inputs are centred on the items' mean and divided by ONE scalar, their elements'
    standard deviation (distances between items change by a constant factor only); the
    reconstruction target is the standardised input. Why: under Adam the first steps move every
    weight by about lr whatever the loss scale, so what matters is the latent spread relative
    to lr. LETTER's LLaMA embeddings have elements of order 1; MiniLM's unit-norm 384-d vectors
    have elements of order 0.05. Measured on ML-100K (MiniLM, TIGER config, 1,000 steps): raw
    inputs collapse to 1-2 codes per level within 50 steps and never recover; standardised
    inputs end with 187/233/256 codes used on the three levels.

Loss (Eq. 2, 3, 5)
    L = L_recon + Σ_l (||sg[r_{l-1}] - e_{l,c_l}||² + μ ||r_{l-1} - sg[e_{l,c_l}]||²)
        + α L_CF + β Σ_l L_Div,l
    - ||·||² is the MEAN squared error over a vector's elements and over the batch (as
      F.mse_loss in the TIGER/LC-Rec/LETTER implementations). A sum over elements would scale
      each term by its dimension (384 for s, 32 for z) and change the balance that μ, α, β were
      tuned for.
    - Residuals inside the loss are r_l = r_{l-1} - sg[e_{l,c_l}]: every level's commitment term
      trains the encoder and each codebook is moved only by its own codebook term. (Chaining the
      residuals through the straight-through outputs, as the LETTER/LC-Rec code does, gives the
      commitment terms of levels ≥ 2 zero gradient; Eq. 2 intends them to act.)
    - Levels are SUMMED (Eq. 2). ``level_reduction="mean"`` averages them instead, which is what
      the authors' released code does (it scales the quantisation and diversity terms by 1/L).
    - L_CF (Eq. 3) is the in-batch InfoNCE between ẑ_i and the item's CF embedding h_i, written in
      the standard log-softmax form  -1/B Σ_i log( exp<ẑ_i,h_i> / Σ_j exp<ẑ_i,h_j> )  (the
      printed Eq. 3 omits the log; the authors' code is this cross-entropy). Plain inner
      products, no temperature, no normalisation, both 32-d, as in the paper. ẑ is the
      straight-through output, so L_CF trains the encoder (the codes follow through the
      assignment), not the code vectors.
    - L_Div (Sec. 4.2.3; the formula is missing from the paper's text): the code vectors of each
      codebook are clustered into K = 10 equal-size clusters (constrained k-means). For an item
      assigned code c at level l: x = e_{l,c} (the chosen code vector), logits = x · E_lᵀ with
      entry c masked to -inf, target = a code drawn uniformly from c's cluster other than c;
      cross-entropy. It pulls a code towards its cluster mates and away from the other codes,
      spreading the clusters — LETTER Fig. 5/7. Applied to every level (the authors' code does).
      Fully vectorised: the random "other member" is drawn for the whole batch at once
      (:func:`sample_cluster_targets`).
    - Re-clustering: before the first epoch and every ``recluster_every`` epochs (default 10).
      The authors re-cluster before every epoch of 20k; on CPU that would dominate the run
      (4 constrained k-means per epoch), and with AdamW at 1e-3 the code vectors move little
      in 10 epochs. Clusters are EQUAL-SIZE (sizes floor(N/K) or ceil(N/K)), the "constrained
      k-means" of the paper; the authors' code uses loose bounds (10 to 60 codes per cluster),
      set ``cluster_size_bounds`` to reproduce that. Library: k-means-constrained (the one the
      authors use; min-cost-flow assignment step).

Sinkhorn-Knopp (LC-Rec Sec. III-B; LETTER uses it as LC-Rec does)
    On the levels in ``sinkhorn_levels`` (LC-Rec/LETTER: the last), a TRAINING batch is assigned
    by a balanced transport plan instead of argmin: squared distances are centred to [-1, 1]
    ((d - mid) / half-range over the batch), Q ∝ exp(-d / ε) with ε = 0.003, 50 alternating
    normalisations to row sums 1/B and column sums 1/N (float64, rows pre-scaled so that
    nothing overflows), code = argmax of the item's row.
    At the end of training codes are assigned by plain argmin, as in the authors'
    index-generation scripts (``final_sinkhorn=True`` assigns the Sinkhorn levels with one plan
    over all items instead).

Codebook initialisation
    k-means (k-means++ seeding, ``kmeans_iters`` Lloyd iterations, own torch code) on the first
    training batch, level by level on that batch's residuals (TIGER Sec. 3.1). Where the batch
    has fewer points than codes (tiny datasets), the extra codes are batch points plus small
    noise.

Collisions (items sharing all semantic codes)
    - ``collision="token"`` (TIGER): a last token 0, 1, 2 ... numbers the items sharing the L
      codes (in item order); its level is sized to the largest collision group.
    - ``collision="reassign"`` (LC-Rec/LETTER): the identifiers must be unique with L tokens.
      Within each group of items sharing the first L-1 codes, one item per duplicated code
      keeps it (the one whose last residual is nearest to that code); the others get the
      FREE last-level codes of their prefix group by a minimum-cost assignment (Hungarian,
      cost = squared distance of the item's last residual to the code vector). This is the
      nearest-free-code rule made globally optimal per group, and it always ends collision-free
      (unless a prefix group has more than N items, reported as an error). The authors instead
      re-run Sinkhorn on each collision group up to 20 times, which does not guarantee
      uniqueness: their released Yelp index still has 415 duplicated tuples.

Training: AdamW (lr 1e-3, weight decay 1e-4 as the LETTER code), batch 1024, ``epochs`` epochs
(LETTER: 20,000 — the CPU default here is far smaller, see each scheme's ``paper_config``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.errors import ConfigError
from identifiers.base import IdentifierScheme, ItemIdentifiers

log = logging.getLogger(__name__)

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class RQVAEConfig:
    """The shared quantiser's settings; each scheme's Config subclasses this with its defaults."""

    # architecture
    hidden: tuple[int, ...] = (512, 256, 128)
    latent_dim: int = 32
    n_levels: int = 3
    standardize: bool = True                # centre the inputs, scale them to unit element std
    codebook_size: int = 256
    # loss
    mu: float = 0.25                        # commitment weight (Eq. 2)
    level_reduction: str = "sum"            # "sum" (Eq. 2) or "mean" (authors' code)
    alpha: float = 0.0                      # collaborative regularisation weight (Eq. 5)
    beta: float = 0.0                       # diversity regularisation weight (Eq. 5)
    diversity_clusters: int = 10            # K
    recluster_every: int = 10               # epochs between constrained k-means re-clusterings
    cluster_size_bounds: tuple[int, ...] = ()   # () = equal sizes; (min, max) = loose bounds
    # balanced assignment
    sinkhorn_levels: tuple[int, ...] = ()   # level indices (negative = from the end)
    sinkhorn_epsilon: float = 0.003
    sinkhorn_iters: int = 50
    final_sinkhorn: bool = False            # final codes: Sinkhorn over all items on those levels
    # training
    epochs: int = 300
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"                # "adamw" or "adagrad" (TIGER's paper: Adagrad 0.4)
    kmeans_init: bool = True
    kmeans_iters: int = 100
    # identifiers
    collision: str = "token"                # "token" (TIGER) or "reassign" (LC-Rec, LETTER)

    def validate(self) -> None:
        """Raise ConfigError on a setting the quantiser cannot run with."""
        if self.n_levels < 1 or self.codebook_size < 2:
            raise ConfigError("n_levels must be >= 1 and codebook_size >= 2")
        if self.level_reduction not in ("sum", "mean"):
            raise ConfigError(f"level_reduction must be 'sum' or 'mean', got {self.level_reduction!r}")
        if self.collision not in ("token", "reassign"):
            raise ConfigError(f"collision must be 'token' or 'reassign', got {self.collision!r}")
        if self.optimizer not in ("adamw", "adagrad"):
            raise ConfigError(f"optimizer must be 'adamw' or 'adagrad', got {self.optimizer!r}")
        if self.beta > 0 and not 2 <= self.diversity_clusters <= self.codebook_size // 2:
            raise ConfigError(f"diversity_clusters must be in [2, codebook_size/2] so that every "
                             f"cluster has another member; got {self.diversity_clusters} for "
                             f"{self.codebook_size} codes")
        if self.cluster_size_bounds and len(self.cluster_size_bounds) != 2:
            raise ConfigError("cluster_size_bounds: () or (min, max)")
        for lvl in self.sinkhorn_levels:
            if not -self.n_levels <= lvl < self.n_levels:
                raise ConfigError(f"sinkhorn level {lvl} out of range for {self.n_levels} levels")
        if self.n_levels > len(LEVEL_LETTERS) - (self.collision == "token"):
            raise ConfigError("too many levels to name")

    def sinkhorn_set(self) -> frozenset[int]:
        return frozenset(lvl % self.n_levels for lvl in self.sinkhorn_levels)


# ============================================================================ building blocks
def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers through ``dims`` with ReLU between them (none after the last); optional
    dropout before each layer; weights Xavier-normal, biases zero. (The RQ-VAE's and SETRec's
    autoencoders.)"""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if dropout:
            layers.append(nn.Dropout(dropout))
        lin = nn.Linear(a, b)
        nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """[B, N] squared Euclidean distances between rows of ``x`` [B, d] and ``codebook`` [N, d]."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.T + codebook.pow(2).sum(1)[None]).clamp_min(0)


def centre_distances(d: torch.Tensor) -> torch.Tensor:
    """Map distances affinely onto [-1, 1] over the whole matrix (LC-Rec's centring), so that
    Sinkhorn's ε has the same meaning whatever the scale of the latent space."""
    lo, hi = d.min(), d.max()
    mid = (hi + lo) / 2
    return (d - mid) / (hi - mid + 1e-5)


@torch.no_grad()
def sinkhorn(cost: torch.Tensor, epsilon: float = 0.003, iters: int = 50) -> torch.Tensor:
    """Sinkhorn-Knopp plan for ``cost`` [B, N]: starting from exp(-cost/ε), alternately scale
    rows to total 1/B and columns to total 1/N. Returns the plan times B: rows sum to (about) 1
    — an assignment distribution per item — and every column to (exactly, the last step being
    the column one) B/N. float64; each row of exp(-cost/ε) is first divided by its largest
    entry (a row scaling, which Sinkhorn's fixed point absorbs), so nothing overflows."""
    b, n = cost.shape
    c = cost.double()
    q = torch.exp(-(c - c.min(1, keepdim=True).values) / epsilon)
    q /= q.sum()
    tiny = torch.finfo(torch.float64).tiny
    for _ in range(iters):
        q /= q.sum(1, keepdim=True).clamp_min(tiny) * b
        q /= q.sum(0, keepdim=True).clamp_min(tiny) * n
    return q * b


def sinkhorn_assign(d: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Balanced codes for a batch from its squared distances [B, N] (centred, then Sinkhorn,
    then each row's argmax)."""
    return sinkhorn(centre_distances(d), epsilon, iters).argmax(1)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator,
           spherical: bool = False) -> torch.Tensor:
    """k centres of the rows of ``x``: k-means++ seeding, then ``iters`` Lloyd steps; an empty
    cluster takes the point farthest from its centre. With fewer than k distinct points the
    spare centres are random points plus noise of 1e-3 times the data's spread.

    ``spherical`` (for unit-norm rows): every update rescales the centres to unit norm, so the
    nearest centre is the most cosine-similar one (spherical k-means); plain means of unit
    vectors shrink towards the origin, where a near-zero centre ends up nearest to them all."""
    x = x.float()
    n, dev = x.shape[0], x.device
    if n <= k:
        extra = x[torch.randint(n, (k - n,), generator=generator, device=dev)]
        noise = torch.randn(extra.shape, generator=generator, device=dev) * (1e-3 * (x.std() + 1e-8))
        return torch.cat([x, extra + noise])
    centres = torch.empty(k, x.shape[1], device=dev)
    centres[0] = x[torch.randint(n, (1,), generator=generator, device=dev)]
    closest = squared_distances(x, centres[:1]).squeeze(1)
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:                          # all points already coincide with a centre
            idx = torch.randint(n, (1,), generator=generator, device=dev)
        else:
            idx = torch.multinomial(closest / total, 1, generator=generator)
        centres[j] = x[idx]
        closest = torch.minimum(closest, squared_distances(x, centres[j:j + 1]).squeeze(1))
    for _ in range(iters):
        d = squared_distances(x, centres)
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        new = sums / counts.clamp_min(1)[:, None]
        if spherical:
            new = torch.nn.functional.normalize(new, dim=1)
        empty = counts == 0
        if empty.any():
            far = d.gather(1, assign[:, None]).squeeze(1).argsort(descending=True)
            new[empty] = x[far[: int(empty.sum())]]
        if torch.allclose(new, centres):
            centres = new
            break
        centres = new
    return centres


def balanced_kmeans(x: np.ndarray, k: int, seed: int, size_bounds: tuple[int, ...] = ()) -> np.ndarray:
    """Constrained k-means labels [n] of the rows of ``x``: equal cluster sizes (floor(n/k) or
    ceil(n/k)) by default, or sizes within ``size_bounds`` = (min, max). k-means-constrained's
    KMeansConstrained (assignment step = min-cost flow), seeded, single process."""
    from k_means_constrained import KMeansConstrained

    n = x.shape[0]
    lo, hi = size_bounds if size_bounds else (n // k, -(-n // k))
    clf = KMeansConstrained(n_clusters=k, size_min=lo, size_max=hi, random_state=seed, n_init=3,
                            max_iter=50, n_jobs=1)
    return np.asarray(clf.fit_predict(np.ascontiguousarray(x, dtype=np.float64)), dtype=np.int64)


# ============================================================================ losses
def quantisation_losses(residuals: list[torch.Tensor], chosen: list[torch.Tensor], mu: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level terms of Eq. 2, each a tensor [L]: codebook_l = mse(sg[r_{l-1}], e_l) and
    commitment_l = mu * mse(r_{l-1}, sg[e_l]) (already weighted)."""
    codebook = torch.stack([F.mse_loss(e, r.detach()) for r, e in zip(residuals, chosen)])
    commit = torch.stack([F.mse_loss(r, e.detach()) for r, e in zip(residuals, chosen)])
    return codebook, mu * commit


def info_nce(quantised: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """In-batch InfoNCE (Eq. 3, log-softmax form): -mean_i log softmax_j(<ẑ_i, h_j>)[i]."""
    logits = quantised @ cf.T
    return F.cross_entropy(logits, torch.arange(len(quantised), device=quantised.device))


def diversity_loss(x: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor,
                   targets: torch.Tensor) -> torch.Tensor:
    """LETTER's diversity term for one level: cross-entropy of logits x·Eᵀ (own code ``codes``
    masked out) against ``targets`` (another code of the same cluster); rows whose target is
    -1 (a cluster without another member) are ignored. x [B, d], codebook [N, d], codes and
    targets [B]."""
    logits = x @ codebook.T
    logits = logits.masked_fill(F.one_hot(codes, codebook.shape[0]).bool(), float("-inf"))
    # 0 where no row has a target (the cross-entropy of nothing is NaN), chosen on the device
    return torch.where((targets >= 0).any(), F.cross_entropy(logits, targets, ignore_index=-1),
                       logits.new_zeros(()))


class ClusterTable:
    """Cluster membership of one codebook's codes, laid out for vectorised sampling:
    ``order`` lists the codes cluster by cluster, ``start``/``size`` index it per cluster and
    ``pos[c]`` is code c's place inside its cluster."""

    def __init__(self, labels: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"):
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        n_clusters = int(labels.max()) + 1
        order = torch.argsort(labels, stable=True)
        size = torch.bincount(labels, minlength=n_clusters)
        start = torch.cumsum(size, 0) - size
        pos = torch.empty_like(labels)
        pos[order] = torch.arange(len(labels)) - start[labels[order]]
        self.labels, self.order, self.size, self.start, self.pos = (
            t.to(device) for t in (labels, order, size, start, pos))


def sample_cluster_targets(codes: torch.Tensor, table: ClusterTable,
                           generator: torch.Generator | None = None,
                           uniform: torch.Tensor | None = None) -> torch.Tensor:
    """For each code in ``codes`` [B], a uniformly drawn OTHER code of its cluster (-1 where the
    cluster has no other member). ``uniform`` [B] in [0, 1) fixes the draw (tests)."""
    cluster = table.labels[codes]
    size = table.size[cluster]
    if uniform is None:
        uniform = torch.rand(codes.shape, generator=generator, device=codes.device)
    j = (uniform * (size - 1).clamp_min(1)).long().clamp_max((size - 2).clamp_min(0))
    j = j + (j >= table.pos[codes]).long()          # skip the code itself
    target = table.order[(table.start[cluster] + j).clamp_max(len(table.order) - 1)]
    return torch.where(size > 1, target, torch.full_like(target, -1))


# ============================================================================ the model
class RQVAE(nn.Module):
    """Encoder, L codebooks of N codes, decoder (see the module docstring)."""

    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        dims = [in_dim, *cfg.hidden, cfg.latent_dim]
        self.encoder = mlp(dims)
        self.decoder = mlp(dims[::-1])
        self.codebooks = nn.Parameter(torch.randn(cfg.n_levels, cfg.codebook_size, cfg.latent_dim) * 0.01)
        self.sinkhorn_levels = cfg.sinkhorn_set()
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(()))

    def fit_input_scale(self, x: torch.Tensor) -> None:
        """Standardise inputs: subtract the items' mean, divide by ONE scalar (the elements'
        standard deviation), so distances between items only change by a constant factor."""
        if self.cfg.standardize:
            self.in_mean.copy_(x.mean(0))
            self.in_scale.copy_((x - x.mean(0)).std().clamp_min(1e-8))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_scale

    def assign(self, level: int, residual: torch.Tensor, balanced: bool) -> torch.Tensor:
        d = squared_distances(residual.detach(), self.codebooks[level].detach())
        if balanced and level in self.sinkhorn_levels:
            return sinkhorn_assign(d, self.cfg.sinkhorn_epsilon, self.cfg.sinkhorn_iters)
        return d.argmin(1)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """k-means initialisation on one batch, level by level on its residuals."""
        residual = self.encoder(self.normalise(x))
        for lvl in range(self.cfg.n_levels):
            self.codebooks.data[lvl] = kmeans(residual, self.cfg.codebook_size, self.cfg.kmeans_iters, generator)
            residual = residual - self.codebooks[lvl][self.assign(lvl, residual, balanced=True)]

    def quantise(self, z: torch.Tensor, balanced: bool) -> dict:
        """Residual quantisation of ``z`` [B, d] (Eq. 1). Returns codes [B, L], the residuals
        r_0..r_{L-1} and chosen code vectors e_l (with gradient to the codebooks), and ẑ with
        the straight-through gradient to z."""
        residual = z
        codes, residuals, chosen = [], [], []
        for lvl in range(self.cfg.n_levels):
            c = self.assign(lvl, residual, balanced)
            # a row lookup through F.embedding, not codebooks[lvl][c]: the same values, but its
            # backward sums each code's gradient in batch order, whereas an indexing backward
            # on a CPU with > 1 thread adds them with racing atomics once the batch has 32,768
            # elements (1024 x 32 here), so two identical runs drift apart in the last bits
            e = F.embedding(c, self.codebooks[lvl])
            codes.append(c)
            residuals.append(residual)
            chosen.append(e)
            residual = residual - e.detach()
        total = torch.stack(chosen).sum(0)
        z_hat = z + (total - z).detach()
        return {"codes": torch.stack(codes, 1), "residuals": residuals, "chosen": chosen, "z_hat": z_hat}

    def forward(self, x: torch.Tensor, balanced: bool = True) -> dict:
        """Encode, quantise, decode the raw inputs ``x``; ``out["target"]`` is the standardised
        input the reconstruction is compared with."""
        target = self.normalise(x)
        z = self.encoder(target)
        out = self.quantise(z, balanced)
        out["z"] = z
        out["target"] = target
        out["recon"] = self.decoder(out["z_hat"])
        return out


def rqvae_loss(model: RQVAE, out: dict, cf: torch.Tensor | None = None,
               tables: list[ClusterTable] | None = None, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5 for one batch: the total and its parts (unweighted, detached scalars on the
    model's device: the host reads them when it logs, not per step) for the log."""
    cfg = model.cfg
    reduce = torch.sum if cfg.level_reduction == "sum" else torch.mean
    recon = F.mse_loss(out["recon"], out["target"])
    codebook, commit = quantisation_losses(out["residuals"], out["chosen"], cfg.mu)
    total = recon + reduce(codebook + commit)
    parts = {"recon": recon.detach(), "codebook": reduce(codebook).detach(), "commit": reduce(commit).detach()}
    if cfg.alpha > 0:
        cf_loss = info_nce(out["z_hat"], cf)
        total = total + cfg.alpha * cf_loss
        parts["cf"] = cf_loss.detach()
    if cfg.beta > 0:
        div = torch.stack([
            diversity_loss(out["chosen"][lvl], model.codebooks[lvl], out["codes"][:, lvl],
                           sample_cluster_targets(out["codes"][:, lvl], tables[lvl], generator))
            for lvl in range(cfg.n_levels)])
        div = reduce(div)
        total = total + cfg.beta * div
        parts["div"] = div.detach()
    parts["total"] = total.detach()
    return total, parts


# ============================================================================ training
#: seconds of training between two checkpoints (a run longer than one sitting survives a stop)
CHECKPOINT_SECONDS = 300.0
#: points of the code-change curve per run (every epochs / CURVE_POINTS epochs, and the last)
CURVE_POINTS = 50


def _training_key(embeddings: np.ndarray, cfg: RQVAEConfig, seed: int, cf: np.ndarray | None) -> str:
    """What a checkpoint must have been made for: the config, the seed and the inputs' bytes."""
    import hashlib

    h = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str).encode())
    h.update(str(seed).encode())
    for arr in (embeddings, cf):
        if arr is not None:
            h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomically (a temporary file renamed into place): a stop mid-write keeps the last one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp)
    os.replace(tmp, path)


def code_changes(codes: np.ndarray, prev: np.ndarray | None) -> dict:
    """Between two assignments [n, L] of the same items: ``changed``, the share of items whose
    code tuple differs (any level), and ``changed_levels``, the share whose code at each level
    differs (level 1 first: a change there moves the item to another prefix tree, a change at
    the last level only to a sibling). None before the first point."""
    if prev is None:
        return {"changed": None, "changed_levels": None}
    diff = codes != prev
    return {"changed": round(float(diff.any(1).mean()), 6),
            "changed_levels": [round(float(v), 6) for v in diff.mean(0)]}


def train_rqvae(embeddings: np.ndarray, cfg: RQVAEConfig, seed: int, cf: np.ndarray | None = None,
                progress: bool = True, desc: str = "rq-vae", checkpoint: Path | None = None,
                checkpoint_seconds: float | None = None, device: str | torch.device = "cpu"
                ) -> tuple[RQVAE, dict]:
    """Train an RQ-VAE on ``embeddings`` [n, in_dim] (row i = item i+1). ``cf`` [n, latent_dim]
    is required when ``cfg.alpha > 0``. Returns the model (eval mode) and the training stats:
    epochs, per-epoch mean losses, the final epoch's losses, seconds, and ``code_curve``: at
    ``CURVE_POINTS`` epochs of the run, the share of items whose final codes (the assignment
    :func:`encode_items` makes) changed since the previous point, overall and per level
    (:func:`code_changes`), with the losses — where it reaches 0 the codes have stopped changing.

    ``checkpoint``: a file the training state (model, optimiser, random generators, epoch, logs,
    LETTER's cluster tables) is written to every ``checkpoint_seconds`` of training (default
    :data:`CHECKPOINT_SECONDS`); :func:`checkpoint_model` reads it without training; a run
    started with the file present continues from it — exactly as if it had never stopped — when
    it was made for the same config, seed and inputs, and ignores it (with a warning) otherwise.

    ``device``: where the model, the inputs, the random generator and every buffer live (the
    cell's device). The host does not wait on it per step: each epoch's loss sums stay on the
    device (float64, the sums a per-step ``.item()`` gave) and are read at the code-curve points,
    at a checkpoint and at the end (and every epoch only for a progress bar). On the CPU the
    numbers are the ones of the CPU-only version; a GPU draws from its own generator.
    """
    from tqdm.auto import tqdm

    from benchmarks.utils import seed_everything

    cfg.validate()
    checkpoint_seconds = CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds
    if cfg.alpha > 0:
        if cf is None:
            raise ValueError("alpha > 0 needs CF embeddings")
        if cf.shape != (len(embeddings), cfg.latent_dim):
            raise ValueError(f"CF embeddings must be [{len(embeddings)}, {cfg.latent_dim}], got {cf.shape}")
    seed_everything(seed)
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x_all = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).to(device)
    cf_all = torch.as_tensor(np.asarray(cf, dtype=np.float32)).to(device) if cf is not None else None
    n = len(x_all)
    model = RQVAE(x_all.shape[1], cfg).to(device)
    model.fit_input_scale(x_all)
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adagrad(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tables: list[ClusterTable] | None = None
    losses: dict[str, list[float]] = {}
    curve: list[dict] = []
    prev_codes: np.ndarray | None = None
    first_epoch, elapsed = 0, 0.0
    key = _training_key(embeddings, cfg, seed, cf) if checkpoint is not None else ""
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, weights_only=True)
        if state.get("key") != key:
            log.warning("%s: ignoring checkpoint %s (made for another config, seed or input)", desc, checkpoint)
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            tables = None if state["tables"] is None else [ClusterTable(t, device) for t in state["tables"]]
            losses, curve, first_epoch, elapsed = state["log"], state["curve"], state["epoch"], state["seconds"]
            prev_codes = None if state["codes"] is None else state["codes"].numpy()
            log.info("%s: resumed from %s at epoch %d of %d", desc, checkpoint, first_epoch, cfg.epochs)
    every = max(1, cfg.epochs // CURVE_POINTS)
    start = time.perf_counter() - elapsed
    last_save = time.perf_counter()
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64     # MPS has no float64
    pending: list[dict[str, torch.Tensor]] = []      # epochs whose loss sums the host has not read

    def read_losses() -> None:      # the one host wait for the epochs since the last one
        for sums in pending:
            for k, v in sums.items():
                losses.setdefault(k, []).append(round(float(v) / n, 6))
        pending.clear()

    bar = tqdm(range(first_epoch, cfg.epochs), desc=desc, disable=not progress, leave=False,
               initial=first_epoch, total=cfg.epochs)
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=gen, device=device)
        if epoch == 0 and cfg.kmeans_init:
            model.init_codebooks(x_all[perm[:cfg.batch_size]], gen)
        if cfg.beta > 0 and epoch % cfg.recluster_every == 0:
            tables = cluster_codebooks(model, cfg, seed + epoch)
        sums: dict[str, torch.Tensor] = {}
        for s in range(0, n, cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            out = model(x_all[idx], balanced=True)
            loss, parts = rqvae_loss(model, out, cf_all[idx] if cf_all is not None else None, tables, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            for k, v in parts.items():
                part = v.to(sum_dtype) * len(idx)
                sums[k] = sums[k] + part if k in sums else part
        pending.append(sums)
        if progress:
            read_losses()
        if (epoch + 1) % every == 0 or epoch + 1 == cfg.epochs:
            read_losses()
            codes = encode_items(model, x_all)["codes"]
            curve.append({"epoch": epoch + 1, **code_changes(codes, prev_codes), **{k: v[-1] for k, v in losses.items()}})
            prev_codes = codes
        if progress:
            bar.set_postfix({k: f"{v[-1]:.4g}" for k, v in losses.items()})
        if checkpoint is not None and (time.perf_counter() - last_save >= checkpoint_seconds
                                       or epoch + 1 == cfg.epochs):
            read_losses()
            _save_checkpoint(Path(checkpoint), {
                "key": key, "epoch": epoch + 1, "seconds": time.perf_counter() - start,
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "tables": None if tables is None else [t.labels for t in tables],
                "log": losses, "curve": curve,
                "codes": None if prev_codes is None else torch.from_numpy(prev_codes)})
            last_save = time.perf_counter()
    read_losses()
    model.eval()
    stats = {"epochs": cfg.epochs, "loss_log": losses,
             "final_losses": {k: v[-1] for k, v in losses.items()},
             "code_curve": curve,
             "train_seconds": round(time.perf_counter() - start, 2)}
    return model, stats


def checkpoint_model(checkpoint: Path, embeddings: np.ndarray, cfg: RQVAEConfig, seed: int,
                     cf: np.ndarray | None = None, device: str | torch.device = "cpu") -> tuple[RQVAE, dict]:
    """The quantiser as :func:`train_rqvae`'s checkpoint holds it (a run still training, or one
    stopped before its last epoch), without training: the model (eval mode) and stats shaped like
    ``train_rqvae``'s, ``epochs`` being the checkpoint's epoch and ``of_epochs`` the run's
    length, plus ``since_last_point``: :func:`code_changes` from the code curve's last point to
    now. The same inputs as the run's (config, seed, embeddings, CF embeddings), or an error."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer checkpoint for this config, seed and dataset (none "
                                f"started, or the run finished and its identifiers are in the cache)")
    state = torch.load(path, weights_only=True)
    if state.get("key") != _training_key(embeddings, cfg, seed, cf):
        raise ValueError(f"{path}: the checkpoint was made for another config, seed or input")
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)).to(device)
    model = RQVAE(x.shape[1], cfg).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    curve = state["curve"]
    losses = state["log"]
    prev = None if state["codes"] is None else state["codes"].numpy()
    since = {"from_epoch": curve[-1]["epoch"] if curve else None,
             **code_changes(encode_items(model, x)["codes"], prev)}
    return model, {"epochs": int(state["epoch"]), "of_epochs": cfg.epochs, "loss_log": losses,
                   "final_losses": {k: v[-1] for k, v in losses.items()}, "code_curve": curve,
                   "since_last_point": since, "train_seconds": round(float(state["seconds"]), 2)}


def cluster_codebooks(model: RQVAE, cfg: RQVAEConfig, seed: int) -> list[ClusterTable]:
    """Constrained k-means of every codebook's code vectors (diversity regularisation)."""
    books = model.codebooks.detach().cpu().numpy()      # k-means-constrained runs on the host
    return [ClusterTable(balanced_kmeans(books[lvl], cfg.diversity_clusters, seed + lvl,
                                         tuple(cfg.cluster_size_bounds)), model.codebooks.device)
            for lvl in range(cfg.n_levels)]


# ============================================================================ codes
@torch.no_grad()
def encode_items(model: RQVAE, embeddings: np.ndarray | torch.Tensor, batch_size: int = 4096,
                 margins: bool = False) -> dict[str, np.ndarray]:
    """Final codes of every item: argmin on every level, or (``final_sinkhorn``) one Sinkhorn
    plan over ALL items on the Sinkhorn levels, computed on the model's device. Returns codes
    [n, L] and the last level's residuals [n, d] (for collision resolution), in host memory."""
    model.eval()
    device = model.codebooks.device
    x = (embeddings if isinstance(embeddings, torch.Tensor)
         else torch.as_tensor(np.asarray(embeddings, dtype=np.float32))).to(device)
    z = torch.cat([model.encoder(model.normalise(x[s:s + batch_size])) for s in range(0, len(x), batch_size)])
    out = model.quantise(z, balanced=model.cfg.final_sinkhorn)
    enc = {"codes": out["codes"].cpu().numpy().astype(np.int64),
           "last_residual": out["residuals"][-1].cpu().numpy()}
    if margins:   # per level (assignment_margins): only the final build needs them, not the curve points
        enc["margins"] = [assignment_margins(r, model.codebooks[lvl].detach()).cpu().numpy()
                          for lvl, r in enumerate(out["residuals"])]
    return enc


#: an item's assignment at a level is a near tie when its second-nearest code is within this
#: relative margin of the nearest (squared distances): a small drift of the code vectors flips it
NEAR_TIE = 0.05


@torch.no_grad()
def assignment_margins(residual: torch.Tensor, codebook: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Per item, (d2 - d1) / d1 for the squared distances d1 <= d2 of its residual to its nearest
    and second-nearest code vectors: how far the item is from flipping to another code."""
    out = []
    for s in range(0, len(residual), batch_size):
        d = squared_distances(residual[s:s + batch_size], codebook).topk(2, dim=1, largest=False).values
        out.append((d[:, 1] - d[:, 0]) / d[:, 0].clamp_min(1e-12))
    return torch.cat(out)


def collision_report(codes: np.ndarray) -> dict:
    """How many items share their full code tuple with another item."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    collided = int((counts[inverse] > 1).sum())
    return {"distinct": int(len(counts)), "collided_items": collided,
            "collision_rate": round(collided / max(len(codes), 1), 6),
            "duplicate_rate": round((len(codes) - len(counts)) / max(len(codes), 1), 6),
            "max_group": int(counts.max()) if len(counts) else 0}


def disambiguation_token(codes: np.ndarray) -> np.ndarray:
    """TIGER's extra token: 0, 1, 2 ... among the items sharing a code tuple, in item order."""
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    grouped = inverse[order]
    first = np.r_[0, np.flatnonzero(np.diff(grouped)) + 1]
    rank_sorted = np.arange(len(codes)) - np.repeat(first, np.diff(np.r_[first, len(codes)]))
    out = np.empty(len(codes), dtype=np.int64)
    out[order] = rank_sorted
    return out


def resolve_collisions(codes: np.ndarray, last_residual: np.ndarray, last_codebook: np.ndarray
                       ) -> tuple[np.ndarray, int]:
    """Make code tuples unique by changing only last-level codes (see the module docstring).
    Returns the new codes and the number of items whose last code changed."""
    from scipy.optimize import linear_sum_assignment

    codes = codes.copy()
    n_codes = len(last_codebook)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if counts.max(initial=1) <= 1:
        return codes, 0
    _, prefix_inv = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix_inv = prefix_inv.reshape(-1)
    bad_prefixes = np.unique(prefix_inv[counts[inverse] > 1])
    moved = 0
    # each prefix group's members (ascending) from one sort, not a scan of all items per group
    by_prefix = np.argsort(prefix_inv, kind="stable")
    bounds = np.searchsorted(prefix_inv[by_prefix], np.arange(int(prefix_inv.max()) + 2))
    for p in bad_prefixes:
        members = by_prefix[bounds[p]:bounds[p + 1]]
        if len(members) > n_codes:
            raise ValueError(f"{len(members)} items share their first {codes.shape[1] - 1} codes: "
                             f"more than the {n_codes} last-level codes can tell apart")
        d = ((last_residual[members][:, None, :] - last_codebook[None]) ** 2).sum(-1)
        own = d[np.arange(len(members)), codes[members, -1]]
        # keep, per used code, the member nearest to it
        order = np.lexsort((own, codes[members, -1]))
        sorted_codes = codes[members, -1][order]
        keep_sorted = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        movers = members[order[~keep_sorted]]
        free = np.setdiff1d(np.arange(n_codes), sorted_codes[keep_sorted])
        rows, cols = linear_sum_assignment(d[order[~keep_sorted]][:, free])
        codes[movers[rows], -1] = free[cols]
        moved += len(movers)
    return codes, moved


def code_usage(codes: np.ndarray, sizes: list[int]) -> list[dict]:
    """Per level: codes used, codebook size, entropy (bits) and perplexity of the code counts."""
    out = []
    for lvl, size in enumerate(sizes):
        counts = np.bincount(codes[:, lvl], minlength=size)
        p = counts[counts > 0] / counts.sum()
        h = float(-(p * np.log2(p)).sum())
        out.append({"used": int((counts > 0).sum()), "size": int(size), "entropy_bits": round(abs(h), 4),
                    "perplexity": round(2 ** h, 2)})
    return out


def level_tokens(level: int, size: int) -> list[str]:
    """Level 0 -> <a_0> ... <a_{size-1}>, level 1 -> <b_k>, ... (LETTER's released format)."""
    return [f"<{LEVEL_LETTERS[level]}_{k}>" for k in range(size)]


def build_codebook_identifiers(scheme: str, embeddings: np.ndarray, cfg: RQVAEConfig, seed: int,
                               cf: np.ndarray | None = None, progress: bool = True,
                               log: Callable[[str], None] | None = None, checkpoint: Path | None = None,
                               device: str | torch.device = "cpu"):
    """Train the quantiser on ``embeddings`` [n_items, in_dim] and turn it into ItemIdentifiers
    (tokens, levels, n_semantic_levels, stats, arrays["quantized"], arrays["codebook_0"],
    arrays["codebooks"]); the quantiser trains on ``device``."""
    model, stats = train_rqvae(embeddings, cfg, seed, cf=cf, progress=progress, desc=scheme, checkpoint=checkpoint,
                               device=device)
    return identifiers_from_quantizer(scheme, model, stats, embeddings, cfg, log=log)


def identifiers_from_quantizer(scheme: str, model, stats: dict, embeddings: np.ndarray, cfg: RQVAEConfig,
                               log: Callable[[str], None] | None = None):
    """A trained quantiser (``train_rqvae``'s model and stats) turned into ItemIdentifiers: every
    item's codes, collision handling (``cfg.collision``), the tokens and arrays. ``stats`` is
    copied, not changed."""
    stats = dict(stats)
    enc = encode_items(model, embeddings, margins=True)
    codes = enc["codes"]
    books = model.codebooks.detach().cpu().numpy()
    stats["collisions_before"] = collision_report(codes)
    # how settled each level's assignment is (a level of near ties keeps changing while the
    # code vectors drift: the code curve's per-level shares)
    stats["margin_median"] = [round(float(np.median(m)), 6) for m in enc["margins"]]
    stats["near_tie_share"] = [round(float((m < NEAR_TIE).mean()), 6) for m in enc["margins"]]
    stats["code_usage_before"] = code_usage(codes, [cfg.codebook_size] * cfg.n_levels)
    if cfg.collision == "reassign":
        codes, moved = resolve_collisions(codes, enc["last_residual"], books[-1])
        stats["reassigned_items"] = moved
        full = codes
        sizes = [cfg.codebook_size] * cfg.n_levels
    else:
        extra = disambiguation_token(codes)
        stats["reassigned_items"] = 0
        full = np.concatenate([codes, extra[:, None]], 1)
        sizes = [cfg.codebook_size] * cfg.n_levels + [int(extra.max()) + 1]
    stats["collisions_after"] = collision_report(full)
    stats["code_usage"] = code_usage(full, sizes)
    levels = [level_tokens(lvl, size) for lvl, size in enumerate(sizes)]
    tokens = [tuple(levels[lvl][c] for lvl, c in enumerate(row)) for row in full.tolist()]
    quantized = np.zeros((len(codes) + 1, cfg.latent_dim), np.float32)
    quantized[1:] = books[np.arange(cfg.n_levels)[None, :], codes].sum(1)
    if log:
        log(f"{scheme}: {stats['epochs']} epochs, losses {stats['final_losses']}, collisions "
            f"{stats['collisions_before']['collided_items']} -> {stats['collisions_after']['collided_items']}")
    return ItemIdentifiers(scheme=scheme, kind="codes", tokens=tokens, vocab=[t for lv in levels for t in lv],
                           levels=levels, n_semantic_levels=cfg.n_levels, stats=stats,
                           arrays={"quantized": quantized, "codebook_0": books[0].astype(np.float32),
                                   "codebooks": books.astype(np.float32)})


# ============================================================================ the schemes' base
#: the shared smoke run on the toy dataset (30 items): tiny network and codebooks, seconds long
SMOKE = {"hidden": (64,), "codebook_size": 8, "epochs": 30, "kmeans_iters": 10}


class CodebookScheme(IdentifierScheme):
    """Common build of the codebook schemes: text embeddings (+ CF embeddings where the config
    asks for them) -> the shared RQ-VAE -> ItemIdentifiers."""

    kind = "codes"
    needs = frozenset({"text"})
    trains_on_device = True
    #: overrides for the papers' training length
    paper_config: dict = {"epochs": 20000}

    def cf_embeddings(self):
        return None

    def _inputs(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.features is None:
            raise ValueError(f"{self.name} needs a FeatureStore (item text embeddings)")
        return self.features.text_embeddings()[1:], self.cf_embeddings()

    def build(self) -> ItemIdentifiers:
        text, cf = self._inputs()
        return build_codebook_identifiers(self.name, text, self.config, self.seed, cf=cf,
                                          progress=self.progress, log=log.info, checkpoint=self.checkpoint,
                                          device=self.device)

    def snapshot(self) -> ItemIdentifiers:
        """The identifiers as the training checkpoint stands (:func:`checkpoint_model`)."""
        text, cf = self._inputs()
        model, stats = checkpoint_model(self.checkpoint, text, self.config, self.seed, cf, self.device)
        return identifiers_from_quantizer(self.name, model, stats, text, self.config, log=log.info)
