"""Helpers the readers share: opening (gzipped) files, text cleaning, building the frames."""

from __future__ import annotations

import gzip
import html
import json
import math
import re
import zlib
from array import array
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np
import pandas as pd

from benchmarks.errors import DataFormatError

_GZIP_MAGIC = b"\x1f\x8b"
_SPACE = re.compile(r"\s+")


def require_file(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or DataFormatError "expected an existing file (<what>)"."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, f"an existing file ({what})")
    return path


def open_binary(path: str | Path, what: str) -> BinaryIO:
    """Open a file for streaming, gunzipping it when it starts with the gzip magic bytes."""
    path = require_file(path, what)
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")


def numbered_lines(path: str | Path, what: str, encoding: str = "utf-8",
                   ) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending), streaming the file.

    Lines end at ``\\n`` only (``\\r\\n`` too): a lone ``\\r`` inside a field does not split
    the line. Each line is decoded on its own, so a byte sequence that is not valid
    ``encoding`` becomes a DataFormatError naming its own line.
    """
    lineno = 0
    with open_binary(path, what) as f:
        while True:
            try:
                raw = f.readline()
            except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
                raise DataFormatError(path, "a readable (gzip) file", line=lineno + 1,
                                      got=str(e)) from None
            if not raw:
                return
            lineno += 1
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                bad = e.object[e.start:e.end].hex(" ")
                raise DataFormatError(path, f"{encoding} text", line=lineno,
                                      got=f"undecodable bytes (hex) {bad}") from None
            if lineno == 1 and line.startswith("\ufeff"):  # a byte-order mark
                line = line[1:]
            yield lineno, line.rstrip("\r\n")


def json_records(path: str | Path, what: str, expected: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for a JSON-lines file; blank lines are skipped."""
    for lineno, line in numbered_lines(path, what):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise DataFormatError(path, expected, line=lineno, got=line) from None
        if not isinstance(rec, dict):
            raise DataFormatError(path, expected, line=lineno, got=line)
        yield lineno, rec


def clean_text(value: object) -> str | None:
    """Unescape HTML entities, collapse whitespace (newlines, tabs) to one space, strip.

    None, NaN and empty strings give None; non-strings are converted with ``str``."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = _SPACE.sub(" ", html.unescape(str(value))).strip()
    return text or None


def distinct(values: Iterable[str]) -> list[str]:
    """Cleaned, non-empty values without repeats, first occurrence first."""
    seen: dict[str, None] = {}
    for v in values:
        c = clean_text(v)
        if c is not None:
            seen.setdefault(c, None)
    return list(seen)


def join_categories(value: object) -> str | None:
    """One ", "-joined category string from a string, a list, or a list of category paths.

    Lists of paths are flattened: every distinct category, first occurrence first (so an item
    with several paths keeps all of them, and the shared root appears once)."""
    if value is None or isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        flat: list[str] = []
        for v in value:
            if isinstance(v, (list, tuple)):
                flat.extend(str(x) for x in v)
            elif v is not None:
                flat.append(str(v))
        return ", ".join(distinct(flat)) or None
    return clean_text(value)


def join_text(value: object, sep: str = " ") -> str | None:
    """A string as is (cleaned); a list of strings joined with ``sep`` (e.g. a description)."""
    if isinstance(value, (list, tuple)):
        parts = [clean_text(v) for v in value]
        return sep.join(p for p in parts if p) or None
    return clean_text(value)


class Columns:
    """Column lists an interaction reader appends to while streaming a file."""

    def __init__(self, rating: bool = False, split: bool = False):
        self.users: list[str] = []
        self.items: list[str] = []
        self.timestamps = array("d")
        self.ratings = array("d") if rating else None
        self.splits: list[str] | None = [] if split else None

    def add(self, user: str, item: str, timestamp: float = float("nan"),
            rating: float | None = None, split: str | None = None) -> None:
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(timestamp)
        if self.ratings is not None:
            self.ratings.append(float("nan") if rating is None else rating)
        if self.splits is not None:
            self.splits.append(split)

    def frame(self) -> pd.DataFrame:
        cols: dict[str, object] = {
            "user": pd.Series(self.users, dtype="str"),
            "item": pd.Series(self.items, dtype="str"),
            "timestamp": np.frombuffer(self.timestamps, dtype=np.float64).copy(),
        }
        if self.ratings is not None:
            cols["rating"] = np.frombuffer(self.ratings, dtype=np.float64).copy()
        if self.splits is not None:
            cols["split"] = pd.Series(self.splits, dtype="str")
        return pd.DataFrame(cols)


def items_frame(rows: dict[str, dict[str, str | None]], first: Iterable[str] = ()) -> pd.DataFrame:
    """DataFrame indexed by raw item id (name ``item``) from ``{id: {field: text}}``.

    Columns: the ``first`` fields that occur (in that order), then the others in order of first
    appearance; text columns are object dtype so a missing value stays None."""
    names: dict[str, None] = {}
    for rec in rows.values():
        for k in rec:
            names.setdefault(k, None)
    order = [f for f in first if f in names] + [f for f in names if f not in first]
    index = pd.Index(list(rows), dtype="str", name="item")
    data = {f: pd.Series([rec.get(f) for rec in rows.values()], index=index, dtype=object)
            for f in order}
    return pd.DataFrame(data, index=index)


def parse_float(path: Path, lineno: int, text: str, what: str, line: str) -> float:
    """float(text), or DataFormatError naming the line and ``what`` was expected."""
    try:
        return float(text)
    except ValueError:
        raise DataFormatError(path, what, line=lineno, got=line) from None


#: what a timestamp must be; a reader refuses any other value (README "Data rules")
TIMESTAMP = "a finite number (the timestamp, seconds)"


def finite(path: Path, lineno: int, value: float, field: str, line: str,
           expected: str = "a finite number") -> float:
    """``value`` when it is a finite number, else DataFormatError naming the line and the field.

    A NaN or infinite timestamp (``nan``, ``NaN``, ``inf``, JSON ``NaN`` / ``Infinity``) is
    refused: one such row among thousands used to switch time ordering off for the whole
    dataset (readers give a timestamp on every row or on none)."""
    if not math.isfinite(value):
        raise DataFormatError(path, expected, line=lineno, got=line, field=field)
    return value
