"""OPQ codes (RPG's identifiers): shapes and ranges, the alternating optimisation (Procrustes
rotation, per-subspace k-means), reconstruction error against m, faiss as the reference where
it is installed, the ties policy through the scheme and through ``generative``."""

import sys

import numpy as np
import pytest
import torch

from benchmarks.analysis import code_usage
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator, user_batch
from benchmarks.config import build_config
from benchmarks.protocol import Context
from benchmarks.registry import IDENTIFIERS, METHODS
from identifiers.base import load_or_build
from identifiers.opq import (OPQConfig, faiss_opq, opq_encode, opq_reconstruct, pq_assign, procrustes,
                             train_opq, whitened_pca)
from tests.identifiers.test_codebook_schemes import ToyFeatures


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    ds = toy_dataset()
    return ds, ToyFeatures(ds, tmp_path_factory.mktemp("features"), progress=False)


def _build(toy, seed=0, cache=None, **over):
    ds, store = toy
    cls = IDENTIFIERS.get("opq")
    cfg = build_config(cls.Config, {**cls.smoke_config, **over})
    return load_or_build("opq", cfg, ds, store, seed, cache_root=cache, progress=False), cfg


def _correlated(n=600, d=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) @ (rng.normal(size=(d, d)) * np.linspace(2, 0.1, d))).astype(np.float32)


