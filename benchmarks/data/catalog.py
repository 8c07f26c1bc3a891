"""Named datasets and how to get them; ``load_dataset`` = locate -> read -> preprocess -> cache.

A dataset is named in a matrix either by a catalog name (``ml-100k``, ``beauty`` ...) or by a
mapping that points at files of a known format::

    - name: my-beauty
      format: amazon2014            # a key of benchmarks.data.formats.FORMATS
      reviews: /data/reviews_Beauty_5.json.gz
      meta: /data/meta_Beauty.json.gz
      k_core: 5                     # any PreprocessOptions field
      split: loo

``stem`` names the files' common prefix where a format has one (``letter-json``: ``<stem>.inter.json``;
``recbole``: ``<stem>.inter``).

Local copies are searched in the folders of ``$GENREC_BENCH_DATA`` (``os.pathsep``-separated;
e.g. ``../shared/datasets`` in this project's checkout) before anything is downloaded.
Preprocessed datasets are cached under ``<cache>/datasets/<name>-<key>/``, the key a hash of
the input files' contents, the reader arguments and the preprocessing options; the cache entry
is written into a temporary folder and renamed into place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from benchmarks.cache import build_lock, cache_dir
from benchmarks.config import build_config, check_value
from benchmarks.data.dataset import Dataset
from benchmarks.data.preprocess import PREPROCESS_VERSION, PreprocessOptions, preprocess
from benchmarks.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

LETTER_RAW = "https://raw.githubusercontent.com/HonghuiBao2000/LETTER/master/data"
SETREC_RAW = "https://raw.githubusercontent.com/Linxyhaha/SETRec/main/data"
P5_RAW = "https://raw.githubusercontent.com/Wenyueh/LLM-RecSys-ID/main/data"


def data_path() -> list[Path]:
    """Folders searched for local dataset copies: ``$GENREC_BENCH_DATA`` entries."""
    env = os.environ.get("GENREC_BENCH_DATA", "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


@dataclass
class DatasetSpec:
    """Where a dataset's files are and how to read and preprocess them."""

    name: str
    format: str
    reader_args: dict = field(default_factory=dict)     # paths and names for the reader
    options: PreprocessOptions = field(default_factory=PreprocessOptions)
    #: -> (reader_args, source) when files must be found or fetched; reader_args may carry
    #: "format" where the files found decide it (e.g. ML-100K's fallback copy is RecBole's)
    locate: Callable[[], tuple[dict, str]] | None = None
    cf_embeddings: str | None = None   # file beside the data with published CF item embeddings
    description: str = ""
    codes_file: str | None = None      # file beside the data with published item codes (LETTER's)

    def resolve(self) -> tuple[dict, str]:
        if self.locate is not None:
            return self.locate()
        return dict(self.reader_args), f"{self.format}: {self.reader_args}"


# --------------------------------------------------------------------------- locating files
def _local_dir(folder: str, must_have: list[str]) -> Path | None:
    for root in data_path():
        d = root / folder
        if all((d / f).is_file() for f in must_have):
            return d
    return None


def _letter_locator(folder: str, stem: str, with_items: bool,
                    with_codes: bool = False) -> Callable[[], tuple[dict, str]]:
    """A local copy with the interaction (and item) files, else LETTER's repository; a download
    also fetches LETTER's released codes ``<stem>.index.json`` where ``with_codes``."""
    files = [f"{stem}.inter.json"] + ([f"{stem}.item.json"] if with_items else [])

    def locate() -> tuple[dict, str]:
        d = _local_dir(folder, files)
        if d is not None:
            return {"path": str(d), "name": stem}, f"local copy {d}"
        from benchmarks.data.fetch import fetch_url_files
        dest = cache_dir() / "raw" / folder
        remote = files + ([f"{stem}.index.json"] if with_codes else [])
        fetch_url_files({f: f"{LETTER_RAW}/{stem}/{f}" for f in remote}, dest)
        return {"path": str(dest), "name": stem}, f"LETTER repository files ({LETTER_RAW}/{stem})"
    return locate


