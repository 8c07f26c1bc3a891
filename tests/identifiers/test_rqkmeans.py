"""RQ-KMeans semantic ids on the toy dataset: the identifier contract (unique under
``extra-token``, levels, deterministic under the seed), the residual structure, the ``ties``
policy end to end through the generative method, and code-usage stats."""

import numpy as np
import pytest
import torch

from benchmarks.analysis import code_usage
from benchmarks.config import build_config
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator, user_batch
from benchmarks.protocol import Context
from benchmarks.registry import IDENTIFIERS, METHODS
from benchmarks.rundir import CellDir
from identifiers.base import load_or_build
from identifiers.quantizers import kmeans, squared_distances
from identifiers.rqkmeans import RQKMeansConfig, residual_kmeans
from tests.identifiers.test_codebook_schemes import ToyFeatures


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    ds = toy_dataset()
    return ds, ToyFeatures(ds, tmp_path_factory.mktemp("features"), progress=False)


def _build(toy, seed=0, cache=None, **over):
    ds, store = toy
    cls = IDENTIFIERS.get("rq-kmeans")
    cfg = build_config(cls.Config, {**cls.smoke_config, **over})
    return load_or_build("rq-kmeans", cfg, ds, store, seed, cache_root=cache, progress=False), cfg


def test_extra_token_identifiers_are_unique_with_levels(toy):
    ds, _ = toy
    ids, cfg = _build(toy)                               # load_or_build raises on a shared identifier
    assert IDENTIFIERS.get("rq-kmeans").family == "codebook" and not ids.ties
    assert ids.kind == "codes" and ids.n_items == ds.n_items and ids.n_semantic_levels == 3
    assert len(ids.levels) == 4 and all(len(t) == 4 for t in ids.tokens)
    for lvl, letter in enumerate("abcd"):
        assert all(tok.startswith(f"<{letter}_") for tok in ids.levels[lvl])
    assert all(len(ids.levels[lvl]) == cfg.codebook_size for lvl in range(3))
    assert len(ids.levels[3]) == ids.stats["collisions_before"]["max_group"]
    assert ids.stats["collisions_after"]["collided_items"] == 0
    assert {t for toks in ids.tokens for t in toks} <= set(ids.vocab)
    books = ids.arrays["codebooks"]
    assert books.shape == (3, cfg.codebook_size, 384) and np.array_equal(ids.arrays["codebook_0"], books[0])
    codes = ids.code_matrix()[:, :3]
    assert np.allclose(ids.arrays["quantized"][1:], books[np.arange(3)[None], codes].sum(1), atol=1e-5)
    assert not ids.arrays["quantized"][0].any()


def test_each_level_is_kmeans_of_the_previous_levels_residuals(toy):
    _, store = toy
    x = store.text_embeddings()[1:]
    for normalise in (True, False):
        cfg = RQKMeansConfig(codebook_size=4, kmeans_iters=10, normalize_residuals=normalise)
        out = residual_kmeans(x, cfg, seed=3)
        gen = torch.Generator().manual_seed(3)          # the same draws, level by level
        r = torch.as_tensor(x)
        for lvl in range(cfg.n_levels):
            if normalise:
                r = torch.nn.functional.normalize(r, dim=1)
            centres = kmeans(r, 4, 10, gen, spherical=normalise)
            assert torch.equal(centres, torch.as_tensor(out["codebooks"][lvl]))
            if normalise:                                 # unit-norm centres for unit-norm inputs
                assert torch.allclose(centres.norm(dim=1), torch.ones(4), atol=1e-5)
            c = squared_distances(r, centres).argmin(1)
            assert np.array_equal(c.numpy(), out["codes"][:, lvl])   # nearest centroid
            r = r - centres[c]
        # without normalising, every level explains part of its input: the residual shrinks
        if not normalise:
            assert (np.diff(out["residual_mse"]) < 0).all()


def test_normalised_residuals_do_not_collapse_into_one_code():
    """Unit-norm inputs, and items alone in their level-0 cluster (zero residual): with plain
    means the next levels' centres drift to the origin and take most items; unit-norm centres
    keep the codes spread (300 random 32-d items, 64 codes: largest code share at every level
    stays near the uniform 1/64)."""
    x = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
    out = residual_kmeans(x, RQKMeansConfig(codebook_size=64, kmeans_iters=20), seed=0)
    shares = [np.bincount(out["codes"][:, lvl]).max() / 300 for lvl in range(3)]
    assert max(shares) < 0.1, shares


def test_deterministic_under_the_seed_and_seed_dependent(toy):
    a, _ = _build(toy, seed=0)
    b, _ = _build(toy, seed=0)
    c, _ = _build(toy, seed=1)
    assert a.tokens == b.tokens and np.array_equal(a.arrays["codebooks"], b.arrays["codebooks"])
    assert not np.array_equal(a.arrays["codebooks"], c.arrays["codebooks"])


