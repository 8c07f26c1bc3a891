"""Filtering, ordering, splits, samples, caps, groups, caching and bad input."""

import numpy as np
import pandas as pd
import pytest

from benchmarks.data.catalog import load_dataset
from benchmarks.data.preprocess import PreprocessOptions, k_core, preprocess
from benchmarks.data.raw import RawData
from benchmarks.data.toy import toy_dataset, toy_raw
from benchmarks.errors import ConfigError, DataFormatError, EmptyDatasetError


def _raw(rows, items=None):
    df = pd.DataFrame(rows, columns=["user", "item", "timestamp"])
    return RawData(df, items)


def test_k_core_is_iterated_until_stable():
    # user c has 1 item; dropping c leaves item z with 1 interaction; dropping z leaves user b with 1
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "z", 2), ("c", "z", 1),
            ("d", "x", 1), ("d", "y", 2)]
    df = k_core(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), 2)
    assert sorted(df["user"].unique()) == ["a", "d"]        # b fell out after z did
    out = k_core(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), 1)
    assert len(out) == len(rows)


def test_chronological_order_ties_keep_file_order_and_loo():
    rows = [("u", "5", 30.0), ("u", "1", 10.0), ("u", "2", 20.0), ("u", "3", 20.0), ("u", "4", 40.0)]
    ds = preprocess(_raw(rows), "t", PreprocessOptions(k_core=0))
    seq = [ds.item_ids[i - 1] for i in np.concatenate([ds.train[0], ds.valid[0], ds.test[0]])]
    assert seq == ["1", "2", "3", "5", "4"]          # 2 and 3 tie at t=20: file order kept
    assert [ds.item_ids[i - 1] for i in ds.valid[0]] == ["5"]
    assert [ds.item_ids[i - 1] for i in ds.test[0]] == ["4"]
    assert ds.item_ids == ["1", "2", "3", "4", "5"]  # numeric raw ids sorted numerically -> 1..N


def test_no_heldout_item_in_any_training_sample_and_history_cap():
    ds = toy_dataset(max_history=4)
    users, hist, targets = ds.training_samples()
    assert hist.shape[1] == 4
    # samples come user by user, target positions 1..len(train)-1 in order: rebuild and compare
    expected = [(u, list(s[max(0, t - 4):t]), s[t]) for u, s in enumerate(ds.train) for t in range(1, len(s))]
    got = [(u, list(h[h > 0]), t) for u, h, t in zip(users, hist, targets)]
    assert got == expected
    # the held-out positions are exactly the last one (test) and second last (validation)
    raw = ds.info["raw_interactions"]
    assert sum(len(s) + 2 for s in ds.train) == raw
    vh = ds.history_matrix("valid")
    th = ds.history_matrix("test")
    for u in range(ds.n_users):
        assert len(ds.valid[u]) == len(ds.test[u]) == 1
        assert list(vh[u][vh[u] > 0]) == list(ds.train[u][-4:])
        assert list(th[u][th[u] > 0]) == list(np.concatenate([ds.train[u], ds.valid[u]])[-4:])


def test_training_windows_cover_each_target_once():
    ds = toy_dataset()
    users, wins = ds.training_windows(3)
    per_user = {}
    for u, w in zip(users, wins):          # windows come from each sequence's end backwards
        inp, tgt = w[:-1], w[1:]
        per_user.setdefault(int(u), []).insert(0, [b for a, b in zip(inp, tgt) if a > 0 and b > 0])
    for u, s in enumerate(ds.train):
        assert [t for win in per_user.get(u, []) for t in win] == list(s[1:])
        assert all(len(win) <= 3 for win in per_user.get(u, []))


def test_global_ratio_split_is_chronological_and_makes_cold_items():
    rows = [(f"u{u}", str(i), float(10 * u + i)) for u in range(6) for i in range(1, 6)]
    rows += [("u9", "99", 1e6), ("u8", "99", 1e6 + 1)]     # an item that only occurs at the end
    ds = preprocess(_raw(rows), "t", PreprocessOptions(k_core=0, split="ratio", ratio=(0.6, 0.2, 0.2)))
    raw_time = {(u, i): t for u, i, t in rows}

    def times(split):
        return [raw_time[(ds.user_ids[u], ds.item_ids[i - 1])] for u, s in enumerate(getattr(ds, split)) for i in s]
    assert max(times("train")) <= min(times("valid")) and max(times("valid")) <= min(times("test"))
    assert sum(len(s) for s in ds.train) == round(0.6 * len(rows))
    cold = ds.cold_mask()
    assert cold[ds.item_ids.index("99") + 1] and cold.sum() >= 1