def _setrec_locator(folder: str, remote: str) -> Callable[[], tuple[dict, str]]:
    files = [f"{n}.npy" for n in ("training_dict", "validation_dict", "testing_dict",
                                   "warm_item", "cold_item")]

    def locate() -> tuple[dict, str]:
        d = _local_dir(folder, files)
        if d is not None:
            return {"path": str(d)}, f"local copy {d}"
        from benchmarks.data.fetch import fetch_url_files
        dest = cache_dir() / "raw" / folder
        fetch_url_files({f: f"{SETREC_RAW}/{remote}/{f}" for f in files}, dest)
        return {"path": str(dest)}, f"SETRec repository files ({SETREC_RAW}/{remote})"
    return locate


def _movielens_100k() -> tuple[dict, str]:
    d = _local_dir("ml-100k", ["u.data"])
    if d is not None:
        return {"path": str(d)}, f"local copy {d}"
    from benchmarks.data.fetch import fetch_movielens_100k
    path, source = fetch_movielens_100k()
    # the publisher's zip has u.data; the fallback copy (recbole wheel) RecBole atomic files
    fmt = "movielens-100k" if (Path(path) / "u.data").is_file() else "recbole"
    return {"path": str(path), "format": fmt}, source


def _sports() -> tuple[dict, str]:
    d = _local_dir("sports", ["Sports.inter.json"])
    if d is not None:
        return {"path": str(d), "name": "Sports", "format": "letter-json"}, f"local copy {d}"
    from benchmarks.data.fetch import fetch_url_files
    dest = cache_dir() / "raw" / "sports"
    url = f"{P5_RAW}/sports/sequential_data.txt"
    fetch_url_files({"sequential_data.txt": url}, dest)
    return {"path": str(dest), "format": "p5-sequential"}, f"P5 sequential data ({url})"


def _movielens_1m() -> tuple[dict, str]:
    d = _local_dir("ml-1m", ["ratings.dat"])
    if d is not None:
        return {"path": str(d)}, f"local copy {d}"
    from benchmarks.data.fetch import fetch_movielens_1m
    path, source = fetch_movielens_1m()
    return {"path": str(path)}, source


def _amazon2023_file(folders: list[Path], name: str) -> Path | None:
    from benchmarks.data.formats.amazon2023 import find_file
    for d in folders:
        found = find_file(d, name)
        if found is not None:
            return found
    return None


def _amazon2023_locals(*parts: str) -> list[Path]:
    """Where a local copy of Amazon 2023 files may lie: ``<root>/amazon2023/<parts...>`` and
    ``<root>/amazon2023/`` for each ``$GENREC_BENCH_DATA`` root."""
    return [root / "amazon2023" / Path(*parts) for root in data_path()] + [root / "amazon2023" for root in data_path()]


def _amazon2023_raw(category: str) -> Callable[[], tuple[dict, str]]:
    """A category's review and metadata files: a local copy, else the release's servers."""
    def locate() -> tuple[dict, str]:
        folders = _amazon2023_locals(category)
        reviews = _amazon2023_file(folders, f"{category}.jsonl")
        meta = _amazon2023_file(folders, f"meta_{category}.jsonl")
        if reviews is not None and meta is not None:
            return {"reviews": str(reviews), "meta": str(meta)}, f"local copy {reviews}, {meta}"
        from benchmarks.data.fetch import fetch_amazon2023
        r, r_src = fetch_amazon2023(category, "reviews")
        m, m_src = fetch_amazon2023(category, "meta")
        return {"reviews": str(next(iter(r.values()))), "meta": str(next(iter(m.values())))}, f"{r_src}; {m_src}"
    return locate