def _relative_error(x, model):
    rec = opq_reconstruct(opq_encode(x, model), model)
    return float(((rec - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def test_codes_have_one_column_per_codebook_in_range():
    x = _correlated()
    model = train_opq(x, 8, 256, OPQConfig(n_codebooks=8, opq_iters=3), seed=0)
    codes = opq_encode(x, model)
    assert codes.shape == (600, 8) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 256
    assert len(np.unique(codes[:, 0])) > 128                     # 600 points spread over the codes
    assert model["rotation"].shape == (32, 32) and model["codebooks"].shape == (8, 256, 4)
    # every code is its sub-vector's nearest code vector
    r = (x - model["mean"]) @ model["rotation"]
    sub = torch.as_tensor(r).reshape(600, 8, 4).transpose(0, 1)
    books = torch.as_tensor(model["codebooks"])
    d = ((sub.unsqueeze(2) - books.unsqueeze(1)) ** 2).sum(-1)   # [m, n, K]
    assert torch.equal(d.argmin(-1).T, torch.as_tensor(codes))
    assert torch.equal(pq_assign(sub, books, chunk_elems=1000), d.argmin(-1))   # chunked the same


def test_fewer_points_than_codes_still_quantise_every_point_exactly():
    x = _correlated(n=30, d=8)
    model = train_opq(x, 2, 256, OPQConfig(n_codebooks=2, opq_iters=3), seed=0)
    codes = opq_encode(x, model)
    assert codes.shape == (30, 2) and codes.min() >= 0 and codes.max() < 256
    assert _relative_error(x, model) < 1e-6          # every point has a code of its own


def test_reconstruction_error_falls_with_the_number_of_codebooks():
    x = _correlated()
    errors = [_relative_error(x, train_opq(x, m, 16, OPQConfig(n_codebooks=m, codebook_size=16, opq_iters=5), 0))
              for m in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.3 and errors[-1] < 0.1


def test_procrustes_recovers_a_rotation_and_opq_lowers_its_loss():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.normal(size=(200, 6)), dtype=torch.float32)
    q, _ = torch.linalg.qr(torch.as_tensor(rng.normal(size=(6, 6)), dtype=torch.float32))
    r = procrustes(x, x @ q)
    assert torch.allclose(r, q, atol=1e-4) and torch.allclose(r.T @ r, torch.eye(6), atol=1e-5)
    # the alternating optimisation never raises the PQ error, and ends below its random start
    model = train_opq(_correlated(), 4, 16, OPQConfig(n_codebooks=4, codebook_size=16, opq_iters=15), 0)
    loss = model["opq_loss"]
    assert len(loss) == 15 and all(b <= a * (1 + 1e-4) for a, b in zip(loss, loss[1:])) and loss[-1] < loss[0]
    assert np.allclose(model["rotation"].T @ model["rotation"], np.eye(32), atol=1e-4)


def test_whitened_pca_gives_unit_variance_uncorrelated_axes():
    x = _correlated(n=400, d=16)
    z, kept = whitened_pca(x, 8)
    assert z.shape == (400, 8) and np.allclose(z.mean(0), 0, atol=1e-4)
    assert np.allclose(np.cov(z.T), np.eye(8), atol=1e-3)
    full, all_kept = whitened_pca(x, None, whiten=False)
    assert full.shape == (400, 16) and all_kept == pytest.approx(1.0) and 0 < kept < 1
    # unwhitened, the kept share is the projection's share of the total variance
    assert kept == pytest.approx(float((full[:, :8] ** 2).sum() / (full ** 2).sum()), rel=1e-4)


def test_scheme_keeps_ties_and_reports_the_same_collisions_before_and_after(toy, tmp_path):
    ds, _ = toy
    ids, cfg = _build(toy, cache=tmp_path, n_codebooks=2, codebook_size=2, pca_dim=4)
    assert ids.ties and ids.kind == "codes" and ids.n_items == ds.n_items and ids.n_semantic_levels == 2
    assert len(ids.levels) == 2 and all(len(t) == 2 for t in ids.tokens) and ids.tokens[0][0].startswith("<d0_")
    st = ids.stats
    assert st["collision_policy"] == "ties" and st["collisions_before"] == st["collisions_after"]
    assert st["collisions_after"]["collided_items"] > 0       # 30 items over 2 x 2 codes must share
    rows = code_usage(ids)
    rate = rows[(rows.level == "all") & (rows.metric == "collision_rate")].value.item()
    assert rate == pytest.approx(st["collisions_after"]["collision_rate"])
    again, _ = _build(toy, cache=tmp_path, n_codebooks=2, codebook_size=2, pca_dim=4)   # from the cache
    assert again.ties and again.tokens == ids.tokens
    q = ids.arrays["quantized"]
    assert q.shape == (ds.n_items + 1, 4) and not q[0].any()


def test_deterministic_under_the_seed_and_fitted_on_training_items(toy):
    a, _ = _build(toy)
    b, _ = _build(toy)
    c, _ = _build(toy, seed=1)
    assert a.tokens == b.tokens and a.stats["codes_hash"] == b.stats["codes_hash"]
    assert c.stats["codes_hash"] != a.stats["codes_hash"]
    ds, _ = toy
    assert a.stats["fit_items"] == int(ds.warm_mask().sum()) and a.stats["fit_on"] == "train"
    assert 0 < a.stats["relative_error"] < 1


@pytest.mark.parametrize("over, key", [({"pca_dim": 6}, "pca_dim"), ({"backend": "gpu"}, "backend"),
                                       ({"fit_on": "valid"}, "fit_on"), ({"n_codebooks": 0}, "n_codebooks"),
                                       ({"pca_dim": 64}, "pca_dim"),
                                       ({"backend": "faiss", "codebook_size": 8}, "codebook_size")])
def test_bad_config_names_the_key(toy, over, key):
    with pytest.raises(ConfigError, match=key):
        _build(toy, **over)


def test_faiss_backend_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)           # import faiss -> ImportError
    x = _correlated()
    with pytest.raises(ConfigError, match=r"genrec-bench\[faiss\]"):
        faiss_opq(x, x, 8)


def test_own_opq_is_no_worse_than_faiss():
    """faiss's OPQ{m},IVF1,PQ{m}x8 (the official tokenizer) as the reference: our training of
    the same index reconstructs the data at least as well (within 5 %)."""
    pytest.importorskip("faiss")
    x = _correlated(n=1000, d=8)
    _, recon = faiss_opq(x, x, 2)
    theirs = float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    ours = _relative_error(x, train_opq(x, 2, 256, OPQConfig(n_codebooks=2), 0))
    assert 0 < ours <= 1.05 * theirs


def test_generative_runs_on_opq_ids_with_ties(toy, tmp_path):
    ds, store = toy
    cls = METHODS.get("generative")
    cfg = build_config(cls.Config, {"identifier": "opq", "epochs": 1, "beams": 10, "train_last_n": 3,
                                    "backbone_config": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16,
                                                        "d_ff": 64},
                                    "identifier_config": {**IDENTIFIERS.get("opq").smoke_config,
                                                          "n_codebooks": 2, "codebook_size": 4, "pca_dim": 4}})
    model = cls(cfg, Context(ds, store, "cpu", 0, cache=tmp_path / "cache", progress=False))
    model.fit(Evaluator(ds, EvalConfig(ks=(5, 10))).validation_ndcg)
    assert model.identifiers.ties and model.family_of(model.config) == "codebook"
    items, scores = model.rank(user_batch(ds, "test", np.arange(8)), 10)
    assert all(len(set(r)) == 10 and 0 not in r for r in items.tolist())
    groups: dict[tuple, list[int]] = {}
    for item, toks in enumerate(model.identifiers.tokens, start=1):
        groups.setdefault(toks, []).append(item)
    for row, sc in zip(items.tolist(), scores.tolist()):     # tied items come together, one score
        for a, b, sa, sb in zip(row, row[1:], sc, sc[1:]):
            if model.identifiers.tokens[a - 1] == model.identifiers.tokens[b - 1]:
                assert sa == sb