def test_timestamps_are_kept_aligned_with_every_split_and_cached(tmp_path):
    from benchmarks.data.dataset import Dataset
    rows = [(f"u{u}", str(i), float(1000 * u + 7 * i)) for u in range(4) for i in range(1, 7)]
    raw_time = {(u, i): t for u, i, t in rows}
    for opts in (PreprocessOptions(k_core=0), PreprocessOptions(k_core=0, split="ratio")):
        ds = preprocess(_raw(rows), "t", opts)
        assert ds.has_timestamps
        for split in ("train", "valid", "test"):
            for u, (items, times) in enumerate(zip(getattr(ds, split), getattr(ds, f"{split}_times"))):
                assert times.dtype == np.float64
                assert times.tolist() == [raw_time[(ds.user_ids[u], ds.item_ids[i - 1])] for i in items]
        ds.save(tmp_path / opts.split)
        back = Dataset.load(tmp_path / opts.split)
        assert all(np.array_equal(a, b) for a, b in zip(back.test_times, ds.test_times))
        assert all(np.array_equal(a, b) for a, b in zip(back.train_times, ds.train_times))
    # the history's times follow the history; the windows' times follow the windows
    ds = toy_dataset(max_history=3)
    for split in ("valid", "test"):
        for h, t, u in zip(ds.history(split), ds.history_times(split), range(ds.n_users)):
            assert len(h) == len(t) and (np.diff(t) >= 0).all()
        assert all(t[-1] <= tt[0] for t, tt in zip(ds.history_times(split), ds.target_times(split)))
    ds = preprocess(_raw(rows), "t", PreprocessOptions(k_core=0))   # no repeated (user, item)
    users, wins = ds.training_windows(2)
    wt = ds.training_window_times(2)
    assert wt.shape == wins.shape and not wt[wins == 0].any() and len(wins) > ds.n_users
    assert all(wt[r, c] == raw_time[(ds.user_ids[users[r]], ds.item_ids[wins[r, c] - 1])]
               for r, c in zip(*np.nonzero(wins)))


def test_data_without_timestamps_has_none_and_says_so():
    raw = _raw([("u", "1", np.nan), ("u", "2", np.nan), ("u", "3", np.nan)])
    ds = preprocess(raw, "t", PreprocessOptions(k_core=0))
    assert not ds.has_timestamps and ds.train_times is ds.valid_times is ds.test_times is None
    with pytest.raises(ValueError, match="no timestamps"):
        ds.history_times("test")
    from benchmarks.data.dataset import Dataset
    with pytest.raises(ValueError, match="one timestamp per interaction of train"):
        Dataset("t", ds.n_items, ds.item_ids, ds.user_ids, ds.train, ds.valid, ds.test,
                train_times=[np.zeros(0)], valid_times=[np.zeros(1)], test_times=[np.zeros(1)])


def test_ratio_split_needs_timestamps():
    raw = _raw([("u", "1", np.nan), ("u", "2", np.nan), ("u", "3", np.nan)])
    with pytest.raises(ConfigError, match="timestamps"):
        preprocess(raw, "t", PreprocessOptions(k_core=0, split="ratio"))


def test_a_partly_missing_timestamp_is_refused_not_turned_into_file_order():
    """RawData from any reader: timestamps on every row or on none. One NaN among them used
    to make the whole dataset fall back to file order, and the global time-line split then
    said the dataset 'has no timestamps'."""
    rows = [("u", "1", 30.0), ("u", "2", 10.0), ("u", "3", np.nan), ("u", "4", 20.0)]
    raw = RawData(pd.DataFrame(rows, columns=["user", "item", "timestamp"]), source="mine.csv")
    for split in ("loo", "ratio"):
        with pytest.raises(DataFormatError) as err:
            preprocess(raw, "t", PreprocessOptions(k_core=0, split=split))
        assert str(err.value) == ("mine.csv: expected a finite timestamp on every interaction or on "
                                  "none, got '1 of 4 without one, the first at row 3 in file order "
                                  "(user u, item 3)'")
    raw.interactions.loc[2, "timestamp"] = np.inf
    with pytest.raises(DataFormatError, match="1 of 4 without one"):
        preprocess(raw, "t", PreprocessOptions(k_core=0))
    assert not raw.has_timestamps and raw.missing_timestamps() == 1


