import inspect
import json

import pytest

from benchmarks.data.formats import FORMATS, read_format
from benchmarks.errors import UnknownNameError


def test_registry_names():
    assert sorted(FORMATS) == sorted(["movielens-100k", "movielens-1m", "recbole", "amazon2014",
                                      "amazon2018", "amazon2023", "amazon2023-benchmark", "yelp",
                                      "letter-json", "setrec-npy", "p5-sequential"])


def test_read_format_dispatches_by_name(tmp_path):
    (tmp_path / "X.inter.json").write_text(json.dumps({"u": [1, 2]}))
    raw = read_format("letter-json", path=tmp_path, name="X")
    assert raw.interactions.item.tolist() == ["1", "2"]


def test_unknown_format():
    with pytest.raises(UnknownNameError) as e:
        read_format("csv", path="x")
    assert str(e.value).startswith("unknown format 'csv'; known: amazon2014, amazon2018, amazon2023")


def test_keyword_names_the_catalog_passes():
    params = {n: list(inspect.signature(f).parameters) for n, f in FORMATS.items()}
    assert params == {"movielens-100k": ["path"], "movielens-1m": ["path"],
                      "recbole": ["path", "name"], "letter-json": ["path", "name"],
                      "p5-sequential": ["path", "name"],
                      "setrec-npy": ["path"], "amazon2014": ["reviews", "meta"],
                      "amazon2018": ["reviews", "meta"], "amazon2023": ["reviews", "meta"],
                      "amazon2023-benchmark": ["path", "name", "meta"], "yelp": ["business", "review"]}
