import json

import numpy as np
import pytest

from benchmarks.data.formats.setrec import read_setrec
from benchmarks.errors import DataFormatError


def save(path, value):
    np.save(path, np.array(value, dtype=object), allow_pickle=True)


def write(d, test=None):
    d.mkdir(exist_ok=True)
    save(d / "training_dict.npy", {0: [5, 3, 10], 1: [3], 2: [10, 5]})
    save(d / "validation_dict.npy", {0: [7], 1: [], 2: []})
    save(d / "testing_dict.npy", test if test is not None else {0: [], 1: [8, 7], 2: []})
    save(d / "warm_item.npy", {10, 3, 5})
    save(d / "cold_item.npy", {8, 7})
    return d


def test_reads_splits_in_dict_order(tmp_path):
    raw = read_setrec(write(tmp_path / "s"))
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp", "split"]
    assert df.user.tolist() == ["0", "0", "0", "1", "2", "2", "0", "1", "1"]
    assert df.item.tolist() == ["5", "3", "10", "3", "10", "5", "7", "8", "7"]
    assert df.split.tolist() == ["train"] * 6 + ["valid"] + ["test"] * 2
    assert df.timestamp.isna().all() and raw.presplit and raw.items is None
    assert raw.extras == {"warm_items": ["3", "5", "10"], "cold_items": ["7", "8"]}


def test_warm_and_cold_files_are_optional(tmp_path):
    d = write(tmp_path / "s")
    (d / "warm_item.npy").unlink()
    (d / "cold_item.npy").unlink()
    assert read_setrec(d).extras == {}


def test_errors(tmp_path):
    d = write(tmp_path / "s", test={0: [1.5]})
    with pytest.raises(DataFormatError, match=r"testing_dict\.npy: expected user 0: item ids"):
        read_setrec(d)
    save(d / "testing_dict.npy", [1, 2])
    with pytest.raises(DataFormatError, match=r"testing_dict\.npy: expected a 0-d object array holding a dict"):
        read_setrec(d)
    (d / "validation_dict.npy").unlink()
    with pytest.raises(DataFormatError, match=r"validation_dict\.npy: expected an existing file"):
        read_setrec(d)


@pytest.mark.shared
def test_real_setrec_beauty(shared):
    d = shared("setrec-beauty")
    raw = read_setrec(d)
    df = raw.interactions
    assert df.split.value_counts().to_dict() == {"train": 132990, "valid": 16641, "test": 17579}
    assert df.user.nunique() == 18136 and df.item.nunique() == 12024
    assert len(raw.extras["warm_items"]) == 11407 and len(raw.extras["cold_items"]) == 617
    # the JSON twins hold the same content
    for split, name in (("train", "training_dict"), ("test", "testing_dict")):
        twin = json.loads((d / f"{name}.json").read_text())
        part = df[df.split == split]
        assert part.user.tolist() == [u for u, items in twin.items() for _ in items]
        assert part.item.tolist() == [str(i) for items in twin.values() for i in items]
    cold = json.loads((d / "cold_item.json").read_text())
    assert raw.extras["cold_items"] == [str(i) for i in sorted(cold)]
    assert not set(raw.extras["cold_items"]) & set(df[df.split == "train"].item)
