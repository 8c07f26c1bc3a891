import gzip
import json

import pytest

from benchmarks.data.formats.yelp import read_yelp
from benchmarks.errors import DataFormatError

BUSINESS = [
    {"business_id": "b1", "name": "The Great Greek", "city": "Henderson",
     "categories": "Diners, Greek, Restaurants"},
    {"business_id": "b2", "name": "Sal&#39;s Pizza", "categories": None},
]
REVIEWS = [
    {"review_id": "r1", "user_id": "u1", "business_id": "b2", "stars": 4.0,
     "date": "2018-07-07 22:09:11", "text": "Good"},
    {"review_id": "r2", "user_id": "u2", "business_id": "b1", "stars": 1, "date": "1970-01-02"},
]


def write(path, records, gz=False):
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_business_and_reviews(tmp_path, gz):
    biz = write(tmp_path / "business.json", BUSINESS, gz)
    rev = write(tmp_path / "review.json", REVIEWS, gz)
    raw = read_yelp(biz, rev)
    df = raw.interactions
    assert df.user.tolist() == ["u1", "u2"] and df.item.tolist() == ["b2", "b1"]
    assert df.timestamp.tolist() == [1531001351.0, 86400.0]  # UTC
    assert df.rating.tolist() == [4.0, 1.0]
    assert raw.items.index.tolist() == ["b1", "b2"]
    assert raw.items.loc["b1"].to_dict() == {"title": "The Great Greek",
                                             "categories": "Diners, Greek, Restaurants"}
    assert raw.items.loc["b2"].to_dict() == {"title": "Sal's Pizza", "categories": None}
    assert read_yelp(None, rev).items is None


@pytest.mark.parametrize("bad", [
    {"user_id": "u3", "business_id": "b1", "stars": 2, "date": "07/07/2018"},
    {"user_id": "u3", "business_id": "b1", "date": "2018-07-07 22:09:11"},
    '{"user_id": "u3", "business_id": ',
])
def test_bad_review_line(tmp_path, bad):
    biz = write(tmp_path / "business.json", BUSINESS)
    rev = write(tmp_path / "review.json.gz", [*REVIEWS, bad], gz=True)
    with pytest.raises(DataFormatError) as e:
        read_yelp(biz, rev)
    assert str(e.value).startswith(f"{rev}:3: expected a JSON object with user_id, business_id, "
                                   "stars and date 'YYYY-MM-DD HH:MM:SS'")


def test_bad_business_line_and_missing_files(tmp_path):
    rev = write(tmp_path / "review.json", REVIEWS)
    biz = write(tmp_path / "business.json", [BUSINESS[0], {"name": "No id"}])
    with pytest.raises(DataFormatError, match=r"business\.json:2: expected a JSON object with business_id"):
        read_yelp(biz, rev)
    with pytest.raises(DataFormatError, match=r"missing\.json: expected an existing file"):
        read_yelp(tmp_path / "missing.json", rev)
    with pytest.raises(DataFormatError, match=r"norev\.json: expected an existing file"):
        read_yelp(None, tmp_path / "norev.json")
