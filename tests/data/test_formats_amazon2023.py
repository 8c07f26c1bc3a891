"""Amazon Reviews 2023: the raw review / metadata reader, the benchmark CSV reader, the catalog
names (amazon2023:<Category>, the two catalog entries) and the fetch, on small files written
here in the release's exact format (no network: the fetch reads file:// URLs)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.data import fetch
from benchmarks.data.catalog import CATALOG, load_dataset, spec_from_config
from benchmarks.data.fetch import DownloadError, fetch_amazon2023
from benchmarks.data.formats import read_amazon2023, read_amazon2023_benchmark, read_format
from benchmarks.errors import ConfigError, DataFormatError, GenrecError

T0 = 1588687728923     # a release timestamp, milliseconds


def review(user, item, t_ms, rating=5.0, **extra):
    return {"rating": rating, "title": "Great", "text": "Works well.<br />Really.", "images": [],
            "asin": item + "-V", "parent_asin": item, "user_id": user, "timestamp": t_ms,
            "helpful_vote": 0, "verified_purchase": True, **extra}


def meta(item, **fields):
    rec = {"main_category": "Musical Instruments", "title": f"Guitar &amp; strap {item}", "average_rating": 4.5,
           "rating_number": 10, "features": ["Solid wood", "6 strings"], "description": ["A guitar.", "Tuned."],
           "price": 99.0, "images": [], "videos": [], "store": "Acme",
           "categories": ["Musical Instruments", "Guitars"], "details": {"Color": "Red", "Weight": "2 kg"},
           "parent_asin": item, "bought_together": None}
    rec.update(fields)
    return rec


def write_jsonl(path: Path, records, gz=True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def dense(n_users=7, n_items=7):
    """Every user reviews every item, one hour apart (survives the 5-core)."""
    return [review(f"U{u}", f"B0{i:02d}", T0 + 3_600_000 * (u * n_items + i)) for u in range(n_users)
            for i in range(n_items)]


def write_raw(folder: Path, category="Toy_Category"):
    reviews = write_jsonl(folder / f"{category}.jsonl.gz", dense())
    metas = write_jsonl(folder / f"meta_{category}.jsonl.gz", [meta(f"B0{i:02d}") for i in range(7)])
    return reviews, metas


def write_benchmark(folder: Path, category="Toy_Category", history=True, gz=True):
    """The release's timestamp_w_his files: header, rows split by two global timestamps."""
    folder.mkdir(parents=True, exist_ok=True)
    head = "user_id,parent_asin,rating,timestamp" + (",history" if history else "")
    rows = {"train": [], "valid": [], "test": []}
    for u in range(6):
        seen = []
        for i in range(6):
            t = T0 + 1000 * (i * 10 + u)
            split = "train" if i < 4 else "valid" if i == 4 else "test"
            line = f"U{u},B0{(u + i) % 8:02d},{float(1 + i % 5)},{t}" + (f",{' '.join(seen)}" if history else "")
            rows[split].append(line)
            seen.append(f"B0{(u + i) % 8:02d}")
    paths = {}
    for split, lines in rows.items():
        p = folder / f"{category}.{split}.csv{'.gz' if gz else ''}"
        text = head + "\n" + "\n".join(lines) + "\n"
        if gz:
            with gzip.open(p, "wt") as f:
                f.write(text)
        else:
            p.write_text(text)
        paths[split] = p
    return paths


def test_raw_reviews_and_metadata_are_read_with_parent_asin_and_seconds(tmp_path):
    reviews, metas = write_raw(tmp_path)
    raw = read_amazon2023(reviews, metas)
    df = raw.interactions
    assert len(df) == 49 and df["user"].iloc[0] == "U0" and df["item"].iloc[0] == "B000"   # parent, not "-V"
    assert df["timestamp"].iloc[0] == pytest.approx(T0 / 1000) and df["rating"].iloc[0] == 5.0
    item = raw.items.loc["B003"]
    assert item["title"] == "Guitar & strap B003" and item["categories"] == "Musical Instruments, Guitars"
    assert item["brand"] == "Acme" and item["description"] == "A guitar. Tuned."
    assert item["features"] == "Solid wood 6 strings" and item["details"] == "Color: Red; Weight: 2 kg"
    assert list(raw.items.columns)[:4] == ["title", "categories", "brand", "description"]


