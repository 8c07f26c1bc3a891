"""RecBole atomic files: ``<name>.inter`` and optional ``<name>.item`` in one folder.

Tab-separated, no quoting; the first line is a typed header ``field:type`` with type one of
``token``, ``token_seq``, ``float``, ``float_seq`` (sequences are space-separated)::

    user_id:token	item_id:token	rating:float	timestamp:float
    196	242	3	881250949

``.inter`` needs ``user_id:token`` and ``item_id:token``; ``rating:float`` and
``timestamp:float`` are read when present, other columns ignored. ``.item`` needs
``item_id:token``; its fields are mapped onto the canonical text fields (``movie_title`` /
``title`` / ``name`` -> ``title``; ``class`` / ``genre`` / ``genres`` / ``categories`` /
``category`` -> ``categories``, whose space-separated tokens are ", "-joined); every other
field is kept under its own name (as text). Text is HTML-unescaped and whitespace-collapsed.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.data.formats._common import (TIMESTAMP, Columns, clean_text, finite, items_frame,
                                             numbered_lines)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError

TYPES = ("token", "token_seq", "float", "float_seq")
_TITLE = ("movie_title", "title", "name")
_CATEGORIES = ("class", "genre", "genres", "categories", "category")
_HEADER = "a tab-separated header of 'field:type' (type one of token, token_seq, float, float_seq)"


def _header(path: Path, line: str, required: tuple[str, ...],
            floats: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``[(name, type), ...]`` from the header line, checking the required fields' types."""
    fields: list[tuple[str, str]] = []
    for col in line.split("\t"):
        name, sep, typ = col.strip().rpartition(":")
        if not sep or not name or typ not in TYPES:
            raise DataFormatError(path, _HEADER, line=1, got=line)
        fields.append((name, typ))
    have = dict(fields)
    if len(have) != len(fields):
        raise DataFormatError(path, "distinct field names in the header", line=1, got=line)
    for name in required:
        if have.get(name) != "token":
            raise DataFormatError(path, f"a header with the field '{name}:token'", line=1,
                                  got=line)
    for name in floats:
        if have.get(name, "float") != "float":
            raise DataFormatError(path, f"'{name}:float' in the header", line=1, got=line)
    return fields


def _rows(path: Path, what: str, required: tuple[str, ...], floats: tuple[str, ...] = ()):
    """Yield the header fields, then (line number, values) for each non-blank data line."""
    lines = numbered_lines(path, what)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, _HEADER, line=1, got="an empty file")
    fields = _header(path, first[1], required, floats)
    yield fields
    n = len(fields)
    expected = f"{n} tab-separated fields ({' '.join(f'{a}:{b}' for a, b in fields)})"
    for lineno, line in lines:
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != n:
            raise DataFormatError(path, expected, line=lineno, got=line)
        yield lineno, values


def _float(path: Path, lineno: int, text: str, field: str, line: str, *,
           required: bool = False) -> float:
    """A finite number; an empty field is NaN (a missing rating), or an error when
    ``required`` (a timestamp: every row has one or the file has no timestamp column)."""
    expected = TIMESTAMP if required else "a finite number (or an empty field)"
    if not text.strip():
        if required:
            raise DataFormatError(path, expected, line=lineno, got=line, field=field)
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, expected, line=lineno, got=line, field=field) from None
    return finite(path, lineno, value, field, line, expected)


def _locate(path: str | Path, name: str | None) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".inter" or p.is_file():
        return p, p.with_suffix(".item")
    if name is None:
        found = sorted(p.glob("*.inter"))
        name = found[0].stem if len(found) == 1 and not (p / f"{p.name}.inter").exists() else p.name
    return p / f"{name}.inter", p / f"{name}.item"


def read_recbole(path: str | Path, name: str | None = None) -> RawData:
    """Read ``<path>/<name>.inter`` (and ``<name>.item`` if present). ``name`` defaults to the
    folder's name, as RecBole lays datasets out (``ml-100k/ml-100k.inter``), or else to the
    only ``.inter`` file in the folder. A path to the ``.inter`` file itself also works (the
    ``.item`` beside it is then used)."""
    inter, item = _locate(path, name)
    rows = _rows(inter, "a RecBole interaction file <name>.inter", ("user_id", "item_id"),
                 ("rating", "timestamp"))
    fields = [f for f, _ in next(rows)]
    ui, ii = fields.index("user_id"), fields.index("item_id")
    ri = fields.index("rating") if "rating" in fields else None
    ti = fields.index("timestamp") if "timestamp" in fields else None
    cols = Columns(rating=ri is not None)
    for lineno, values in rows:
        user, it = values[ui].strip(), values[ii].strip()
        if not user or not it:
            raise DataFormatError(inter, "a user_id and an item_id", line=lineno,
                                  got="\t".join(values))
        ts = math.nan if ti is None else _float(inter, lineno, values[ti], "timestamp",
                                                "\t".join(values), required=True)
        rating = None if ri is None else _float(inter, lineno, values[ri], "rating",
                                                "\t".join(values))
        cols.add(user, it, ts, rating)
    items = _read_items(item) if item.is_file() else None
    source = f"recbole: {inter}" + (f", {item}" if items is not None else "")
    return RawData(cols.frame(), items, source=source)


def _read_items(path: Path):
    rows_iter = _rows(path, "a RecBole item file <name>.item", ("item_id",))
    fields = next(rows_iter)
    names = _canonical_names([f for f, _ in fields])
    idx = [f for f, _ in fields].index("item_id")
    rows: dict[str, dict[str, str | None]] = {}
    for lineno, values in rows_iter:
        item = values[idx].strip()
        if not item:
            raise DataFormatError(path, "an item_id", line=lineno, got="\t".join(values))
        rec: dict[str, str | None] = {}
        for i, (name, (_, typ)) in enumerate(zip(names, fields)):
            if i == idx:
                continue
            if name == "categories" and typ == "token_seq":
                rec[name] = ", ".join(values[i].split()) or None
            else:
                rec[name] = clean_text(values[i])
        rows.setdefault(item, rec)
    return items_frame(rows, ("title", "categories", "brand", "description"))


def _canonical_names(fields: list[str]) -> list[str]:
    """Column name per field: the canonical ``title`` / ``categories`` for one source field each
    (the field already named so, else the first alias in the header), own names otherwise."""
    names = list(fields)
    for canon, aliases in (("title", _TITLE), ("categories", _CATEGORIES)):
        if canon in fields:
            continue
        for i, f in enumerate(fields):
            if f in aliases:
                names[i] = canon
                break
    return names
