"""Readers, one module per published format; each returns a :class:`benchmarks.data.raw.RawData`.

    raw = read_format("movielens-100k", path="~/.cache/genrec-bench/raw/ml-100k/grouplens")
    raw = FORMATS["letter-json"]("../shared/datasets/beauty", "Beauty")
"""

from __future__ import annotations

from typing import Callable

from benchmarks.data.formats.amazon import read_amazon2014, read_amazon2018
from benchmarks.data.formats.amazon2023 import read_amazon2023, read_amazon2023_benchmark
from benchmarks.data.formats.letter import read_letter_json
from benchmarks.data.formats.movielens import read_movielens_1m, read_movielens_100k
from benchmarks.data.formats.p5 import read_p5_sequential
from benchmarks.data.formats.recbole import read_recbole
from benchmarks.data.formats.setrec import read_setrec
from benchmarks.data.formats.yelp import read_yelp
from benchmarks.data.raw import RawData
from benchmarks.errors import UnknownNameError

FORMATS: dict[str, Callable[..., RawData]] = {
    "movielens-100k": read_movielens_100k,
    "movielens-1m": read_movielens_1m,
    "recbole": read_recbole,
    "amazon2014": read_amazon2014,
    "amazon2018": read_amazon2018,
    "amazon2023": read_amazon2023,
    "amazon2023-benchmark": read_amazon2023_benchmark,
    "yelp": read_yelp,
    "letter-json": read_letter_json,
    "setrec-npy": read_setrec,
    "p5-sequential": read_p5_sequential,
}


def read_format(name: str, /, **kwargs) -> RawData:
    """Call the reader registered as ``name`` with ``kwargs`` (its own parameter names: ``path``
    for the folder-based readers, ``reviews`` / ``meta`` for Amazon, ``business`` / ``review``
    for Yelp). ``name`` is positional-only, so a reader's own ``name`` can be a keyword."""
    try:
        reader = FORMATS[name]
    except KeyError:
        raise UnknownNameError("format", name, list(FORMATS)) from None
    return reader(**kwargs)


__all__ = ["FORMATS", "read_format", "read_amazon2014", "read_amazon2018", "read_amazon2023",
           "read_amazon2023_benchmark", "read_letter_json",
           "read_movielens_100k", "read_movielens_1m", "read_p5_sequential", "read_recbole", "read_setrec", "read_yelp"]
