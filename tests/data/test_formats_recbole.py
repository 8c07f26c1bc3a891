import math

import pytest

from benchmarks.data.formats.recbole import read_recbole
from benchmarks.errors import DataFormatError

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t242\t3\t881250949\n"
         "\n"
         "186\t302\t4.5\t891717742\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n"
        "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n")


def write(d, inter=INTER, item=ITEM, name=None):
    d.mkdir(exist_ok=True)
    name = name or d.name
    (d / f"{name}.inter").write_text(inter)
    if item is not None:
        (d / f"{name}.item").write_text(item)
    return d


def test_reads_inter_and_item(tmp_path):
    d = write(tmp_path / "ml-100k")
    raw = read_recbole(d)
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df.user.tolist() == ["196", "186"] and df.item.tolist() == ["242", "302"]
    assert df.timestamp.tolist() == [881250949.0, 891717742.0]
    assert df.rating.tolist() == [3.0, 4.5]
    assert list(raw.items.columns) == ["title", "categories", "release_year"]
    assert raw.items.loc["302"].to_dict() == {
        "title": "L.A. Confidential", "categories": "Crime, Film-Noir, Mystery, Thriller",
        "release_year": "1997"}
    # the same through the .inter path, and through an explicit name
    assert read_recbole(d / "ml-100k.inter").interactions.equals(df)
    write(tmp_path / "other", name="ml")
    assert read_recbole(tmp_path / "other", name="ml").items.equals(raw.items)
    assert read_recbole(tmp_path / "other").items.equals(raw.items)  # the only .inter file


def test_without_timestamp_rating_or_item_file(tmp_path):
    d = write(tmp_path / "x", inter="item_id:token\tuser_id:token\n7\tu1\n8\tu1\n", item=None)
    raw = read_recbole(d)
    assert list(raw.interactions.columns) == ["user", "item", "timestamp"]
    assert raw.interactions.item.tolist() == ["7", "8"]
    assert all(math.isnan(t) for t in raw.interactions.timestamp) and not raw.has_timestamps
    assert raw.items is None


def test_other_text_fields_map_to_canonical_names(tmp_path):
    item = ("item_id:token\tname:token_seq\tcategories:token_seq\tbrand:token\tprice:float\n"
            "a\tRed &amp; Blue \r Lipstick\tBeauty Makeup\tACME\t9.5\r\n")
    raw = read_recbole(write(tmp_path / "x", item=item))
    assert raw.items.loc["a"].to_dict() == {"title": "Red & Blue Lipstick",
                                            "categories": "Beauty, Makeup", "brand": "ACME",
                                            "price": "9.5"}


@pytest.mark.parametrize("header, expected", [
    ("user_id\titem_id:token", "a tab-separated header of 'field:type'"),
    ("user_id:token\titem_id:text", "a tab-separated header of 'field:type'"),
    ("user_id:token\tasin:token", "a header with the field 'item_id:token'"),
    ("user_id:token\titem_id:token\ttimestamp:token", "'timestamp:float' in the header"),
])
def test_bad_header(tmp_path, header, expected):
    d = write(tmp_path / "x", inter=header + "\n1\t2\t3\n", item=None)
    with pytest.raises(DataFormatError) as e:
        read_recbole(d)
    assert str(e.value).startswith(f"{d / 'x.inter'}:1: expected {expected}")


def test_row_with_wrong_number_of_columns(tmp_path):
    d = write(tmp_path / "x", inter=INTER + "1\t2\t3\n")
    with pytest.raises(DataFormatError) as e:
        read_recbole(d)
    assert str(e.value) == (f"{d / 'x.inter'}:5: expected 4 tab-separated fields (user_id:token "
                            "item_id:token rating:float timestamp:float), got '1\\t2\\t3'")


def test_bad_number_and_bad_item_file(tmp_path):
    d = write(tmp_path / "x", inter=INTER.replace("4.5", "high"))
    with pytest.raises(DataFormatError, match=r"x\.inter:4: field 'rating': expected a finite number"):
        read_recbole(d)
    d = write(tmp_path / "y", item="item_id:token\ttitle:token_seq\n1\tA\tB\n")
    with pytest.raises(DataFormatError, match=r"y\.item:2: expected 2 tab-separated fields"):
        read_recbole(d)


def test_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match=r"nothing\.inter: expected an existing file"):
        read_recbole(tmp_path, name="nothing")


def test_byte_order_mark_and_undecodable_line(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "x.inter").write_bytes(b"\xef\xbb\xbfuser_id:token\titem_id:token\n1\t2\n3\t\xff\xfe\n")
    with pytest.raises(DataFormatError) as e:
        read_recbole(d)
    assert str(e.value) == f"{d / 'x.inter'}:3: expected utf-8 text, got 'undecodable bytes (hex) ff'"
