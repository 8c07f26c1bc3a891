"""setrec-beauty's published 64-d SASRec table is the CF token's source (fresh and cached loads)."""

import numpy as np

from benchmarks.data.catalog import load_dataset
from benchmarks.features import FeatureStore


def _obj(value):
    arr = np.empty((), dtype=object)
    arr[()] = value
    return arr


def test_setrec_beauty_uses_the_published_sasrec_table(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "setrec-beauty"
    folder.mkdir(parents=True)
    train = {0: [0, 1, 2, 3], 1: [2, 3, 4], 2: [1, 4, 0]}
    for name, value in (("training_dict", train), ("validation_dict", {0: [4], 1: [], 2: []}),
                        ("testing_dict", {0: [], 1: [5], 2: []}), ("warm_item", {0, 1, 2, 3, 4}),
                        ("cold_item", {5})):
        np.save(folder / f"{name}.npy", _obj(value), allow_pickle=True)
    table = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)      # row r = raw item r
    np.save(folder / "SASRec_item_embed.npy", table)
    monkeypatch.setenv("GENREC_BENCH_DATA", str(tmp_path / "data"))
    for _ in range(2):                                            # fresh, then the cached copy
        ds = load_dataset("setrec-beauty")
        emb = FeatureStore(ds, tmp_path / "cache", progress=False).cf_embeddings(4)
        assert emb.shape == (ds.n_items + 1, 4) and not emb[0].any()
        for i, raw in enumerate(ds.item_ids, start=1):
            assert np.array_equal(emb[i], table[int(raw)])
