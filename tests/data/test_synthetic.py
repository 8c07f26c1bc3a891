"""Synthetic catalogs: the size asked for survives preprocessing, the planted structure is
there, the catalog is written once and read back from the cache, parameters are checked."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.data.synthetic import SyntheticSpec, build_catalog, generate_interactions
from benchmarks.errors import ConfigError
from benchmarks.features import FeatureStore


def test_catalog_keeps_every_item_and_is_cached(tmp_path):
    spec = SyntheticSpec(300)
    cat = build_catalog(spec, tmp_path)
    ds = cat.dataset()
    assert ds.n_items == 300 and ds.item_ids == [str(r) for r in range(300)]
    stats = cat.meta["stats"]
    assert stats["dataset_users"] == ds.n_users == stats["users"]
    assert stats["item_count_min"] >= spec.min_length
    # the embeddings and the CF file line up with the dataset's items
    assert cat.text_embeddings().shape == (301, 384) and not cat.text_embeddings()[0].any()
    assert np.allclose(np.linalg.norm(cat.text_embeddings()[1:], axis=1), 1, atol=1e-5)
    # the CF file is found through the dataset's info, as a paper's published file
    store = FeatureStore(ds, tmp_path, progress=False)
    assert store.cf_embeddings(64, "published").shape == (301, 64)
    # a second build reads the folder instead of generating again
    mtime = (cat.folder / "raw.npz").stat().st_mtime_ns
    again = build_catalog(spec, tmp_path)
    assert again.folder == cat.folder and (again.folder / "raw.npz").stat().st_mtime_ns == mtime
    # another parameter, another folder
    assert build_catalog(SyntheticSpec(300, seed=1), tmp_path).folder != cat.folder


def test_generation_is_seeded_and_plants_the_successor_structure():
    spec = SyntheticSpec(500, follow=0.5)
    u1, i1, t1, s1 = generate_interactions(spec)
    u2, i2, t2, _ = generate_interactions(spec)
    assert np.array_equal(u1, u2) and np.array_equal(i1, i2) and np.array_equal(t1, t2)
    # consecutive items of a user: far more often "the same successor" than chance (1 / 500)
    order = np.lexsort((t1, u1))
    u, i = u1[order], i1[order]
    same_user = u[1:] == u[:-1]
    pairs = np.stack([i[:-1][same_user], i[1:][same_user]], 1)
    _, counts = np.unique(pairs, axis=0, return_counts=True)
    assert counts.max() > 10
    assert s1["successor_steps_share"] > spec.follow
    # power-law popularity: the most popular item is far above the median
    assert s1["item_count_max"] > 5 * s1["item_count_median"]


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match="min_length"):
        SyntheticSpec(100, min_length=3)
    with pytest.raises(ConfigError, match="popularity_exponent"):
        SyntheticSpec(100, popularity_exponent=1.0)
