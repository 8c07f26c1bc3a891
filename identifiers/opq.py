"""OPQ codes: RPG's long, unordered semantic ids (Hou et al., "Generating Long Semantic IDs in
Parallel for Recommendation", KDD 2025).

Every item gets m codes, one per sub-vector of its (rotated) text embedding, each from that
sub-vector's own codebook of K = 256 codes. The digits carry no order: RPG predicts all of them
in parallel (``benchmarks.methods.rpg``), and the scheme is usable by ``generative`` too.

Pipeline (the official code, facebookresearch/RPG_KDD2025 ``genrec/models/RPG/tokenizer.py``):

1. The item text embeddings (the suite's MiniLM, 384-d; the paper: OpenAI text-embedding-3-large,
   3072-d, or sentence-t5-base, 768-d) -> whitened PCA fitted on ALL items (sklearn's
   ``PCA(n_components, whiten=True)``: centre, project on the top principal axes, divide each
   axis by its standard deviation). The paper's widths are 3072 -> 512 and 768 -> 128;
   ``pca_dim`` defaults to 128 for MiniLM (the sentence-t5 recipe; the paper is silent on
   384-d encoders); ``pca_dim: null`` keeps the full width, whitened only.
2. faiss ``index_factory(d, "OPQ{m},IVF1,PQ{m}x8", METRIC_INNER_PRODUCT)`` trained on the
   items that occur in training sequences (``fit_on: train``), then every item encoded.

``backend: torch`` (default) is this project's own implementation of that index's training and
encoding, step for step as faiss 1.15 does it (``OPQMatrix::train``, ``IndexIVFPQ::train``):

- OPQ (Ge et al., CVPR 2013, the non-parametric alternating optimisation): the training vectors
  are centred (x - mu); the rotation R starts as the Q of a QR decomposition of a Gaussian
  d x d matrix; then ``opq_iters`` (faiss: 50) times: project P = (x - mu) R, train the product
  quantiser on P (per-subspace k-means: ``pq_iters_first`` = 40 Lloyd iterations from K random
  training points the first time, ``pq_iters`` = 4 hot-started ones afterwards, as faiss's
  ``Train_hot_start``), decode P to its reconstruction Y, and set R to the orthogonal
  Procrustes solution R = U V^T of U S V^T = SVD((x - mu)^T Y), the rotation that best maps
  the data onto its quantised version. At most ``max_train_points`` (faiss: 65,536) training
  vectors, a random subset beyond that.
- IVF1: one coarse centroid, the mean of the rotated training vectors, subtracted before the
  product quantiser (residual encoding). faiss's IVF under the inner-product metric uses
  spherical k-means for it, i.e. the unit-normalised mean; here the plain mean mu R (with
  whitened, centred inputs both are a shift of at most unit length; the plain mean is the
  least-squares one).
- The index's own product quantiser: per-subspace k-means on the residuals (x - mu) R with
  ``final_pq_iters`` (faiss: 25) Lloyd iterations, hot-started from the OPQ's last codebooks
  (faiss starts them afresh from random points), then every item's codes = the nearest code
  of each sub-vector. faiss's polysemous re-ordering only renames codes inside a digit (a
  permutation that no part of RPG can see), so it is not reproduced.
- Empty clusters take the points farthest from their centres (faiss splits a large cluster).

``backend: faiss`` runs faiss itself (the optional extra ``pip install 'genrec-bench[faiss]'``;
its seeds are faiss's fixed ones, so the codes do not depend on the cell seed there).

Identifiers: item i -> the m tokens ``<d{j}_{c_j}>``, one level per digit. Collision policy
``ties`` (RPG's, and the only one): uniqueness is not enforced and no token is added, so items
whose full code tuple coincides share their identifier and tie in every score (the official
code's scoring, graph nodes and metrics use item ids). ``stats`` say how many: the collision
rate BEFORE and AFTER the policy is the same number by construction. Also in ``stats``: the
PCA's kept variance, the OPQ loss per iteration, the relative reconstruction error of all items
and a hash of the codes. Arrays: ``quantized`` (each item's reconstruction in the PCA space),
``rotation``, ``mean``, ``codebooks`` [m, K, d/m] and ``codebook_0``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.errors import ConfigError
from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers
from identifiers.quantizers import code_usage, collision_report

log = logging.getLogger(__name__)

BACKENDS = ("torch", "faiss")
FIT_ON = ("train", "all")
FAISS_EXTRA = "pip install 'genrec-bench[faiss]'"


@dataclass
class OPQConfig:
    """RPG's defaults (m = 32 codebooks of 256 codes; faiss's OPQ iteration counts)."""

    n_codebooks: int = 32            # m: codes per item (the paper: 4 ... 64)
    codebook_size: int = 256         # K: codes per digit (8 bits)
    pca_dim: int | None = 128        # whitened PCA width; None = the encoder's width
    whiten: bool = True
    fit_on: str = "train"            # train: items of the training sequences | all
    opq_iters: int = 50              # faiss OPQMatrix.niter
    pq_iters_first: int = 40         # OPQMatrix.niter_pq_0
    pq_iters: int = 4                # OPQMatrix.niter_pq
    final_pq_iters: int = 25         # the IVF-PQ's own PQ training (ClusteringParameters.niter)
    max_train_points: int = 65536    # OPQMatrix.max_train_points
    backend: str = "torch"           # torch (own implementation) | faiss

    def validate(self, width: int | None = None, n_items: int | None = None) -> None:
        """Raise ConfigError naming the first field the scheme cannot run with (``width``: the
        text embedding's dimension, ``n_items``: the catalogue size, where known)."""
        for key, low in (("n_codebooks", 1), ("codebook_size", 2), ("opq_iters", 0), ("pq_iters_first", 1),
                         ("pq_iters", 1), ("final_pq_iters", 0), ("max_train_points", 1)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"opq {key}: expected an integer >= {low}, got {value!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"opq backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.fit_on not in FIT_ON:
            raise ConfigError(f"opq fit_on: expected one of {', '.join(FIT_ON)}, got {self.fit_on!r}")
        if self.backend == "faiss" and self.codebook_size != 256:
            raise ConfigError(f"opq codebook_size: the faiss backend encodes 8-bit codes (256), got "
                              f"{self.codebook_size}; use backend: torch for other sizes")
        if self.pca_dim is not None:
            if self.pca_dim < 1:
                raise ConfigError(f"opq pca_dim: expected a positive integer or null, got {self.pca_dim}")
            if width is not None and self.pca_dim > width:
                raise ConfigError(f"opq pca_dim: {self.pca_dim} is wider than the text embeddings ({width})")
            if n_items is not None and self.pca_dim > n_items - 1:
                raise ConfigError(f"opq pca_dim: {self.pca_dim} principal axes need more than "
                                  f"{n_items} items (at most {n_items - 1})")
        dim = self.pca_dim if self.pca_dim is not None else width
        if dim is not None and dim % self.n_codebooks:
            key = "pca_dim" if self.pca_dim is not None else "n_codebooks"
            raise ConfigError(f"opq {key}: the vector width {dim} must be divisible by "
                              f"n_codebooks ({self.n_codebooks})")


# ============================================================================ PCA
def whitened_pca(x: np.ndarray, dim: int | None, whiten: bool = True) -> tuple[np.ndarray, float]:
    """Rows of ``x`` centred and projected on their top ``dim`` principal axes (all axes when
    None), each axis divided by its standard deviation if ``whiten`` (sklearn's
    ``PCA(whiten=True)``). Returns (the projection, the share of the variance kept)."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    dim = len(s) if dim is None else dim
    z = xc @ vt[:dim].T
    if whiten:
        std = s[:dim] / math.sqrt(max(len(x) - 1, 1))
        z = z / np.maximum(std, 1e-12)
    kept = float((s[:dim] ** 2).sum() / max((s ** 2).sum(), 1e-300))
    return z.astype(np.float32), kept


# ============================================================================ product quantiser
def _split(x: torch.Tensor, m: int) -> torch.Tensor:
    """[n, d] -> [m, n, d/m]: the m sub-vectors of every row."""
    n, d = x.shape
    return x.reshape(n, m, d // m).transpose(0, 1).contiguous()


def pq_assign(sub: torch.Tensor, books: torch.Tensor, chunk_elems: int = 1 << 24) -> torch.Tensor:
    """Nearest code of every sub-vector: ``sub`` [m, n, ds], ``books`` [m, K, ds] -> [m, n]
    (squared Euclidean distance; rows in chunks so no [m, n, K] tensor beyond
    ``chunk_elems`` floats is formed)."""
    m, n, _ = sub.shape
    k = books.shape[1]
    step = max(1, chunk_elems // max(m * k, 1))
    norms = books.pow(2).sum(-1).unsqueeze(1)                         # [m, 1, K]
    out = torch.empty((m, n), dtype=torch.long)
    for s in range(0, n, step):
        part = sub[:, s:s + step]
        # ||c||² - 2 x.c (+ ||x||², the same for every code of a row)
        out[:, s:s + step] = torch.baddbmm(norms, part, books.transpose(1, 2), alpha=-2).argmin(-1)
    return out


def pq_decode(codes: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """[m, n] codes -> [m, n, ds] the chosen code vectors."""
    return torch.gather(books, 1, codes.unsqueeze(-1).expand(-1, -1, books.shape[-1]))


def pq_lloyd(sub: torch.Tensor, books: torch.Tensor, iters: int) -> torch.Tensor:
    """``iters`` Lloyd iterations of every subspace's k-means at once, from ``books``
    [m, K, ds]; empty clusters take the points farthest from their centres (beyond the number
    of points, they keep their previous centres)."""
    m, n, ds = sub.shape
    k = books.shape[1]
    books = books.clone()
    for _ in range(iters):
        assign = pq_assign(sub, books)
        sums = torch.zeros_like(books).scatter_add_(1, assign.unsqueeze(-1).expand(-1, -1, ds), sub)
        counts = torch.zeros((m, k), dtype=sub.dtype).scatter_add_(1, assign, torch.ones_like(assign, dtype=sub.dtype))
        new = sums / counts.clamp_min(1).unsqueeze(-1)
        for j in torch.nonzero((counts == 0).any(1)).flatten().tolist():
            empty = torch.nonzero(counts[j] == 0).flatten()
            err = (sub[j] - new[j][assign[j]]).pow(2).sum(-1)
            far = err.argsort(descending=True)[:len(empty)]      # fewer points than codes: the rest
            new[j, empty[:len(far)]] = sub[j, far]                # keep their previous centres
            new[j, empty[len(far):]] = books[j, empty[len(far):]]
        books = new
    return books


def pq_init(sub: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """K random training sub-vectors per subspace (faiss's k-means start); with fewer than K
    points, every point plus random repeats with noise of 1e-3 times the data's spread."""
    m, n, ds = sub.shape
    if n >= k:
        idx = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(m)])
        return torch.gather(sub, 1, idx.unsqueeze(-1).expand(-1, -1, ds)).clone()
    extra = sub[:, torch.randint(n, (k - n,), generator=gen)]
    noise = torch.randn(extra.shape, generator=gen) * (1e-3 * (float(sub.std()) + 1e-8))
    return torch.cat([sub, extra + noise], 1)


# ============================================================================ OPQ
def procrustes(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The orthogonal R [d, d] minimising ||x R - y||² (x, y [n, d]): U V^T from the SVD
    U S V^T of x^T y (float64 inside)."""
    u, _, vh = torch.linalg.svd(x.T.double() @ y.double())
    return (u @ vh).to(x.dtype)


def train_opq(x: np.ndarray, m: int, k: int, cfg: OPQConfig, seed: int) -> dict[str, np.ndarray]:
    """Rotation R [d, d], mean mu [d], codebooks [m, K, d/m] and the per-iteration PQ error
    (mean squared error per vector) of OPQ + IVF1 + PQ trained on the rows of ``x`` (see the
    module docstring; float32 torch on the CPU, seeded)."""
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if len(xt) > cfg.max_train_points:
        xt = xt[torch.randperm(len(xt), generator=gen)[:cfg.max_train_points]]
    n, d = xt.shape
    mu = xt.mean(0)
    xc = xt - mu
    rot, _ = torch.linalg.qr(torch.randn((d, d), generator=gen))
    books = None
    losses = []
    for it in range(cfg.opq_iters):
        sub = _split(xc @ rot, m)
        books = (pq_lloyd(sub, pq_init(sub, k, gen), cfg.pq_iters_first) if books is None
                 else pq_lloyd(sub, books, cfg.pq_iters))
        recon = pq_decode(pq_assign(sub, books), books)                 # [m, n, ds]
        losses.append(float((recon - sub).pow(2).sum((0, 2)).mean()))
        rot = procrustes(xc, recon.transpose(0, 1).reshape(n, d))
    sub = _split(xc @ rot, m)
    books = pq_init(sub, k, gen) if books is None else books
    books = pq_lloyd(sub, books, cfg.final_pq_iters)
    return {"rotation": rot.numpy(), "mean": mu.numpy(), "codebooks": books.numpy(),
            "opq_loss": np.asarray(losses)}


def opq_encode(x: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Codes [n, m] of the rows of ``x`` under a trained :func:`train_opq` model."""
    books = torch.as_tensor(model["codebooks"])
    r = (torch.as_tensor(np.asarray(x, dtype=np.float32)) - torch.as_tensor(model["mean"])) @ torch.as_tensor(model["rotation"])
    return pq_assign(_split(r, books.shape[0]), books).T.numpy().astype(np.int64)


def opq_reconstruct(codes: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """[n, m] codes -> [n, d] reconstructions in the input space (x ~ mu + PQ(codes) R^T)."""
    books = torch.as_tensor(model["codebooks"])
    y = pq_decode(torch.as_tensor(codes).T, books).transpose(0, 1).reshape(len(codes), -1)
    return (y @ torch.as_tensor(model["rotation"]).T + torch.as_tensor(model["mean"])).numpy()


def faiss_opq(x_train: np.ndarray, x_all: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's ``OPQ{m},IVF1,PQ{m}x8`` (inner product) trained on ``x_train``: the codes [n, m]
    of ``x_all`` and their reconstructions [n, d]. ConfigError naming the extra when faiss is
    not installed."""
    try:
        import faiss
    except ImportError:
        raise ConfigError(f"opq backend: 'faiss' needs the faiss package, which is not installed "
                          f"(the optional extra: {FAISS_EXTRA}); or use backend: torch") from None
    x_train = np.ascontiguousarray(x_train, dtype=np.float32)
    x_all = np.ascontiguousarray(x_all, dtype=np.float32)
    index = faiss.index_factory(x_all.shape[1], f"OPQ{m},IVF1,PQ{m}x8", faiss.METRIC_INNER_PRODUCT)
    index.train(x_train)
    rotated = index.chain.at(0).apply(x_all)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    residual = np.ascontiguousarray(rotated - ivf.quantizer.reconstruct(0)[None], dtype=np.float32)
    codes = ivf.pq.compute_codes(residual)                            # uint8 [n, m] at 8 bits
    recon = ivf.pq.decode(codes) + ivf.quantizer.reconstruct(0)[None]
    back = faiss.downcast_VectorTransform(index.chain.at(0)).reverse_transform(np.ascontiguousarray(recon))
    return codes.astype(np.int64), back


def digit_tokens(digit: int, size: int) -> list[str]:
    """Digit j's tokens ``<d{j}_0>`` ... ``<d{j}_{size-1}>``."""
    return [f"<d{digit}_{c}>" for c in range(size)]


def codes_hash(codes: np.ndarray) -> str:
    """A short hash of a code matrix (int64, C order): two runs with equal hashes made equal codes."""
    return hashlib.sha1(np.ascontiguousarray(codes, dtype=np.int64).tobytes()).hexdigest()[:16]


@register_identifier("opq")
class OPQ(IdentifierScheme):
    """RPG's OPQ codes: whitened PCA, then OPQ + PQ, m digits x 256 codes, ties kept."""

    kind = "codes"
    family = "codebook"
    Config = OPQConfig
    needs = frozenset({"text"})
    smoke_config = {"n_codebooks": 4, "codebook_size": 8, "pca_dim": 8, "opq_iters": 5}

    def build(self) -> ItemIdentifiers:
        cfg = self.config
        if self.features is None:
            raise ValueError(f"{self.name} needs a FeatureStore (item text embeddings)")
        text = self.features.text_embeddings()[1:]
        cfg.validate(width=text.shape[1], n_items=len(text))
        start = time.perf_counter()
        x, kept = whitened_pca(text, cfg.pca_dim, cfg.whiten)
        train = self.dataset.warm_mask()[1:] if cfg.fit_on == "train" else np.ones(len(x), bool)
        if not train.any():
            raise ValueError(f"{self.name}: no item occurs in a training sequence (fit_on: train)")
        m, k = cfg.n_codebooks, cfg.codebook_size
        stats: dict = {"backend": cfg.backend, "input_dim": int(text.shape[1]), "pca_dim": int(x.shape[1]),
                       "whiten": cfg.whiten, "pca_variance_kept": round(kept, 6),
                       "fit_items": int(train.sum()), "fit_on": cfg.fit_on}
        arrays: dict[str, np.ndarray] = {}
        if cfg.backend == "faiss":
            codes, recon = faiss_opq(x[train], x, m)
        else:
            model = train_opq(x[train], m, k, cfg, self.seed)
            codes = opq_encode(x, model)
            recon = opq_reconstruct(codes, model)
            stats["opq_loss"] = [round(v, 6) for v in model["opq_loss"].tolist()]
            arrays = {"rotation": model["rotation"], "mean": model["mean"], "codebooks": model["codebooks"],
                      "codebook_0": model["codebooks"][0]}
        centred = x - x[train].mean(0)
        stats["reconstruction_mse"] = round(float(((recon - x) ** 2).sum(1).mean()), 6)
        stats["relative_error"] = round(float(((recon - x) ** 2).sum() / max((centred ** 2).sum(), 1e-30)), 6)
        collisions = collision_report(codes)
        stats.update(collision_policy="ties", collisions_before=collisions, collisions_after=collisions,
                     code_usage=code_usage(codes, [k] * m), codes_hash=codes_hash(codes),
                     build_seconds=round(time.perf_counter() - start, 2))
        levels = [digit_tokens(j, k) for j in range(m)]
        tokens = [tuple(levels[j][c] for j, c in enumerate(row)) for row in codes.tolist()]
        quantized = np.zeros((len(codes) + 1, x.shape[1]), np.float32)
        quantized[1:] = recon
        arrays["quantized"] = quantized
        log.info("%s: %d digits x %d codes over %d-d (PCA of %d-d, %.1f %% variance), relative error %.4f, "
                 "%d items share their code tuple (ties kept)", self.name, m, k, x.shape[1], text.shape[1],
                 100 * kept, stats["relative_error"], collisions["collided_items"])
        return ItemIdentifiers(self.name, "codes", tokens, vocab=[t for lv in levels for t in lv],
                               levels=levels, n_semantic_levels=m, stats=stats, arrays=arrays, ties=True)
