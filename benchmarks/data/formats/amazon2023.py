"""Amazon Reviews 2023 (Hou et al., the McAuley lab's 2023 release); .gz read as is.

Reviews, ``<Category>.jsonl[.gz]``: one JSON object per line; the item is the PARENT asin (the
product, whatever its variant), as in the release's benchmark files, and the timestamp is in
MILLISECONDS (read as seconds)::

    {"rating": 5.0, "title": "...", "text": "...", "asin": "B00YQ6X8EO", "parent_asin": "B00YQ6X8EO",
     "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ", "timestamp": 1588687728923, "helpful_vote": 0, ...}

Metadata, ``meta_<Category>.jsonl[.gz]``: one JSON object per line keyed by ``parent_asin``,
with ``title``, ``features`` (a list), ``description`` (a list), ``categories`` (a flat list,
often empty), ``details`` (a mapping), ``store``, ``main_category``. Item text: ``title``;
``categories`` (", "-joined; ``main_category`` where the list is empty); ``brand`` (the
``store``); ``description`` and ``features`` (their strings joined by a space); ``details``
(``key: value`` pairs joined by "; "). A parent_asin listed twice keeps its first record.

Benchmark files (the release's ``benchmark/5core/<split>/`` folders): CSV with the header
``user_id,parent_asin,rating,timestamp`` (plus ``history``, the earlier items, in the ``*_w_his``
folders), one file per split ``<Category>.train|valid|test.csv[.gz]`` (``timestamp``,
``last_out`` and their ``_w_his`` forms), or one file ``<Category>.csv[.gz]`` without a split
(``rating_only``). A split is kept as shipped (``split: fixed``); the ``history`` column is
checked but not read, since each user's history is rebuilt from the rows in time order (the
same items: the release writes all of a user's earlier items there).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from benchmarks.data.formats._common import (TIMESTAMP, Columns, clean_text, finite, items_frame,
                                             join_categories, join_text, json_records,
                                             numbered_lines)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError

_REVIEW = "a JSON object with user_id, parent_asin, rating and timestamp (milliseconds)"
_META = "a JSON object with a 'parent_asin' per line"
_FIRST = ("title", "categories", "brand", "description", "features", "details")
HEADER = ["user_id", "parent_asin", "rating", "timestamp"]
SPLITS = ("train", "valid", "test")
#: file-name endings the readers accept, compressed first (as published)
_SUFFIXES = (".gz", "")


def _milliseconds(path, lineno: int, value: object, line: str) -> float:
    """A timestamp in milliseconds -> seconds; anything but a finite number is refused."""
    try:
        ms = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        ms = math.nan
    return finite(path, lineno, ms, "timestamp", line, TIMESTAMP.replace("seconds", "milliseconds")) / 1000.0


def _read_reviews(path: str | Path) -> Columns:
    cols = Columns(rating=True)
    for lineno, rec in json_records(path, "an Amazon 2023 review file (JSON lines)", _REVIEW):
        line = json.dumps(rec)
        try:
            user, item = rec["user_id"], rec["parent_asin"]
            rating = float(rec["rating"])
            when = rec["timestamp"]
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(path, _REVIEW, line=lineno, got=line) from None
        if not (isinstance(user, str) and user and isinstance(item, str) and item):
            raise DataFormatError(path, _REVIEW, line=lineno, got=line)
        finite(path, lineno, rating, "rating", line)
        cols.add(user, item, _milliseconds(path, lineno, when, line), rating)
    return cols


def _details(value: object) -> str | None:
    if isinstance(value, dict):
        parts = [f"{clean_text(k)}: {clean_text(v if not isinstance(v, (list, dict)) else json.dumps(v))}"
                 for k, v in value.items() if clean_text(k) and clean_text(v) is not None]
        return "; ".join(parts) or None
    return join_text(value)


def read_meta(path: str | Path):
    """The item text of a ``meta_<Category>.jsonl[.gz]`` file (see the module docstring)."""
    rows: dict[str, dict[str, str | None]] = {}
    for lineno, rec in json_records(path, "an Amazon 2023 metadata file (JSON lines)", _META):
        asin = rec.get("parent_asin")
        if not isinstance(asin, str) or not asin:
            raise DataFormatError(path, _META, line=lineno, got=json.dumps(rec))
        if asin in rows:
            continue
        rows[asin] = {
            "title": clean_text(rec.get("title")),
            "categories": join_categories(rec.get("categories")) or clean_text(rec.get("main_category")),
            "brand": clean_text(rec.get("store")),
            "description": join_text(rec.get("description")),
            "features": join_text(rec.get("features")),
            "details": _details(rec.get("details")),
        }
    return items_frame(rows, _FIRST)


def read_amazon2023(reviews: str | Path, meta: str | Path | None = None) -> RawData:
    """Read a 2023 review file (``<Category>.jsonl[.gz]``) and optionally its
    ``meta_<Category>.jsonl[.gz]``."""
    items = None if meta is None else read_meta(meta)   # the smaller file first: its errors surface early
    cols = _read_reviews(reviews)
    source = f"amazon2023: {reviews}" + ("" if meta is None else f", {meta}")
    return RawData(cols.frame(), items, source=source)


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name.gz`` or ``folder/name``, whichever exists (compressed first)."""
    for suffix in _SUFFIXES:
        p = Path(folder) / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def _read_csv(path: Path, cols: Columns, split: str | None) -> None:
    what = "an Amazon 2023 benchmark file (CSV)"
    expected = f"the header {','.join(HEADER)}[,history]"
    row_what = "user_id,parent_asin,rating,timestamp (milliseconds)[,history]"
    width = None
    for lineno, line in numbered_lines(path, what):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        if width is None:
            if fields[:4] != HEADER or len(fields) not in (4, 5) or (len(fields) == 5 and fields[4] != "history"):
                raise DataFormatError(path, expected, line=lineno, got=line)
            width = len(fields)
            continue
        if len(fields) != width or not fields[0] or not fields[1]:
            raise DataFormatError(path, f"{width} fields: {row_what}", line=lineno, got=line)
        try:
            rating = float(fields[2])
        except ValueError:
            raise DataFormatError(path, "a number", line=lineno, got=line, field="rating") from None
        finite(path, lineno, rating, "rating", line)
        cols.add(fields[0], fields[1], _milliseconds(path, lineno, fields[3], line), rating, split)
    if width is None:
        raise DataFormatError(path, expected, got="an empty file")