def test_empty_after_filter_is_one_clear_error():
    with pytest.raises(EmptyDatasetError, match="k_core=50"):
        preprocess(toy_raw(), "toy", PreprocessOptions(k_core=50))


def test_popularity_groups_equal_item_counts_and_edges():
    ds = toy_dataset()
    g = ds.popularity_groups(4)
    counts = ds.item_train_counts()
    assert g[0] == 0 and set(g[1:]) == {1, 2, 3, 4}
    assert np.bincount(g[1:])[1:].tolist() == [8, 7, 8, 7] or sorted(np.bincount(g[1:])[1:]) == [7, 7, 8, 8]
    assert counts[g == 1].min() >= counts[g == 2].max()
    g2 = ds.popularity_groups(edges=[0.5])
    assert np.bincount(g2[1:])[1:].tolist() == [15, 15]


def test_item_text_is_aligned_with_ids():
    ds = toy_dataset()
    for i, rid in enumerate(ds.item_ids):
        assert ds.item_text["title"][i].endswith(f"thing {rid}")


def _write_recbole(folder, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n")


def test_load_dataset_caches_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    from benchmarks.cache import cache_dir
    data = tmp_path / "data"
    monkeypatch.setenv("GENREC_BENCH_DATA", str(data))
    raw = toy_raw()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{t}" for u, i, t in raw.interactions.itertuples(index=False)]
    _write_recbole(data / "toy", lines)
    spec = {"name": "toy", "format": "recbole", "path": str(data / "toy")}
    ds = load_dataset(spec)
    assert ds.n_items == 30 and ds.info["cache_key"]
    cached = list((cache_dir() / "datasets").iterdir())
    assert len(cached) == 1
    again = load_dataset(spec)
    assert [len(s) for s in again.train] == [len(s) for s in ds.train]
    # a malformed line: one clear error naming file and line, and no new cache entry
    _write_recbole(data / "bad", lines[:5] + ["u1\tonly-two-fields"] + lines[5:])
    with pytest.raises(DataFormatError) as err:
        load_dataset({"name": "bad", "format": "recbole", "path": str(data / "bad")})
    assert "ml-100k.inter:6" in str(err.value)
    assert sorted(p.name for p in (cache_dir() / "datasets").iterdir()) == [p.name for p in cached]


@pytest.mark.shared
def test_shared_beauty_and_setrec_counts(shared_datasets, monkeypatch):
    monkeypatch.setenv("GENREC_BENCH_DATA", str(shared_datasets))
    beauty = load_dataset("beauty").stats()
    assert (beauty["users"], beauty["items"], beauty["interactions"]) == (22363, 12101, 198502)
    assert beauty["users_over_history_cap"] == 1019
    setrec = load_dataset("setrec-beauty")
    st = setrec.stats()
    assert (st["train_interactions"], st["valid_interactions"], st["test_interactions"]) == (132990, 16641, 17579)
    assert (st["warm_items"], st["cold_items"]) == (11407, 617)


def _doubled_last_rows(n_users=20, doubled=(0, 3, 7)):
    """Each user: items 1..6 at times 10..60; users in ``doubled`` have their last row twice."""
    rows = [(f"u{u}", str(k + 1 + u % 3), float(10 * (k + 1))) for u in range(n_users) for k in range(6)]
    rows += [r for r in rows if int(r[0][1:]) in doubled and r[2] == 60.0]
    return rows


def test_duplicate_rows_are_dropped_by_default_and_never_leak_the_test_item(caplog):
    """A (user, item, time) row written twice made the validation item equal the test item for
    that user (the last row twice: second last = last). The default drops the exact repeats,
    counts them and says so."""
    raw = _raw(_doubled_last_rows())
    with caplog.at_level("WARNING", logger="benchmarks.data.preprocess"):
        ds = preprocess(raw, "t", PreprocessOptions(k_core=0))
    assert PreprocessOptions().dedupe == "exact"
    assert all(set(v).isdisjoint(t) for v, t in zip(ds.valid, ds.test))
    stats = ds.stats()
    assert (stats["duplicate_rows"], stats["repeated_user_item"], stats["dropped_duplicates"]) == (3, 3, 3)
    assert stats["users_valid_item_is_test_item"] == 0 and stats["interactions"] == 120
    assert "dataset 't': 3 rows repeat an earlier row's user, item and timestamp: dropped" in caplog.text
    # kept on request (dedupe: none): counted, warned about, and the leak is visible in the stats
    caplog.clear()
    with caplog.at_level("WARNING", logger="benchmarks.data.preprocess"):
        kept = preprocess(raw, "t", PreprocessOptions(k_core=0, dedupe="none"))
    assert kept.stats()["users_valid_item_is_test_item"] == 3 and kept.stats()["dropped_duplicates"] == 0
    assert "3 rows repeat an earlier row's user, item and timestamp: kept (dedupe: none)" in caplog.text


def test_repeats_at_other_times_are_kept_unless_dedupe_user_item():
    rows = [("u", "1", 10.0), ("u", "2", 20.0), ("u", "1", 30.0), ("u", "3", 40.0), ("u", "1", 50.0)]
    ds = preprocess(_raw(rows), "t", PreprocessOptions(k_core=0))
    assert ds.stats()["interactions"] == 5 and ds.stats()["duplicate_rows"] == 0
    assert ds.stats()["repeated_user_item"] == 2
    once = preprocess(_raw(rows), "t", PreprocessOptions(k_core=0, dedupe="user-item"))
    assert [once.item_ids[i - 1] for i in np.concatenate([once.train[0], once.valid[0], once.test[0]])] == ["1", "2", "3"]
    assert once.stats()["dropped_duplicates"] == 2
    # without timestamps no two rows are known to be the same event: repeats are counted, kept
    flat = preprocess(_raw([(u, i, np.nan) for u, i, _ in rows]), "t", PreprocessOptions(k_core=0))
    assert flat.stats()["duplicate_rows"] == 0 and flat.stats()["repeated_user_item"] == 2
    assert flat.stats()["interactions"] == 5


@pytest.mark.parametrize("bad", [True, False, "yes", 1])
def test_dedupe_takes_one_of_three_names(bad):
    with pytest.raises(ConfigError, match=r"dedupe: expected one of exact, user-item, none"):
        PreprocessOptions(dedupe=bad)


def test_every_filtering_step_says_what_it_dropped(caplog):
    rows = [(f"u{u}", str(i), float(10 * i)) for u in range(6) for i in range(1, 6)]
    rows += [("u0", "rare", 99.0), ("lonely", "1", 1.0), ("lonely", "2", 2.0)]
    with caplog.at_level("INFO", logger="benchmarks.data.preprocess"):
        ds = preprocess(_raw(rows), "t", PreprocessOptions(k_core=3))
    f = ds.info["filtering"]
    assert (f["read"], f["kept"]) == (33, 30)
    assert f["dropped"]["k-core 3"] == {"interactions": 3, "users": 1, "items": 1}
    assert f["dropped"]["dedupe exact"]["interactions"] == 0
    assert "dataset 't': 33 interactions read, 30 kept; dropped 3 by k-core 3 (1 users, 1 items gone)" in caplog.text


def test_min_rating_refuses_interactions_without_a_rating():
    """A RecBole file may leave a rating empty; min_rating used to drop those rows silently
    (NaN >= x is false)."""
    df = pd.DataFrame([("u", "1", 1.0, 5.0), ("u", "2", 2.0, np.nan), ("u", "3", 3.0, 4.0)],
                      columns=["user", "item", "timestamp", "rating"])
    raw = RawData(df, source="recbole: x.inter")
    with pytest.raises(ConfigError, match=r"^dataset 't': min_rating is set but 1 of 3 interactions have no "
                                          r"rating \(recbole: x\.inter\)"):
        preprocess(raw, "t", PreprocessOptions(k_core=0, min_rating=4))
    assert preprocess(raw, "t", PreprocessOptions(k_core=0)).n_interactions == 3
