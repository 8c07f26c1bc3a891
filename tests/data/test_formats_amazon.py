import gzip
import json

import pytest

from benchmarks.data.formats.amazon import read_amazon2014, read_amazon2018
from benchmarks.errors import DataFormatError

REVIEWS = [
    {"reviewerID": "A1", "asin": "B001", "reviewerName": "x", "overall": 5.0,
     "unixReviewTime": 1391040000, "reviewTime": "01 30, 2014"},
    {"reviewerID": "A2", "asin": "B002", "overall": 3.0, "unixReviewTime": 1388534400},
    {"reviewerID": "A1", "asin": "B002", "overall": 4.0, "unixReviewTime": 1388620800},
]
META_2014 = [
    "{'asin': 'B001', 'title': 'Lip Stain &amp; Gloss\\n Set', 'price': 9.99, "
    "'categories': [['Beauty', 'Makeup', 'Lips'], ['Beauty', 'Skin Care']], "
    "'brand': 'Japonesque', 'description': \"Don't  smudge.\", 'related': {'also_bought': ['B002']}}",
    "{'asin': 'B002', 'categories': [['Beauty']]}",
]
META_2018 = [
    {"asin": "B001", "title": "Lip Stain", "category": ["Beauty", "Makeup", "Beauty"],
     "brand": "Japonesque", "description": ["Long lasting.", " <b>Vegan</b> &amp; cruelty free "]},
    {"asin": "B002", "title": "", "category": [], "description": "One line", "brand": None},
]


def write(path, lines, gz=False):
    text = "".join(line + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def check_reviews(df):
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df.user.tolist() == ["A1", "A2", "A1"]
    assert df.item.tolist() == ["B001", "B002", "B002"]
    assert df.timestamp.tolist() == [1391040000.0, 1388534400.0, 1388620800.0]
    assert df.rating.tolist() == [5.0, 3.0, 4.0]


@pytest.mark.parametrize("gz", [False, True])
def test_2014(tmp_path, gz):
    suffix = ".json.gz" if gz else ".json"
    rev = write(tmp_path / f"reviews_Beauty_5{suffix}", [json.dumps(r) for r in REVIEWS], gz)
    meta = write(tmp_path / f"meta_Beauty{suffix}", META_2014, gz)
    raw = read_amazon2014(rev, meta)
    check_reviews(raw.interactions)
    items = raw.items
    assert items.index.tolist() == ["B001", "B002"]
    assert list(items.columns) == ["title", "categories", "brand", "description", "price"]
    assert items.loc["B001"].to_dict() == {
        "title": "Lip Stain & Gloss Set", "categories": "Beauty, Makeup, Lips, Skin Care",
        "brand": "Japonesque", "description": "Don't smudge.", "price": "9.99"}
    assert items.loc["B002"].to_dict() == {"title": None, "categories": "Beauty", "brand": None,
                                           "description": None, "price": None}
    assert read_amazon2014(rev).items is None


@pytest.mark.parametrize("gz", [False, True])
def test_2018(tmp_path, gz):
    rev = write(tmp_path / "Beauty_5.json", [json.dumps(r) for r in REVIEWS], gz)
    meta = write(tmp_path / "meta_Beauty.json", [json.dumps(m) for m in META_2018], gz)
    raw = read_amazon2018(rev, meta)
    check_reviews(raw.interactions)
    assert raw.items.loc["B001"].to_dict() == {
        "title": "Lip Stain", "categories": "Beauty, Makeup", "brand": "Japonesque",
        "description": "Long lasting. <b>Vegan</b> & cruelty free"}
    assert raw.items.loc["B002"].to_dict() == {"title": None, "categories": None, "brand": None,
                                               "description": "One line"}


def test_2014_meta_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    rev = write(tmp_path / "r.json", [json.dumps(REVIEWS[0])])
    meta = write(tmp_path / "m.json", [META_2014[0],
                                       f"__import__('pathlib').Path({str(marker)!r}).touch()"])
    with pytest.raises(DataFormatError) as e:
        read_amazon2014(rev, meta)
    assert str(e.value).startswith(f"{meta}:2: expected a Python dict literal with an 'asin'")
    assert not marker.exists()


@pytest.mark.parametrize("reader", [read_amazon2014, read_amazon2018])
@pytest.mark.parametrize("line", ['{"reviewerID": "A3", "asin": "B1", "overall": 2.0}',
                                  '{"reviewerID": "A3", "asin": "B1", "overall": "x", "unixReviewTime": 1}',
                                  '{"reviewerID": "A3", "asin": ',
                                  '["A3", "B1"]'])
def test_bad_review_line(tmp_path, reader, line):
    rev = write(tmp_path / "r.json.gz", [json.dumps(REVIEWS[0]), "", line], gz=True)
    with pytest.raises(DataFormatError) as e:
        reader(rev)
    assert str(e.value).startswith(f"{rev}:3: expected a JSON object with reviewerID, asin, "
                                   "overall and unixReviewTime")


def test_bad_meta_line_and_missing_files(tmp_path):
    rev = write(tmp_path / "r.json", [json.dumps(REVIEWS[0])])
    meta = write(tmp_path / "m.json", [json.dumps(META_2018[0]), "{'asin': 'B3'}"])
    with pytest.raises(DataFormatError, match=r"m\.json:2: expected a JSON object with an 'asin'"):
        read_amazon2018(rev, meta)
    with pytest.raises(DataFormatError, match=r"nope\.json: expected an existing file"):
        read_amazon2014(tmp_path / "nope.json")
    with pytest.raises(DataFormatError, match=r"nometa\.json: expected an existing file"):
        read_amazon2018(rev, tmp_path / "nometa.json")


def test_truncated_gzip(tmp_path):
    rev = write(tmp_path / "r.json.gz", [json.dumps(r) for r in REVIEWS * 50], gz=True)
    rev.write_bytes(rev.read_bytes()[:-30])
    with pytest.raises(DataFormatError, match=r"r\.json\.gz:\d+: expected a readable \(gzip\) file"):
        read_amazon2014(rev)
