"""SETRec's numpy dict files (``data/<name>/`` of the SETRec repository).

``training_dict.npy``, ``validation_dict.npy``, ``testing_dict.npy``: a 0-d object array holding
a dict user -> list of item ids; ``warm_item.npy`` / ``cold_item.npy`` (optional): a 0-d object
array holding a set of item ids. Loaded with :func:`benchmarks.data.safe_pickle.load_npy_restricted`
(never unrestricted unpickling)::

    training_dict.npy -> {0: [1949, 11053, 9934], 1: [2940, 2362]}
    cold_item.npy     -> {3, 60, 77}

Rows: every training interaction (users in dict order, items in list order), then every
validation one, then every test one, with ``split`` = train / valid / test; ``timestamp`` NaN.
``extras["warm_items"]`` / ``extras["cold_items"]``: sorted raw id strings (numerically when
all ids are integers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.data.formats._common import Columns
from benchmarks.data.raw import RawData
from benchmarks.data.safe_pickle import load_npy_restricted
from benchmarks.errors import DataFormatError

SPLIT_FILES = (("train", "training_dict.npy"), ("valid", "validation_dict.npy"),
               ("test", "testing_dict.npy"))


def _raw_id(value: object) -> str | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str) and value:
        return value
    return None


def _ids(path: Path, values, what: str) -> list[str]:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise DataFormatError(path, f"{what}: a list or set of item ids", got=type(values).__name__)
    ids = [_raw_id(v) for v in values]
    if None in ids:
        bad = next(v for v, i in zip(values, ids) if i is None)
        raise DataFormatError(path, f"{what}: item ids (ints or strings)", got=repr(bad))
    return ids


def _sorted_ids(ids: list[str]) -> list[str]:
    if all(i.lstrip("-").isdigit() for i in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def read_setrec(path: str | Path) -> RawData:
    """Read the three split dicts (required) and the warm/cold item sets (when present)."""
    directory = Path(path)
    cols = Columns(split=True)
    for split, fname in SPLIT_FILES:
        fpath = directory / fname
        data = load_npy_restricted(fpath)
        if not isinstance(data, dict):
            raise DataFormatError(fpath, "a 0-d object array holding a dict user -> item list",
                                  got=type(data).__name__)
        for user, seq in data.items():
            uid = _raw_id(user)
            if uid is None:
                raise DataFormatError(fpath, "user ids (ints or strings)", got=repr(user))
            for item in _ids(fpath, seq, f"user {uid}"):
                cols.add(uid, item, split=split)
    extras: dict[str, list[str]] = {}
    for key, fname in (("warm_items", "warm_item.npy"), ("cold_items", "cold_item.npy")):
        fpath = directory / fname
        if fpath.is_file():
            extras[key] = _sorted_ids(_ids(fpath, load_npy_restricted(fpath), fname))
    return RawData(cols.frame(), None, source=f"setrec-npy: {directory}", extras=extras)