def _amazon2023_benchmark(category: str, kind: str) -> Callable[[], tuple[dict, str]]:
    """A category's benchmark split files (``kind``: 5core-timestamp / 5core-last-out) and its
    metadata: a local copy (the split files in ``amazon2023/<category>/<kind>/`` or
    ``amazon2023/<kind>/``), else the release's servers."""
    def locate() -> tuple[dict, str]:
        from benchmarks.data.formats.amazon2023 import SPLITS, find_file
        split_dirs = [root / "amazon2023" / category / kind for root in data_path()] + \
                     [root / "amazon2023" / kind for root in data_path()]
        local = next((d for d in split_dirs if all(find_file(d, f"{category}.{s}.csv") for s in SPLITS)), None)
        meta = _amazon2023_file(_amazon2023_locals(category), f"meta_{category}.jsonl")
        from benchmarks.data.fetch import fetch_amazon2023
        sources = []
        if local is None:
            files, src = fetch_amazon2023(category, kind)
            local = next(iter(files.values())).parent
            sources.append(src)
        else:
            sources.append(f"local copy {local}")
        if meta is None:
            m, m_src = fetch_amazon2023(category, "meta")
            meta = next(iter(m.values()))
            sources.append(m_src)
        else:
            sources.append(f"local copy {meta}")
        return {"path": str(local), "name": category, "meta": str(meta)}, "; ".join(sources)
    return locate


#: ``<prefix>:<Category>`` names (any category of the release): prefix -> the benchmark kind
#: (None: the raw reviews, preprocessed by the suite's rules)
AMAZON2023_PREFIXES = {"amazon2023": None, "amazon2023-5core-timestamp": "5core-timestamp",
                       "amazon2023-5core-last-out": "5core-last-out"}


def amazon2023_spec(name: str, category: str, kind: str | None, description: str = "") -> DatasetSpec:
    """The DatasetSpec of one Amazon 2023 category: raw reviews + metadata (``kind`` None: the
    suite's 5-core and split) or the release's benchmark split files (kept as shipped)."""
    if kind is None:
        return DatasetSpec(name, "amazon2023", locate=_amazon2023_raw(category),
                           description=description or f"Amazon Reviews 2023 {category} (raw reviews + metadata)")
    return DatasetSpec(name, "amazon2023-benchmark", locate=_amazon2023_benchmark(category, kind),
                       options=PreprocessOptions(split="fixed", k_core=0),
                       description=description or f"Amazon Reviews 2023 {category}, the release's {kind} split")


def catalog_spec(name: str) -> DatasetSpec | None:
    """A catalog name's DatasetSpec: an entry of CATALOG, or ``<prefix>:<Category>`` for any
    Amazon 2023 category (AMAZON2023_PREFIXES); None for an unknown name."""
    if name in CATALOG:
        return CATALOG[name]
    prefix, sep, category = name.partition(":")
    if sep and prefix in AMAZON2023_PREFIXES:
        import re
        if not re.fullmatch(r"[A-Za-z][A-Za-z_]*", category):
            raise ConfigError(f"dataset {name!r}: expected {prefix}:<Category>, a category of Amazon Reviews "
                              f"2023 such as Musical_Instruments")
        return amazon2023_spec(name, category, AMAZON2023_PREFIXES[prefix])
    return None


CATALOG: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec("ml-100k", "movielens-100k", locate=_movielens_100k,
                           description="MovieLens 100K (the embedded default; fetched and cached)"),
    "ml-1m": DatasetSpec("ml-1m", "movielens-1m", locate=_movielens_1m,
                         description="MovieLens 1M (fetched from GroupLens)"),
    "beauty": DatasetSpec("beauty", "letter-json", locate=_letter_locator("beauty", "Beauty", True, True),
                          cf_embeddings="Beauty-32d-sasrec.npy", codes_file="Beauty.index.json",
                          description="Amazon 2014 Beauty 5-core, LETTER's files (Table 1 data)"),
    "yelp": DatasetSpec("yelp", "letter-json", locate=_letter_locator("yelp", "Yelp", True, True),
                        codes_file="Yelp.index.json",
                        description="Yelp 5-core, LETTER's files (Table 1 data)"),
    "instruments": DatasetSpec("instruments", "letter-json",
                               locate=_letter_locator("instruments", "Instruments", True, True),
                               codes_file="Instruments.index.json",
                               description="Amazon 2018 Instruments, LETTER's files"),
    "sports": DatasetSpec("sports", "letter-json", locate=_sports,
                          description="Amazon 2014 Sports 5-core (P5's sequences; no item text)"),
    "setrec-beauty": DatasetSpec("setrec-beauty", "setrec-npy",
                                 locate=_setrec_locator("setrec-beauty", "beauty"),
                                 options=PreprocessOptions(split="fixed", k_core=0),
                                 cf_embeddings="SASRec_item_embed.npy",
                                 description="SETRec's Beauty: global temporal split, warm/cold items, no text"),
    "amazon2023-instruments": amazon2023_spec("amazon2023-instruments", "Musical_Instruments", None),
    "amazon2023-industrial": amazon2023_spec("amazon2023-industrial", "Industrial_and_Scientific", None),
}


