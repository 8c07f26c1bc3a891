import pytest

from benchmarks.data.formats.movielens import ML100K_GENRES, read_movielens_1m, read_movielens_100k
from benchmarks.errors import DataFormatError


def _flags(*on):
    return "|".join("1" if i in on else "0" for i in range(19))


def write_100k(d, genre=True, udata=None):
    d.mkdir(exist_ok=True)
    (d / "u.data").write_text(udata or "196\t242\t3\t881250949\n186\t302\t3.5\t891717742\n"
                              "196\t302\t1\t878887116\n")
    (d / "u.item").write_bytes(
        (f"242|Kolya (1996)|24-Jan-1997||http://x|{_flags(8)}\n"
         f"302|L.A. Confidential (1997)|01-Jan-1997||http://y|{_flags(6, 10, 16)}\n"
         f"303|Les Mis\xe9rables &amp; Co|01-Jan-1997||http://z|{_flags()}\n").encode("latin-1"))
    if genre:
        (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n")
    return d


@pytest.mark.parametrize("genre", [True, False])
def test_100k_reads_ratings_in_file_order_and_genres(tmp_path, genre):
    raw = read_movielens_100k(write_100k(tmp_path / "ml", genre=genre))
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df.user.tolist() == ["196", "186", "196"]
    assert df.item.tolist() == ["242", "302", "302"]
    assert df.timestamp.tolist() == [881250949.0, 891717742.0, 878887116.0]
    assert df.rating.tolist() == [3.0, 3.5, 1.0]
    assert str(df.timestamp.dtype) == "float64" and raw.has_timestamps and not raw.presplit
    items = raw.items
    assert items.index.tolist() == ["242", "302", "303"]
    assert items.loc["242"].to_dict() == {"title": "Kolya (1996)", "categories": "Drama"}
    assert items.loc["302", "categories"] == "Crime, Film-Noir, Thriller"
    assert items.loc["303", "title"] == "Les Misérables & Co"
    assert items.loc["303", "categories"] is None


def test_100k_missing_ratings_file(tmp_path):
    with pytest.raises(DataFormatError) as e:
        read_movielens_100k(tmp_path)
    assert str(e.value) == f"{tmp_path / 'u.data'}: expected an existing file (the ML-100K ratings file u.data)"


def test_100k_bad_rating_line_names_file_and_line(tmp_path):
    d = write_100k(tmp_path / "ml", udata="1\t2\t3\t4\n1\t2\n")
    with pytest.raises(DataFormatError) as e:
        read_movielens_100k(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'u.data'}:2: expected 4 tab-separated fields (user item rating timestamp)")
    assert msg.endswith("got '1\\t2'") and e.value.line == 2


def test_100k_non_numeric_timestamp(tmp_path):
    d = write_100k(tmp_path / "ml", udata="1\t2\t3\tyesterday\n")
    with pytest.raises(DataFormatError, match=r"u\.data:1: expected 4 tab-separated"):
        read_movielens_100k(d)


def test_100k_bad_item_line(tmp_path):
    d = write_100k(tmp_path / "ml")
    with open(d / "u.item", "a", encoding="latin-1") as f:
        f.write("304|Too short|01-Jan-1997\n")
    with pytest.raises(DataFormatError, match=r"u\.item:4: expected 24 '\|'-separated fields"):
        read_movielens_100k(d)


def test_100k_bad_genre_file(tmp_path):
    d = write_100k(tmp_path / "ml")
    (d / "u.genre").write_text("unknown|0\nAction|7\n")
    with pytest.raises(DataFormatError, match=r"u\.genre:2: expected 'genre\|index'"):
        read_movielens_100k(d)


def write_1m(d):
    d.mkdir(exist_ok=True)
    (d / "ratings.dat").write_text("1::1193::5::978300760\n2::661::3::978302109\n")
    (d / "movies.dat").write_bytes("1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                                   "661::Caf\xe9 au lait (1993)::Animation|Children's|Musical\n"
                                   .encode("latin-1"))
    return d


def test_1m_reads_ratings_and_movies(tmp_path):
    raw = read_movielens_1m(write_1m(tmp_path / "ml1m"))
    df = raw.interactions
    assert df.user.tolist() == ["1", "2"] and df.item.tolist() == ["1193", "661"]
    assert df.timestamp.tolist() == [978300760.0, 978302109.0] and df.rating.tolist() == [5.0, 3.0]
    assert raw.items.index.tolist() == ["1193", "661"]
    assert raw.items.loc["661"].to_dict() == {"title": "Café au lait (1993)",
                                              "categories": "Animation, Children's, Musical"}


def test_1m_errors(tmp_path):
    d = write_1m(tmp_path / "ml1m")
    with open(d / "ratings.dat", "a") as f:
        f.write("3::12::4\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat:3: expected 4 '::'-separated fields"):
        read_movielens_1m(d)
    (d / "ratings.dat").write_text("1::1193::5::978300760\n")
    (d / "movies.dat").write_text("1193 Title Drama\n")
    with pytest.raises(DataFormatError, match=r"movies\.dat:1: expected 3 '::'-separated fields"):
        read_movielens_1m(d)
    (d / "movies.dat").unlink()
    with pytest.raises(DataFormatError, match=r"movies\.dat: expected an existing file"):
        read_movielens_1m(d)


def test_100k_nan_rating_or_timestamp_names_the_field(tmp_path):
    d = write_100k(tmp_path / "ml", udata="1\t2\t3\t4\n1\t3\tnan\t5\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2: field 'rating': expected a finite number"):
        read_movielens_100k(d)
    d = write_100k(tmp_path / "ml", udata="1\t2\t3\t4\n1\t3\t3\tNaN\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2: field 'timestamp': expected a finite number "
                                              r"\(the timestamp, seconds\)"):
        read_movielens_100k(d)
