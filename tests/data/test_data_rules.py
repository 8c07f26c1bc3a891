"""The data rules (README "Data rules") across the readers: a missing timestamp, undecodable
bytes, an empty or all-filtered file. Each bad input is one error naming the file and line."""

import json

import numpy as np
import pytest

from benchmarks.data.catalog import load_dataset
from benchmarks.errors import DataFormatError, EmptyDatasetError

N_USERS, PER_USER = 200, 6


def _rows(seed: int = 0) -> list[tuple[str, str, float]]:
    """200 users x 6 interactions, timestamps increasing per user, the file SHUFFLED."""
    rows = [(str(u + 1), str((u * 7 + k) % 50 + 1), float(10_000 * k + u))
            for u in range(N_USERS) for k in range(PER_USER)]
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order]


def _flags() -> str:
    return "|".join(["0"] * 19)


def write_recbole(folder, rows, ts_text=None):
    """``ts_text``: {row index: the timestamp field's text} replacing the number there."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for n, (u, i, t) in enumerate(rows):
        lines.append(f"{u}\t{i}\t4\t{(ts_text or {}).get(n, repr(t))}")
    (folder / "x.inter").write_text("\n".join(lines) + "\n")
    return {"format": "recbole", "path": str(folder)}, folder / "x.inter", 2   # data from line 2


def write_movielens(folder, rows, ts_text=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(
        f"{u}\t{i}\t4\t{(ts_text or {}).get(n, int(t))}\n" for n, (u, i, t) in enumerate(rows)))
    items = sorted({i for _, i, _ in rows}, key=int)
    (folder / "u.item").write_text("".join(f"{i}|Movie {i}|01-Jan-1995||http://x|{_flags()}\n"
                                           for i in items))
    return {"format": "movielens-100k", "path": str(folder)}, folder / "u.data", 1


def write_amazon(folder, rows, ts_text=None):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (u, i, t) in enumerate(rows):
        rec = json.dumps({"reviewerID": u, "asin": i, "overall": 4.0, "unixReviewTime": int(t)})
        if ts_text and n in ts_text:
            rec = rec.replace(f'"unixReviewTime": {int(t)}', f'"unixReviewTime": {ts_text[n]}')
        lines.append(rec)
    (folder / "reviews.json").write_text("\n".join(lines) + "\n")
    return {"format": "amazon2014", "reviews": str(folder / "reviews.json")}, folder / "reviews.json", 1


WRITERS = {"recbole": write_recbole, "movielens-100k": write_movielens, "amazon2014": write_amazon}
#: how each format can spell a missing / non-finite timestamp
MISSING = {"recbole": ["nan", "NaN", "", "inf"], "movielens-100k": ["nan", "NaN", "-inf"],
           "amazon2014": ["NaN", '"nan"', "Infinity", "null"]}


def _load(entry, name="d"):
    return load_dataset({"name": name, "k_core": 0, **entry})


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_timestamps_order_every_user_of_a_shuffled_file(tmp_path, fmt):
    rows = _rows()
    entry, _, _ = WRITERS[fmt](tmp_path / fmt, rows)
    ds = _load(entry)
    last = {}
    for u, i, t in rows:
        if t > last.get(u, (-1, None))[0]:
            last[u] = (t, i)
    hits = sum(ds.item_ids[ds.test[n][0] - 1] == last[raw][1] for n, raw in enumerate(ds.user_ids))
    assert hits == N_USERS and ds.info["has_timestamps"]


@pytest.mark.parametrize("fmt,text", [(f, t) for f in sorted(MISSING) for t in MISSING[f]])
def test_one_missing_timestamp_is_an_error_naming_file_and_line(tmp_path, fmt, text):
    """One NaN among 1,200 timestamps used to switch time ordering off for EVERY user (the
    file order then gave the right test item for 17 of 200 users): now it is refused."""
    rows = _rows()
    bad = 737
    entry, path, first = WRITERS[fmt](tmp_path / fmt, rows, ts_text={bad: text})
    with pytest.raises(DataFormatError) as err:
        _load(entry)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{first + bad}: ")
    assert "timestamp" in msg and "finite" in msg and err.value.line == first + bad


def test_undecodable_id_in_movielens_ratings_is_an_error(tmp_path):
    """u.data was read as latin-1, so a byte that is not text became an id of its own (and the
    k-core filter dropped that item without a word)."""
    rows = _rows()
    entry, path, _ = write_movielens(tmp_path / "ml", rows)
    data = path.read_bytes().splitlines(keepends=True)
    u, i, _ = data[41].split(b"\t", 2)
    data[41] = data[41].replace(b"\t" + i + b"\t", b"\t" + i + b"\xff\t", 1)
    path.write_bytes(b"".join(data))
    with pytest.raises(DataFormatError) as err:
        _load(entry)
    assert str(err.value).startswith(f"{path}:42: expected utf-8 text, got 'undecodable bytes (hex) ff'")


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_empty_or_all_filtered_data_names_the_file(tmp_path, fmt):
    entry, path, _ = WRITERS[fmt](tmp_path / "empty", [])
    with pytest.raises(EmptyDatasetError) as err:
        _load(entry)
    assert str(path) in str(err.value) and "no interaction" in str(err.value)
    entry, path, _ = WRITERS[fmt](tmp_path / "few", _rows())
    with pytest.raises(EmptyDatasetError) as err:
        load_dataset({"name": "few", "k_core": 50, **entry})
    assert str(path) in str(err.value) and "k_core=50" in str(err.value)
