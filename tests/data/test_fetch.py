import io
import logging
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmarks.cache import cache_dir
from benchmarks.data import fetch
from benchmarks.data.archive import UnsafeArchiveError, safe_extract
from benchmarks.data.fetch import (DownloadError, download, fetch_movielens_1m, fetch_movielens_100k,
                                   fetch_url_files)
from benchmarks.data.formats import read_movielens_100k, read_recbole
from benchmarks.errors import GenrecError

MISSING_URL = "file:///nonexistent/genrec-bench/ml-100k.zip"


def make_zip(path, files: dict[str, str]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def make_tar(path, members):
    """members: (name, text) for files, (name, None, linkname) for symlinks."""
    with tarfile.open(path, "w:gz") as tf:
        for name, text, *link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link[0]
                tf.addfile(info)
            else:
                data = text.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("GENREC_BENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "genrec-bench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "genrec-bench"
    monkeypatch.setenv("GENREC_BENCH_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"


def test_download_from_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    dest = download(src.as_uri(), tmp_path / "out" / "copy.bin", desc="copy")
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp file left


def test_download_failure_leaves_nothing(tmp_path):
    with pytest.raises(DownloadError, match="could not download file:///nonexistent"):
        download(MISSING_URL, tmp_path / "x.zip", desc="x")
    assert list(tmp_path.iterdir()) == []


def test_safe_extract_zip_members(tmp_path):
    z = make_zip(tmp_path / "a.zip", {"d/one.txt": "1", "d/two.txt": "2", "three.txt": "3"})
    out = safe_extract(z, tmp_path / "out", members=["d/two.txt"])
    assert out == [tmp_path / "out" / "d" / "two.txt"] and out[0].read_text() == "2"
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["d", "two.txt"]
    with pytest.raises(GenrecError, match="no member 'nope'"):
        safe_extract(z, tmp_path / "out", members=["nope"])


@pytest.mark.parametrize("name, reason", [("../evil.txt", "a '..' path component"),
                                          ("ok/../../evil.txt", "a '..' path component"),
                                          ("/tmp/evil.txt", "an absolute path"),
                                          ("C:/evil.txt", "an absolute path")])
def test_safe_extract_zip_refuses_traversal(tmp_path, name, reason):
    z = make_zip(tmp_path / "a.zip", {"good.txt": "fine", name: "evil"})
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(z, tmp_path / "out")
    assert str(e.value) == (f"{z}: refusing to extract member {name!r}: {reason} "
                            "(it could write outside the destination folder)")
    assert list((tmp_path / "out").iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_tar(tmp_path):
    t = make_tar(tmp_path / "a.tar.gz", [("d/a.txt", "A"), ("d/link", None, "a.txt")])
    safe_extract(t, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "link").read_text() == "A"
    for i, (members, reason) in enumerate([([("../evil.txt", "x")], "a '..' path component"),
                            ([("/abs.txt", "x")], "an absolute path"),
                            ([("up", None, "../../etc")], "a link to '../../etc' outside"),
                            ([("pw", None, "/etc/passwd")], "a link to '/etc/passwd' outside"),
                            # lexically inside, really outside: x -> ., then x/l -> x/.. = ..
                            ([("x", None, "."), ("x/l", None, "..")], "outside the destination"),
                            # each link inside when made; a -> b/.. -> x/.. -> ./.. in the end
                            ([("x", None, "."), ("a", None, "b/.."), ("b", None, "x")],
                             "a link that resolves outside the destination"),
                            # a folder reached through such a link is not even created
                            ([("x", None, "."), ("a", None, "b/.."), ("b", None, "x"),
                              ("a/newdir/evil.txt", "x")], "its folder resolves outside")]):
        t = make_tar(tmp_path / "bad.tar.gz", members)
        with pytest.raises(UnsafeArchiveError, match=reason):
            safe_extract(t, tmp_path / f"bad{i}")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "newdir").exists()


def test_safe_extract_refuses_special_files_and_non_archives(tmp_path):
    t = tmp_path / "fifo.tar"
    with tarfile.open(t, "w") as tf:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="a device, fifo or other special file"):
        safe_extract(t, tmp_path / "out")
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(GenrecError, match="expected a zip or tar archive"):
        safe_extract(tmp_path / "plain.txt", tmp_path / "out")


ML100K = {
    "ml-100k/u.data": "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
    "ml-100k/u.item": "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(["0"] * 8 + ["1"] + ["0"] * 10) + "\n"
                      "302|L.A. Confidential (1997)|01-Jan-1997||http://y|" + "|".join(["0"] * 19) + "\n",
    "ml-100k/u.genre": "".join(f"g{i}|{i}\n" for i in range(19)),
    "ml-100k/README": "readme",
}


def test_fetch_100k_from_url_then_from_cache(tmp_path, caplog):
    url = make_zip(tmp_path / "ml-100k.zip", ML100K).as_uri()
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="benchmarks.data.fetch"):
        folder, source = fetch_movielens_100k(url, cache=cache)
    assert folder == cache / "raw" / "ml-100k" / "grouplens"
    assert source == f"grouplens: {url}" and source in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == ["SOURCE.txt", "u.data", "u.genre", "u.item"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["grouplens"]  # no temp folders
    raw = read_movielens_100k(folder)
    assert raw.interactions.item.tolist() == ["242", "302"]
    assert raw.items.loc["242", "categories"] == "g8"
    # complete copy in the cache: no network (the URLs below would fail)
    assert fetch_movielens_100k(MISSING_URL, pip_command=["false"], cache=cache) == (folder, source)


def wheel_zip(path):
    root = "recbole/dataset_example/ml-100k/"
    return make_zip(path, {
        "recbole/__init__.py": "",
        root + "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                "196\t242\t3\t881250949\n",
        root + "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
                               "class:token_seq\n242\tKolya\t1996\tComedy\n",
        root + "ml-100k.kg": "not wanted",
    })


def test_fetch_100k_falls_back_to_the_recbole_wheel(tmp_path, monkeypatch):
    wheel = wheel_zip(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    monkeypatch.setenv("GENREC_BENCH_CACHE", str(tmp_path / "cache"))
    # a stand-in for `pip download`: called as `<command> recbole==1.2.1 -d <dir>`
    fake_pip = [sys.executable, "-c",
                f"import shutil, sys; assert sys.argv[1:3] == ['recbole==1.2.1', '-d']; "
                f"shutil.copy({str(wheel)!r}, sys.argv[3])"]
    folder, source = fetch_movielens_100k(MISSING_URL, pip_command=fake_pip)
    assert folder == tmp_path / "cache" / "raw" / "ml-100k" / "recbole-1.2.1"
    assert source == "PyPI wheel recbole==1.2.1 (recbole/dataset_example/ml-100k)"
    assert sorted(p.name for p in folder.iterdir()) == ["SOURCE.txt", "ml-100k.inter", "ml-100k.item"]
    raw = read_recbole(folder)
    assert raw.interactions.user.tolist() == ["196"]
    assert raw.items.loc["242"].to_dict() == {"title": "Kolya", "categories": "Comedy",
                                              "release_year": "1996"}
    assert fetch_movielens_100k(MISSING_URL, pip_command=["false"]) == (folder, source)


def test_fetch_100k_fallback_with_monkeypatched_pip_step(tmp_path, monkeypatch):
    wheel = wheel_zip(tmp_path / "w.whl")
    calls = []

    def fake_pip_download(spec, dest_dir, command, timeout):
        calls.append((spec, list(command)))
        return wheel

    monkeypatch.setattr(fetch, "_pip_download", fake_pip_download)
    folder, source = fetch_movielens_100k(MISSING_URL, cache=tmp_path / "c")
    assert calls == [("recbole==1.2.1", list(fetch.PIP_DOWNLOAD))]
    assert (folder / "ml-100k.inter").is_file() and source.startswith("PyPI wheel recbole==1.2.1")


def test_fetch_100k_both_sources_failing(tmp_path):
    failing_pip = [sys.executable, "-c", "import sys; sys.exit('no network')"]
    with pytest.raises(DownloadError) as e:
        fetch_movielens_100k(MISSING_URL, pip_command=failing_pip, cache=tmp_path)
    assert "could not download file:///nonexistent" in str(e.value)
    assert "no network" in str(e.value)
    assert not (tmp_path / "raw" / "ml-100k" / "grouplens").exists()


def test_fetch_1m(tmp_path):
    with pytest.raises(DownloadError, match="could not fetch MovieLens 1M from file:///nonexistent"):
        fetch_movielens_1m("file:///nonexistent/ml-1m.zip", cache=tmp_path)
    url = make_zip(tmp_path / "ml-1m.zip", {"ml-1m/ratings.dat": "1::1193::5::978300760\n",
                                            "ml-1m/movies.dat": "1193::T (1975)::Drama\n",
                                            "ml-1m/users.dat": "1::F::1::10::48067\n"}).as_uri()
    folder, source = fetch_movielens_1m(url, cache=tmp_path)
    assert source == f"grouplens: {url}"
    assert sorted(p.name for p in folder.iterdir()) == ["SOURCE.txt", "movies.dat", "ratings.dat",
                                                        "users.dat"]


def test_fetch_url_files_skips_present_files(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("A")
    b.write_text("B")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "b.json").write_text("already here")
    out = fetch_url_files({"a.json": a.as_uri(), "b.json": b.as_uri()}, dest)
    assert out == {"a.json": dest / "a.json", "b.json": dest / "b.json"}
    assert (dest / "a.json").read_text() == "A" and (dest / "b.json").read_text() == "already here"
    with pytest.raises(GenrecError, match="expected a plain file name"):
        fetch_url_files({"../x.json": a.as_uri()}, dest)
