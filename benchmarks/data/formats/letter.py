"""LC-Rec / LETTER preprocessed JSON: ``<Name>.inter.json`` and optional ``<Name>.item.json``.

``inter``: a JSON object user -> list of item ids in time order (ids ints or strings);
``item``: item -> object of text fields::

    {"0": [0, 1, 2, 3, 4], "1": [5, 6, 7, 8, 9, 3, 10]}
    {"0": {"title": "OPI Nail Lacquer", "categories": [["Beauty", "Makeup", "Nails"]]}}

No timestamps: ``timestamp`` is NaN and the row order (users in file order, items in list order)
is the only time information. ``categories`` may be a string, a list, or a list of category
paths (every distinct category, first occurrence first, ", "-joined); a list ``description`` is
joined with spaces; other fields are kept under their own names (lists ", "-joined). Text is
HTML-unescaped and whitespace-collapsed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.data.formats._common import (Columns, clean_text, items_frame, join_categories,
                                             join_text, numbered_lines, require_file)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError


def _load(path: Path, what: str, expected: str):
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"valid JSON ({expected})", line=e.lineno, got=e.msg) from None
    except UnicodeDecodeError as e:
        raise DataFormatError(path, "UTF-8 text", got=str(e)) from None
    if not isinstance(data, dict):
        raise DataFormatError(path, expected, line=1, got=type(data).__name__)
    return data


def _line_of(path: Path, key: str) -> int | None:
    """1-based line where the top-level ``"key":`` is written (for error messages only)."""
    pattern = re.compile(re.escape(json.dumps(key)) + r"\s*:")
    for lineno, line in numbered_lines(path, "a JSON file"):
        if pattern.search(line):
            return lineno
    return None


def _raw_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _text(name: str, value: object) -> str | None:
    if name == "categories":
        return join_categories(value)
    if name == "description":
        return join_text(value, " ")
    if isinstance(value, (list, tuple)):
        return join_categories(value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return clean_text(value)


def read_letter_json(path: str | Path, name: str) -> RawData:
    """Read ``<path>/<name>.inter.json`` and, when present, ``<name>.item.json`` (``path``: the
    folder)."""
    directory = Path(path)
    inter = directory / f"{name}.inter.json"
    expected = "a JSON object user -> list of item ids (ints or strings)"
    data = _load(inter, f"the LETTER/LC-Rec interaction file {name}.inter.json", expected)
    cols = Columns()
    for user, seq in data.items():
        ids = [_raw_id(v) for v in seq] if isinstance(seq, list) else [None]
        if None in ids:
            raise DataFormatError(inter, expected, line=_line_of(inter, user),
                                  got=f"{json.dumps(user)}: {json.dumps(seq)[:80]}")
        for item in ids:
            cols.add(user, item)
    item_path = directory / f"{name}.item.json"
    items = None
    if item_path.is_file():
        expected = "a JSON object item -> object of text fields"
        rows: dict[str, dict[str, str | None]] = {}
        for item, rec in _load(item_path, f"{name}.item.json", expected).items():
            if not isinstance(rec, dict):
                raise DataFormatError(item_path, expected, line=_line_of(item_path, item),
                                      got=f"{json.dumps(item)}: {json.dumps(rec)[:80]}")
            rows[item] = {k: _text(k, v) for k, v in rec.items()}
        items = items_frame(rows, ("title", "categories", "brand", "description"))
    source = f"letter-json: {inter}" + (f", {item_path}" if items is not None else "")
    return RawData(cols.frame(), items, source=source)
