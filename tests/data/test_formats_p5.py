import pytest

from benchmarks.data.formats import read_format
from benchmarks.errors import DataFormatError


def test_p5_sequential_reads_users_in_order(tmp_path):
    (tmp_path / "sequential_data.txt").write_text("1 1 2 3\n2 4 1\n\n")
    raw = read_format("p5-sequential", path=tmp_path)
    df = raw.interactions
    assert df["user"].tolist() == ["1", "1", "1", "2", "2"]
    assert df["item"].tolist() == ["1", "2", "3", "4", "1"]
    assert df["timestamp"].isna().all() and raw.items is None


def test_p5_sequential_malformed_line(tmp_path):
    (tmp_path / "seq.txt").write_text("1 1 2\n7\n")
    with pytest.raises(DataFormatError, match=r"seq.txt:2: expected a user id followed by at least one item id"):
        read_format("p5-sequential", path=tmp_path / "seq.txt")


@pytest.mark.shared
def test_p5_sports_matches_the_letter_style_file(shared_datasets):
    p5 = read_format("p5-sequential", path=shared_datasets / "sports" / "source", name="p5_sequential_data.txt")
    letter = read_format("letter-json", path=shared_datasets / "sports", name="Sports")
    assert len(p5.interactions) == len(letter.interactions) == 296337
    assert (p5.interactions["item"].astype(int) - 1).astype(str).tolist()[:1000] == \
        letter.interactions["item"].tolist()[:1000]
