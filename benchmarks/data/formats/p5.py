"""P5's sequential data: one user per line, ``user item item ...`` (space-separated, in time order).

    1 1 2 3 4 5
    2 6 7 8 9 10 4 11

The file of P5 / the P5 item-indexing study (``sequential_data.txt``) for Amazon Beauty, Sports,
Toys and Yelp. No timestamps (the order is the only time information) and no item text.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.data.formats._common import Columns, numbered_lines
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError


def read_p5_sequential(path: str | Path, name: str = "sequential_data.txt") -> RawData:
    """Read ``path`` (a file, or a folder holding ``name``)."""
    path = Path(path)
    if path.is_dir():
        path = path / name
    cols = Columns(rating=False)
    for lineno, line in numbered_lines(path, "P5 sequential data (user item item ...)"):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataFormatError(path, "a user id followed by at least one item id", line=lineno, got=line)
        for item in fields[1:]:
            cols.add(fields[0], item, math.nan, None)
    return RawData(cols.frame(), None, source=f"p5-sequential: {path}")
