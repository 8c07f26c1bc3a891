"""Item text templates, the missing-text rules, real MiniLM embeddings, CF embeddings."""

import numpy as np
import pytest

from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.features import FeatureStore, MissingTextError, render_template


def test_template_drops_missing_fields_with_their_separator():
    t = "{title}. {categories}. {brand}. {description}"
    assert render_template(t, {"title": "Toy Story", "categories": "Animation, Comedy"}) == \
        "Toy Story. Animation, Comedy"
    assert render_template(t, {"title": "A", "brand": "B"}) == "A. B"
    assert render_template("Title: {title}; Brand: {brand}", {"title": "A  b\nc"}) == "Title: A b c"
    assert render_template("Title: {title}; Brand: {brand}", {"brand": "B"}) == "Brand: B"
    assert render_template(t, {}) == ""


def test_items_without_text_fall_back_or_fail_clearly(tmp_path):
    ds = toy_dataset()
    ds.item_text["title"][0] = None
    ds.item_text["categories"][0] = None
    store = FeatureStore(ds, tmp_path)
    texts = store.item_texts()
    assert texts[0] == f"item {ds.item_ids[0]}" and store.text_report()["fallback_items"] == 1
    ds.item_text = {}
    with pytest.raises(MissingTextError, match="has no item text"):
        FeatureStore(ds, tmp_path).item_texts()


def test_real_minilm_embeddings_offline_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = toy_dataset()
    store = FeatureStore(ds, tmp_path, progress=False)
    emb = store.text_embeddings()
    assert emb.shape == (ds.n_items + 1, 384) and not emb[0].any()
    assert np.allclose(np.linalg.norm(emb[1:], axis=1), 1, atol=1e-3)   # MiniLM normalises
    # items of the same block share a category word: closer than items of different blocks
    sims = emb[1:] @ emb[1:].T
    block = np.array([int(c.split()[-1]) for c in ds.item_text["categories"]])
    same = sims[block[:, None] == block[None, :]].mean()
    diff = sims[block[:, None] != block[None, :]].mean()
    assert same > diff
    again = FeatureStore(ds, tmp_path).text_embeddings()   # from the cache file
    assert np.array_equal(emb, again)


def test_text_embeddings_do_not_depend_on_the_thread_count(tmp_path, monkeypatch):
    # measured on ML-100K's 1,349 items too: the same bytes with 1, 2, 3, 4 and 8 torch threads
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = toy_dataset()
    out = []
    for threads in (1, 3):
        torch.set_num_threads(threads)          # the suite's fixture restores the count afterwards
        out.append(FeatureStore(ds, tmp_path / str(threads), progress=False).text_embeddings())
    assert np.array_equal(out[0], out[1])


def test_cf_embeddings_train_a_sasrec_once(tmp_path):
    ds = toy_dataset()
    store = build_context(ds, cache=tmp_path, progress=False).features
    emb = store.cf_embeddings(dim=8, sasrec_config={"epochs": 2, "n_heads": 1, "inner": 16})
    assert emb.shape == (ds.n_items + 1, 8) and not emb[0].any() and emb[1:].std() > 0
    files = list(store.dir.glob("cf-sasrec-*.npy"))
    assert len(files) == 1
    assert np.array_equal(store.cf_embeddings(dim=8, sasrec_config={"epochs": 2, "n_heads": 1, "inner": 16}), emb)


@pytest.mark.shared
def test_published_cf_embeddings_line_up_with_item_ids(shared_datasets, monkeypatch, tmp_path):
    monkeypatch.setenv("GENREC_BENCH_DATA", str(shared_datasets))
    from benchmarks.data.catalog import load_dataset
    ds = load_dataset("beauty")
    emb = FeatureStore(ds, tmp_path).cf_embeddings(dim=32, source="published")
    raw = np.load(shared_datasets / "beauty" / "Beauty-32d-sasrec.npy")
    i = ds.item_ids.index("17")
    assert np.array_equal(emb[i + 1], raw[17])