def _option_fields() -> set[str]:
    return {f.name for f in fields(PreprocessOptions)}


#: keys of a dataset mapping besides the PreprocessOptions fields and the reader's arguments
ENTRY_TYPES = {"name": str, "format": str, "catalog": str, "cf_embeddings": str | None}


def _reader_params(fmt: str) -> dict[str, tuple[object, bool]]:
    """The reader's arguments as a matrix entry spells them: {key: (annotation, required)};
    the reader's ``name`` (the files' common prefix) is the entry's ``stem``."""
    import inspect
    import typing

    from benchmarks.data.formats import FORMATS

    if fmt not in FORMATS:
        raise UnknownNameError("format", fmt, list(FORMATS))
    reader = FORMATS[fmt]
    hints = typing.get_type_hints(reader)
    out = {}
    for p in inspect.signature(reader).parameters.values():
        key = "stem" if p.name == "name" else p.name
        out[key] = (hints.get(p.name, object), p.default is inspect.Parameter.empty)
    return out


def spec_from_config(entry: str | dict) -> DatasetSpec:
    """A matrix's dataset entry (catalog name, or mapping) -> DatasetSpec.

    Every key of a mapping is checked: ``name``, ``format`` (files of your own, read by that
    reader: its arguments are keys too, the files' prefix as ``stem``) or ``catalog`` (a
    catalog dataset under another name; a mapping whose name is a catalog name is one too),
    ``cf_embeddings`` and the PreprocessOptions fields, each with its type. An unknown key, a
    wrong type or a missing reader argument is one ConfigError naming the dataset, the key
    and the known keys."""
    if isinstance(entry, str):
        spec = catalog_spec(entry)
        if spec is None:
            raise UnknownNameError("dataset", entry, list(CATALOG) + [f"{p}:<Category>" for p in AMAZON2023_PREFIXES])
        return spec
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"dataset entry: expected a catalog name or a mapping with a 'name' (a string), "
                          f"got {entry!r}")

    entry = dict(entry)
    name = entry["name"]
    where = f"dataset {name!r}"
    fmt, catalog = entry.get("format"), entry.get("catalog")
    if fmt is not None and catalog is not None:
        raise ConfigError(f"{where}: give 'format' (files of your own) or 'catalog' (a catalog "
                          f"dataset under another name), not both")
    for key in ("format", "catalog", "cf_embeddings"):
        if key in entry:
            check_value(entry[key], ENTRY_TYPES[key], f"{where}: field {key!r}")
    params = {} if fmt is None else _reader_params(fmt)
    known = {"name", "cf_embeddings"} | _option_fields() | ({"catalog"} if fmt is None else {"format"}) | set(params)
    unknown = sorted(set(entry) - known, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: "
                          f"{', '.join(sorted(known))}")
    opts = {k: entry[k] for k in entry if k in _option_fields()}
    cf = entry.get("cf_embeddings")
    if fmt is None:
        base_name = catalog or name
        base = catalog_spec(base_name)
        if base is None:
            raise ConfigError(f"dataset {base_name!r}: not in the catalog, so it needs a 'format' (one "
                              f"of the readers) and its file paths; catalog: {', '.join(sorted(CATALOG))}, "
                              f"{', '.join(p + ':<Category>' for p in AMAZON2023_PREFIXES)}")
        options = _options(where, {**base.options.to_dict(), **opts})
        return DatasetSpec(name, base.format, base.reader_args, options,
                           base.locate, cf or base.cf_embeddings, base.description, base.codes_file)
    missing = [k for k, (_, required) in params.items() if required and k not in entry]
    if missing:
        raise ConfigError(f"{where}: format {fmt!r} needs {', '.join(repr(k) for k in missing)}")
    reader_args = {}
    for key, (annotation, _) in params.items():
        if key in entry:
            check_value(entry[key], annotation, f"{where}: field {key!r}")
            reader_args["name" if key == "stem" else key] = entry[key]
    return DatasetSpec(name, fmt, reader_args, _options(where, opts), None, cf)


