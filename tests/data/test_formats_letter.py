import json

import pytest

from benchmarks.data.formats.letter import read_letter_json
from benchmarks.errors import DataFormatError

INTER = {"0": [0, 1, 2], "1": ["5", 0], "u7": [2]}
ITEM = {
    "0": {"asin": "B004756YJA", "title": "OPI &amp; Co\nNail  Lacquer",
          "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Tools"]]},
    "1": {"title": "Shampoo", "categories": ["Beauty", "Hair Care"], "brand": "ACME",
          "description": ["Clean.", "Fresh."]},
    "2": {"title": "Brush", "categories": "Beauty, Tools", "description": "Soft"},
}


def write(d, name="Beauty", inter=INTER, item=ITEM):
    d.mkdir(exist_ok=True)
    (d / f"{name}.inter.json").write_text(inter if isinstance(inter, str) else json.dumps(inter, indent=4))
    if item is not None:
        (d / f"{name}.item.json").write_text(item if isinstance(item, str) else json.dumps(item, indent=2))
    return d


def test_reads_sequences_in_list_order_and_item_text(tmp_path):
    raw = read_letter_json(write(tmp_path / "b"), "Beauty")
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp"]
    assert df.user.tolist() == ["0", "0", "0", "1", "1", "u7"]
    assert df.item.tolist() == ["0", "1", "2", "5", "0", "2"]
    assert df.timestamp.isna().all() and not raw.has_timestamps
    items = raw.items
    assert list(items.columns) == ["title", "categories", "brand", "description", "asin"]
    assert items.loc["0"].to_dict() == {"title": "OPI & Co Nail Lacquer",
                                        "categories": "Beauty, Makeup, Nails, Tools",
                                        "brand": None, "description": None, "asin": "B004756YJA"}
    assert items.loc["1"].to_dict() == {"title": "Shampoo", "categories": "Beauty, Hair Care",
                                        "brand": "ACME", "description": "Clean. Fresh.",
                                        "asin": None}
    assert items.loc["2", "categories"] == "Beauty, Tools"


def test_item_file_is_optional(tmp_path):
    assert read_letter_json(write(tmp_path / "s", item=None), "Beauty").items is None


def test_bad_json_names_line(tmp_path):
    d = write(tmp_path / "b", inter='{\n  "0": [0, 1],\n  "1": [2 3]\n}')
    with pytest.raises(DataFormatError) as e:
        read_letter_json(d, "Beauty")
    assert str(e.value).startswith(f"{d / 'Beauty.inter.json'}:3: expected valid JSON")


@pytest.mark.parametrize("seq", ['{"a": 1}', "[0, 1.5]", "[0, null]", "[true]"])
def test_bad_sequence_names_users_line(tmp_path, seq):
    d = write(tmp_path / "b", inter='{\n  "0": [0, 1],\n  "1": ' + seq + "\n}")
    with pytest.raises(DataFormatError) as e:
        read_letter_json(d, "Beauty")
    assert str(e.value).startswith(f"{d / 'Beauty.inter.json'}:3: expected a JSON object user "
                                   f"-> list of item ids (ints or strings), got '\"1\": {seq}'")


def test_bad_item_file(tmp_path):
    d = write(tmp_path / "b", item='{\n "0": {"title": "x"},\n "1": "just a string"\n}')
    with pytest.raises(DataFormatError, match=r"Beauty\.item\.json:3: expected a JSON object item"):
        read_letter_json(d, "Beauty")
    d = write(tmp_path / "c", inter="[1, 2]")
    with pytest.raises(DataFormatError, match=r"Beauty\.inter\.json:1: expected a JSON object user"):
        read_letter_json(d, "Beauty")


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"Nope\.inter\.json: expected an existing file"):
        read_letter_json(tmp_path, "Nope")


@pytest.mark.shared
def test_real_beauty(shared):
    raw = read_letter_json(shared("beauty"), "Beauty")
    df = raw.interactions
    assert (df.user.nunique(), df.item.nunique(), len(df)) == (22363, 12101, 198502)
    assert df.item.iloc[:7].tolist() == ["0", "1", "2", "3", "4", "5", "6"]
    assert len(raw.items) == 12101 and raw.items.title.notna().all()
    assert raw.items.loc["0", "title"] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert raw.items.loc["0", "categories"] == "Beauty, Makeup, Nails, Nail Polish"
    assert not raw.items.title.str.contains("\n|\t|&amp;").any()


@pytest.mark.shared
def test_real_yelp(shared):
    raw = read_letter_json(shared("yelp"), "Yelp")
    df = raw.interactions
    assert (df.user.nunique(), df.item.nunique(), len(df)) == (30431, 20033, 316354)
    assert raw.items.loc["1"].to_dict() == {"title": "Sal's Pizza", "description":
                                            "Food Delivery Services, Italian, Sandwiches, Food, "
                                            "Pizza, Restaurants, Chicken Wings"}