def test_ties_policy_keeps_shared_identifiers_and_reports_them(toy, tmp_path):
    ds, _ = toy
    ids, _ = _build(toy, cache=tmp_path, codebook_size=2, n_levels=2, collision="ties")
    assert ids.ties and all(len(t) == 2 for t in ids.tokens) and len(ids.levels) == 2
    assert ids.stats["collisions_after"]["collided_items"] == ids.stats["collisions_before"]["collided_items"] > 0
    rows = code_usage(ids)
    rate = rows[(rows.level == "all") & (rows.metric == "collision_rate")].value.item()
    assert rate == pytest.approx(ids.stats["collisions_before"]["collision_rate"])
    assert set(rows[rows.metric == "used_codes"].level) == {0, 1}
    again, _ = _build(toy, cache=tmp_path, codebook_size=2, n_levels=2, collision="ties")   # from the cache
    assert again.ties and again.tokens == ids.tokens
    # the extra-token policy's code usage has the disambiguating level too, collision-free
    unique, _ = _build(toy, codebook_size=2, n_levels=2)
    rows = code_usage(unique)
    assert set(rows[rows.metric == "used_codes"].level) == {0, 1, 2}


@pytest.mark.parametrize("key,value", [("collision", "reassign"), ("codebook_size", 1),
                                       ("n_levels", 0), ("kmeans_iters", 0)])
def test_bad_config_names_the_key(toy, key, value):
    with pytest.raises(ConfigError, match=key):
        _build(toy, **{key: value})


def _generative(ds, store, backbone, identifier_config, tmp_path):
    cls = METHODS.get("generative")
    smoke_backbone = {"t5": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16, "d_ff": 64},
                      "causal": {"hidden": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                                 "intermediate": 64}}[backbone]
    cfg = build_config(cls.Config, {"identifier": "rq-kmeans", "backbone": backbone, "epochs": 2,
                                    "beams": 10, "train_last_n": 3, "backbone_config": smoke_backbone,
                                    "identifier_config": {**IDENTIFIERS.get("rq-kmeans").smoke_config,
                                                          **identifier_config}})
    model = cls(cfg, Context(ds, store, "cpu", 0, cache=tmp_path / "cache", progress=False))
    model.fit(Evaluator(ds, EvalConfig(ks=(5, 10))).validation_ndcg)
    return model


@pytest.mark.parametrize("backbone", ["t5", "causal"])
def test_generative_runs_rq_kmeans_ids_on_either_backbone(toy, tmp_path, backbone):
    ds, store = toy
    model = _generative(ds, store, backbone, {}, tmp_path)
    assert model.family_of(model.config) == "codebook"
    users = np.arange(ds.n_users)
    items, _ = model.rank(user_batch(ds, "test", users), 10)
    assert all(len(set(r)) == 10 and 0 not in r for r in items.tolist())
    cell = CellDir(tmp_path / "cell")
    model.write_artefacts(cell)
    assert cell.identifier_stats() is not None and cell.identifiers(ds.item_ids).tokens == model.identifiers.tokens


def test_generative_returns_every_item_of_a_tied_identifier_with_one_score(toy, tmp_path):
    ds, store = toy
    model = _generative(ds, store, "t5", {"codebook_size": 2, "n_levels": 2, "collision": "ties"}, tmp_path)
    assert model.identifiers.ties
    groups: dict[tuple, list[int]] = {}
    for item, toks in enumerate(model.identifiers.tokens, start=1):
        groups.setdefault(toks, []).append(item)
    users = np.arange(8)
    items, scores = model.rank(user_batch(ds, "test", users), 10)
    for row, sc in zip(items.tolist(), scores.tolist()):
        assert len(set(row)) == 10 and 0 not in row
        assert sc == sorted(sc, reverse=True)
        first = groups[model.identifiers.tokens[row[0] - 1]]
        # the best identifier's items come first, in id order, all with its score
        assert row[:min(10, len(first))] == first[:10]
        assert len({round(s, 6) for s in sc[:min(10, len(first))]}) == 1
    # a candidate mask applies to the tied items too
    cand = torch.zeros(ds.n_items + 1, dtype=torch.bool)
    cand[1:8] = True
    items, _ = model.rank(user_batch(ds, "test", users), 5, candidates=cand)
    assert all(0 < i < 8 for row in items.tolist() for i in row)
    # exact global scores tie the same items
    exact = model.score(user_batch(ds, "test", users[:2]))
    for members in groups.values():
        assert torch.allclose(exact[:, members], exact[:, members[:1]].expand(-1, len(members)))


def test_tied_identifiers_with_exclusions(toy, tmp_path):
    """A tie group leaves the search only when ALL its items are excluded for that user; its
    excluded members are dropped, its other members kept."""
    ds, store = toy
    model = _generative(ds, store, "t5", {"codebook_size": 2, "n_levels": 2, "collision": "ties"}, tmp_path)
    groups: dict[tuple, list[int]] = {}
    for item, toks in enumerate(model.identifiers.tokens, start=1):
        groups.setdefault(toks, []).append(item)
    users = np.arange(4)
    top, _ = model.rank(user_batch(ds, "test", users), 10)
    big = max(groups.values(), key=len)
    first = next(g for g in groups.values() if top[0, 0].item() in g)
    # user 0: exclude all but one member of its best group, and every member of the largest
    keep = first[-1]
    ban = sorted((set(first) - {keep}) | (set(big) - {keep}))
    exclude = torch.zeros((4, len(ban)), dtype=torch.long)
    exclude[0] = torch.tensor(ban)
    items, _ = model.rank(user_batch(ds, "test", users), 10, exclude=exclude)
    assert not set(items[0].tolist()) & set(ban) and 0 not in items[0].tolist()
    assert keep in items[0].tolist()
    assert torch.equal(items[1:], top[1:])             # other users untouched