def read_amazon2023_benchmark(path: str | Path, name: str, meta: str | Path | None = None) -> RawData:
    """Read the release's benchmark CSV files of category ``name`` in folder ``path``: the split
    files ``<name>.train|valid|test.csv[.gz]`` when there are any (all three needed), else
    ``<name>.csv[.gz]``; ``meta``: a ``meta_<name>.jsonl[.gz]`` for the item text."""
    folder = Path(path)
    found = {s: find_file(folder, f"{name}.{s}.csv") for s in SPLITS}
    items = None if meta is None else read_meta(meta)
    if any(found.values()):
        missing = [f"{name}.{s}.csv[.gz]" for s, p in found.items() if p is None]
        if missing:
            raise DataFormatError(folder / missing[0], "an existing file (the split files come as a "
                                  "train / valid / test set)")
        cols = Columns(rating=True, split=True)
        for s, p in found.items():
            _read_csv(p, cols, s)
        files = [str(p) for p in found.values()]
    else:
        single = find_file(folder, f"{name}.csv")
        if single is None:
            raise DataFormatError(folder / f"{name}.train.csv.gz", f"an existing file (or {name}.csv[.gz], "
                                  f"the benchmark files of {name})")
        cols = Columns(rating=True)
        _read_csv(single, cols, None)
        files = [str(single)]
    source = "amazon2023-benchmark: " + ", ".join(files + ([str(meta)] if meta is not None else []))
    return RawData(cols.frame(), items, source=source)