def test_metadata_without_categories_falls_back_to_the_main_category_and_keeps_the_first_record(tmp_path):
    path = write_jsonl(tmp_path / "meta_X.jsonl", [meta("B1", categories=[], details={}, features=[]),
                                                    meta("B1", title="second")], gz=False)
    reviews = write_jsonl(tmp_path / "X.jsonl", [review("u", "B1", T0)], gz=False)
    items = read_amazon2023(reviews, path).items
    assert items.loc["B1", "categories"] == "Musical Instruments" and items.loc["B1", "title"] == "Guitar & strap B1"
    assert items.loc["B1", "details"] is None and items.loc["B1", "features"] is None


@pytest.mark.parametrize("bad, field", [
    ({"parent_asin": None}, None), ({"timestamp": float("nan")}, "timestamp"),
    ({"timestamp": "yesterday"}, "timestamp"), ({"rating": "five"}, None)])
def test_a_bad_review_line_is_one_error_naming_file_and_line(tmp_path, bad, field):
    recs = [review("u1", "B1", T0), review("u2", "B2", T0 + 1)]
    recs[1].update(bad)
    path = tmp_path / "Bad.jsonl"
    path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(recs[1]) + "\n")
    with pytest.raises(DataFormatError) as e:
        read_amazon2023(path)
    assert str(e.value).startswith(f"{path}:2: ") and (field is None or f"field {field!r}" in str(e.value))


def test_a_metadata_line_without_parent_asin_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "meta_X.jsonl", [meta("B1"), {"title": "no id"}], gz=False)
    with pytest.raises(DataFormatError, match=r"meta_X\.jsonl:2: expected a JSON object with a 'parent_asin'"):
        read_amazon2023(write_jsonl(tmp_path / "X.jsonl", [review("u", "B1", T0)], gz=False), path)


def test_benchmark_split_files_are_read_as_a_fixed_split(tmp_path):
    write_benchmark(tmp_path / "b")
    raw = read_amazon2023_benchmark(tmp_path / "b", "Toy_Category")
    df = raw.interactions
    assert raw.presplit and df["split"].value_counts().to_dict() == {"train": 24, "valid": 6, "test": 6}
    assert df["timestamp"].iloc[0] == pytest.approx(T0 / 1000) and raw.items is None
    assert read_format("amazon2023-benchmark", path=tmp_path / "b", name="Toy_Category").interactions.equals(df)
    write_benchmark(tmp_path / "plain", history=False, gz=False)    # the `timestamp` folder: no history column
    assert len(read_amazon2023_benchmark(tmp_path / "plain", "Toy_Category").interactions) == 36


def test_a_rating_only_file_has_no_split(tmp_path):
    (tmp_path / "Toy.csv").write_text("user_id,parent_asin,rating,timestamp\nU1,B1,4.0,1452647382000\n")
    raw = read_amazon2023_benchmark(tmp_path, "Toy")
    assert not raw.presplit and raw.interactions["timestamp"].tolist() == [1452647382.0]


def test_bad_benchmark_files_are_one_error_each(tmp_path):
    paths = write_benchmark(tmp_path / "b", gz=False)
    paths["test"].unlink()
    with pytest.raises(DataFormatError, match=r"Toy_Category\.test\.csv\[\.gz\]: expected an existing file"):
        read_amazon2023_benchmark(tmp_path / "b", "Toy_Category")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "T.csv").write_text("user,item,rating,time\nU1,B1,4.0,1\n")
    with pytest.raises(DataFormatError, match=r"T\.csv:1: expected the header user_id,parent_asin,rating,timestamp"):
        read_amazon2023_benchmark(tmp_path / "h", "T")
    (tmp_path / "h" / "T.csv").write_text("user_id,parent_asin,rating,timestamp\nU1,B1,4.0,nan\n")
    with pytest.raises(DataFormatError, match=r"T\.csv:2: field 'timestamp': expected a finite number"):
        read_amazon2023_benchmark(tmp_path / "h", "T")
    with pytest.raises(DataFormatError, match=r"Nope\.train\.csv\.gz: expected an existing file"):
        read_amazon2023_benchmark(tmp_path / "h", "Nope")


