"""Amazon review data, 2014 (McAuley et al.) and 2018 (Ni et al.) releases; .gz read as is.

Reviews, both releases: one JSON object per line::

    {"reviewerID": "A1YJEY40YUW4SE", "asin": "7806397051", "overall": 1.0, "unixReviewTime": 1391040000}

2014 metadata: one PYTHON LITERAL per line (single quotes), parsed with ``ast.literal_eval``
(never ``eval``); strict-JSON lines are accepted too::

    {'asin': '7806397051', 'title': 'Lip Stain', 'categories': [['Beauty', 'Makeup', 'Lips']], 'brand': 'Japonesque'}

2018 metadata: JSON lines with ``category`` a flat list and ``description`` a list of strings.

Text is HTML-unescaped and whitespace-collapsed (HTML tags are left as they are). A 2014 item
with several category paths gets every distinct category of all its paths, first occurrence
first, ", "-joined ("Beauty, Makeup, Lips, Skin Care"). ``price`` is kept as text when present.
An asin listed twice in a metadata file keeps its first record.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

from benchmarks.data.formats._common import (TIMESTAMP, Columns, clean_text, finite, items_frame,
                                             join_categories, join_text, json_records,
                                             numbered_lines)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError

_REVIEW = "a JSON object with reviewerID, asin, overall and unixReviewTime"
_FIRST = ("title", "categories", "brand", "description", "price")


def _read_reviews(path: str | Path, release: str) -> Columns:
    cols = Columns(rating=True)
    what = f"an Amazon {release} review file (JSON lines)"
    for lineno, rec in json_records(path, what, _REVIEW):
        try:
            user, item, when = rec["reviewerID"], rec["asin"], rec["unixReviewTime"]
            rating = float(rec["overall"])
        except (KeyError, TypeError, ValueError):
            raise DataFormatError(path, _REVIEW, line=lineno, got=json.dumps(rec)) from None
        if not isinstance(user, str) or not isinstance(item, (str, int)) or not user or item == "":
            raise DataFormatError(path, _REVIEW, line=lineno, got=json.dumps(rec))
        finite(path, lineno, rating, "overall", json.dumps(rec))
        ts = _timestamp(path, lineno, when, rec)
        cols.add(user, str(item), ts, rating)
    return cols


def _timestamp(path: str | Path, lineno: int, value: object, rec: dict) -> float:
    """``unixReviewTime`` as a finite number of seconds (JSON ``NaN``, ``Infinity``, ``null``
    or text that is not a number are refused)."""
    try:
        ts = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        ts = math.nan
    return finite(path, lineno, ts, "unixReviewTime", json.dumps(rec), TIMESTAMP)


def _literal(line: str):
    """A 2014 metadata line: a Python literal (or, failing that, JSON)."""
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        try:
            return json.loads(line)
        except ValueError:
            return None


def _meta_records(path: str | Path, release: str):
    what = f"an Amazon {release} metadata file"
    expected = ("a Python dict literal with an 'asin' per line" if release == "2014"
                else "a JSON object with an 'asin' per line")
    for lineno, line in numbered_lines(path, what):
        if not line.strip():
            continue
        if release == "2014":
            rec = _literal(line)
        else:
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("asin"), (str, int)):
            raise DataFormatError(path, expected, line=lineno, got=line)
        yield str(rec["asin"]), rec


def _read_meta(path: str | Path, release: str):
    cat_key = "categories" if release == "2014" else "category"
    rows: dict[str, dict[str, str | None]] = {}
    for asin, rec in _meta_records(path, release):
        if asin in rows:
            continue
        row = {
            "title": clean_text(rec.get("title")),
            "categories": join_categories(rec.get(cat_key)),
            "brand": clean_text(rec.get("brand")),
            "description": join_text(rec.get("description")),
        }
        if rec.get("price") not in (None, ""):
            row["price"] = clean_text(rec["price"])
        rows[asin] = row
    return items_frame(rows, _FIRST)


def _read(reviews: str | Path, meta: str | Path | None, release: str) -> RawData:
    items = None if meta is None else _read_meta(meta, release)
    cols = _read_reviews(reviews, release)
    source = f"amazon{release}: {reviews}" + ("" if meta is None else f", {meta}")
    return RawData(cols.frame(), items, source=source)


def read_amazon2014(reviews: str | Path, meta: str | Path | None = None) -> RawData:
    """Read a 2014 review file (``reviews_<Cat>[_5].json[.gz]``) and optionally its
    ``meta_<Cat>.json[.gz]`` (Python literals)."""
    return _read(reviews, meta, "2014")


def read_amazon2018(reviews: str | Path, meta: str | Path | None = None) -> RawData:
    """Read a 2018 review file (``<Cat>[_5].json[.gz]``) and optionally its
    ``meta_<Cat>.json[.gz]`` (JSON lines)."""
    return _read(reviews, meta, "2018")