def _options(where: str, opts: dict) -> PreprocessOptions:

    try:
        return build_config(PreprocessOptions, opts)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- cache key
def _fingerprint(reader_args: dict) -> list:
    """Content hashes of every file the reader may read (files named in the args, and the
    files of a folder argument)."""
    out = []
    for key, value in sorted(reader_args.items()):
        p = Path(str(value))
        if not isinstance(value, (str, os.PathLike)) or not p.exists():
            out.append([key, str(value)])
            continue
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out.append([key, f.name, h.hexdigest()])
    return out


def _read(spec: DatasetSpec, reader_args: dict):
    from benchmarks.data.formats import read_format
    args = dict(reader_args)
    return read_format(args.pop("format", spec.format), **args)


def _attach_cf_file(ds: Dataset, spec: DatasetSpec, reader_args: dict) -> None:
    """Point ``ds.info["cf_embeddings_file"]`` / ``ds.info["codes_file"]`` at the spec's
    published CF embeddings (SASRec item tables shipped by LETTER and SETRec) and published
    item codes (LETTER's ``<Name>.index.json``) when they are beside the data."""
    folder = Path(reader_args.get("path", ""))
    for name, key in ((spec.cf_embeddings, "cf_embeddings_file"), (spec.codes_file, "codes_file")):
        if name and (folder / name).is_file():
            ds.info[key] = str(folder / name)


def load_dataset(entry: str | dict | DatasetSpec, *, refresh: bool = False) -> Dataset:
    """Locate, read, preprocess and cache a dataset; a cached copy is reused when the files
    and options are unchanged."""
    spec = entry if isinstance(entry, DatasetSpec) else spec_from_config(entry)
    reader_args, source = spec.resolve()
    key_src = {"name": spec.name, "format": spec.format, "files": _fingerprint(reader_args),
               "args": {k: str(v) for k, v in reader_args.items() if k != "path"},
               "options": spec.options.to_dict(), "version": PREPROCESS_VERSION}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    target = cache_dir() / "datasets" / f"{spec.name}-{key}"
    with build_lock(target):   # two processes sharing the cache: the first preprocesses
        return _cached_or_preprocessed(spec, reader_args, source, key, target, refresh)


def _cached_or_preprocessed(spec: DatasetSpec, reader_args: dict, source: str, key: str, target: Path,
                            refresh: bool) -> Dataset:
    """The cached copy at ``target``, or the files read, preprocessed and saved there atomically
    (under :func:`load_dataset`'s build lock)."""
    if target.is_dir() and (target / "dataset.json").is_file() and not refresh:
        ds = Dataset.load(target)
        log.info("dataset %s: cached copy %s", spec.name, target)
        _attach_cf_file(ds, spec, reader_args)   # the cache may predate the spec's file
        return ds
    log.info("dataset %s: reading %s", spec.name, source)
    raw = _read(spec, reader_args)
    ds = preprocess(raw, spec.name, spec.options)
    ds.info.update({"source": source, "cache_key": key, "format": spec.format})
    _attach_cf_file(ds, spec, reader_args)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        ds.save(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ds