def test_catalog_names_load_local_copies(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_raw(root / "amazon2023")
    write_benchmark(root / "amazon2023" / "Toy_Category" / "5core-timestamp")
    monkeypatch.setenv("GENREC_BENCH_DATA", str(root))
    ds = load_dataset("amazon2023:Toy_Category")
    assert ds.split == "loo" and ds.n_items == 7 and len(ds.user_ids) == 7
    assert ds.item_text["title"][0].startswith("Guitar & strap") and "local copy" in ds.info["source"]
    bench = load_dataset("amazon2023-5core-timestamp:Toy_Category")
    assert bench.split == "fixed" and bench.n_items == 8 and bench.item_text["title"][0] == "Guitar & strap B000"
    assert bench.item_text["title"][7] is None     # B007 has no metadata line
    with pytest.raises(ConfigError, match=r"amazon2023:Toy-Category': expected amazon2023:<Category>"):
        spec_from_config("amazon2023:Toy-Category")


def test_the_catalog_entries_name_the_categories_peers_report(tmp_path, monkeypatch):
    assert {"amazon2023-instruments", "amazon2023-industrial"} <= set(CATALOG)
    seen = []
    monkeypatch.setattr(fetch, "fetch_amazon2023", lambda cat, kind: (seen.append((cat, kind)) or
                                                                      ({f"{kind}.jsonl.gz": tmp_path / kind}, kind)))
    for name, cat in (("amazon2023-instruments", "Musical_Instruments"),
                      ("amazon2023-industrial", "Industrial_and_Scientific")):
        args, _ = CATALOG[name].resolve()
        assert args == {"reviews": str(tmp_path / "reviews"), "meta": str(tmp_path / "meta")}
        assert seen[-2:] == [(cat, "reviews"), (cat, "meta")]


def _server(tmp_path, category, files: dict[str, bytes]) -> str:
    base = tmp_path / "server"
    for rel, data in files.items():
        p = base / rel.format(cat=category)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return base.as_uri()


def test_fetch_takes_the_labs_server_and_falls_back_to_the_hub_copy(tmp_path):
    reviews = gzip.compress(b'{"user_id": "u"}\n')
    mirror = _server(tmp_path / "m", "Cat", {"raw/review_categories/{cat}.jsonl.gz": reviews})
    hub = _server(tmp_path / "h", "Cat", {"raw/meta_categories/meta_{cat}.jsonl": b'{"parent_asin": "B"}\n'})
    files, source = fetch_amazon2023("Cat", "reviews", cache=tmp_path / "c", mirror=mirror, hub=hub)
    assert files["Cat.jsonl.gz"].read_bytes() == reviews and f"{mirror}/raw/review_categories/Cat.jsonl.gz" in source
    files, source = fetch_amazon2023("Cat", "meta", cache=tmp_path / "c", mirror=mirror, hub=hub)
    assert list(files) == ["meta_Cat.jsonl"] and f"{hub}/raw/meta_categories/meta_Cat.jsonl" in source
    again, source = fetch_amazon2023("Cat", "meta", cache=tmp_path / "c", mirror="file:///nowhere", hub="file:///nowhere")
    assert again == files and source.startswith("Amazon Reviews 2023: cached")
    with pytest.raises(DownloadError, match=r"Amazon 2023 Cat \(5core-timestamp\) file Cat\.train\.csv"):
        fetch_amazon2023("Cat", "5core-timestamp", cache=tmp_path / "c", mirror=mirror, hub=hub)
    with pytest.raises(GenrecError, match="expected a name such as Musical_Instruments"):
        fetch_amazon2023("../etc", cache=tmp_path / "c")


def test_fetch_urls_are_the_releases(tmp_path, monkeypatch):
    """The URLs asked for, per kind (the download itself is faked: no network in tests)."""
    asked = []

    def fake(urls, dest, timeout=60.0):
        asked.extend(urls.values())
        out = {}
        for name in urls:
            (Path(dest) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(dest) / name).write_bytes(b"x")
            out[name] = Path(dest) / name
        return out

    monkeypatch.setattr(fetch, "fetch_url_files", fake)
    fetch_amazon2023("Musical_Instruments", "reviews", cache=tmp_path)
    fetch_amazon2023("Musical_Instruments", "5core-timestamp", cache=tmp_path)
    base = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
    assert asked == [f"{base}/raw/review_categories/Musical_Instruments.jsonl.gz"] + [
        f"{base}/benchmark/5core/timestamp_w_his/Musical_Instruments.{s}.csv.gz" for s in ("train", "valid", "test")]


def test_cli_data_fetch_names_the_files(tmp_path, monkeypatch, capsys):
    write_raw(tmp_path / "data" / "amazon2023" / "Toy_Category")
    monkeypatch.setenv("GENREC_BENCH_DATA", str(tmp_path / "data"))
    assert main(["data", "fetch", "amazon2023:Toy_Category"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("amazon2023:Toy_Category: local copy") and "meta_Toy_Category.jsonl.gz" in out
