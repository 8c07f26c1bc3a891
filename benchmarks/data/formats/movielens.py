"""MovieLens 100K and 1M as GroupLens publishes them (the unpacked zip folder).

ML-100K ``u.data`` (tab-separated ``user item rating timestamp``, UTF-8) and ``u.item``
(``|``-separated, latin-1; 5 fields then 19 genre flags)::

    196	242	3	881250949
    1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|...

ML-1M ``ratings.dat`` (UTF-8) and ``movies.dat`` (latin-1), ``::``-separated; genres ``|``-separated::

    1::1193::5::978300760
    1::Toy Story (1995)::Animation|Children's|Comedy
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.data.formats._common import (TIMESTAMP, Columns, clean_text, finite, items_frame,
                                             numbered_lines, parse_float)
from benchmarks.data.raw import RawData
from benchmarks.errors import DataFormatError

#: The 19 genres of ML-100K in flag order (the content of its ``u.genre``).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


def _read_ratings(path: Path, what: str, sep: str, expected: str) -> Columns:
    """The ratings file: numbers only, so UTF-8 (ASCII) text; a byte that is not (an id
    written in another encoding, a corrupt file) is an error naming its line, never an id of
    its own. Only the item files carry latin-1 titles."""
    cols = Columns(rating=True)
    for lineno, line in numbered_lines(path, what):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != 4 or not parts[0] or not parts[1]:
            raise DataFormatError(path, expected, line=lineno, got=line)
        rating = finite(path, lineno, parse_float(path, lineno, parts[2], expected, line),
                        "rating", line)
        ts = finite(path, lineno, parse_float(path, lineno, parts[3], expected, line),
                    "timestamp", line, TIMESTAMP)
        cols.add(parts[0].strip(), parts[1].strip(), ts, rating)
    return cols


def _read_genres(path: Path) -> tuple[str, ...]:
    """``u.genre`` lines ``name|index`` -> names in index order; the standard 19 if absent."""
    if not path.is_file():
        return ML100K_GENRES
    expected = "'genre|index' with indices 0, 1, 2 ... in order"
    names: list[str] = []
    for lineno, line in numbered_lines(path, "the ML-100K genre list u.genre", "latin-1"):
        if not line.strip():
            continue
        name, sep, idx = line.rpartition("|")
        if not sep or not name or idx.strip() != str(len(names)):
            raise DataFormatError(path, expected, line=lineno, got=line)
        names.append(name)
    return tuple(names)


def read_movielens_100k(path: str | Path) -> RawData:
    """Read ML-100K from the folder ``path`` holding ``u.data``, ``u.item`` and (optional) ``u.genre``.

    Items get ``title`` and ``categories`` (the names of the genres flagged 1, ", "-joined).
    """
    directory = Path(path)
    data_path, item_path = directory / "u.data", directory / "u.item"
    cols = _read_ratings(data_path, "the ML-100K ratings file u.data", "\t",
                         "4 tab-separated fields (user item rating timestamp)")
    genres = _read_genres(directory / "u.genre")
    n = 5 + len(genres)
    expected = (f"{n} '|'-separated fields (movie id|title|release date|video release date|"
                f"IMDb URL|{len(genres)} genre flags 0/1)")
    rows: dict[str, dict[str, str | None]] = {}
    for lineno, line in numbered_lines(item_path, "the ML-100K item file u.item", "latin-1"):
        if not line.strip():
            continue
        parts = line.split("|")
        flags = parts[5:]
        if len(parts) != n or not parts[0] or any(f not in ("0", "1") for f in flags):
            raise DataFormatError(item_path, expected, line=lineno, got=line)
        cats = [g for g, f in zip(genres, flags) if f == "1"]
        rows[parts[0]] = {"title": clean_text(parts[1]), "categories": ", ".join(cats) or None}
    return RawData(cols.frame(), items_frame(rows, ("title", "categories")),
                   source=f"movielens-100k: {data_path}, {item_path}")


def read_movielens_1m(path: str | Path) -> RawData:
    """Read ML-1M from the folder ``path`` holding ``ratings.dat`` and ``movies.dat``.

    Items get ``title`` and ``categories`` (the ``|``-separated genres, ", "-joined).
    """
    directory = Path(path)
    cols = _read_ratings(directory / "ratings.dat", "the ML-1M ratings file ratings.dat", "::",
                         "4 '::'-separated fields (UserID::MovieID::Rating::Timestamp)")
    movies = directory / "movies.dat"
    expected = "3 '::'-separated fields (MovieID::Title::Genres)"
    rows: dict[str, dict[str, str | None]] = {}
    for lineno, line in numbered_lines(movies, "the ML-1M movie file movies.dat", "latin-1"):
        if not line.strip():
            continue
        movie_id, sep, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep and sep2 and movie_id.strip()):
            raise DataFormatError(movies, expected, line=lineno, got=line)
        cats = [g.strip() for g in genres.split("|") if g.strip()]
        rows[movie_id.strip()] = {"title": clean_text(title), "categories": ", ".join(cats) or None}
    return RawData(cols.frame(), items_frame(rows, ("title", "categories")),
                   source=f"movielens-1m: {directory / 'ratings.dat'}, {movies}")
