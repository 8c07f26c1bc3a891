"""Read .npy files WITHOUT unrestricted unpickling.

Object arrays in a .npy file are stored as a pickle, and a pickle can run arbitrary code when
loaded. :func:`load_npy_restricted` parses the .npy header itself and unpickles the payload
with an Unpickler that admits only plain containers, numbers, strings and numpy arrays::

    train = load_npy_restricted("data/beauty/training_dict.npy")   # {user: [item, ...]}
    warm = load_npy_restricted("data/beauty/warm_item.npy")        # {item, ...}
"""

from __future__ import annotations

import builtins
import collections
import pickle
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from benchmarks.errors import DataFormatError

_EXPECTED = "only plain containers, numbers and numpy arrays"
_BUILTINS = ("set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bool",
             "complex", "bytes")
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


def _numpy_global(name: str):
    # resolve against numpy._core (numpy >= 2) or numpy.core (numpy 1.x) without importing the
    # deprecated numpy.core alias on numpy 2
    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in _NUMPY:
            return _numpy_global(name)
        raise DataFormatError(self._path, _EXPECTED, got=f"global {module}.{name}")

    def persistent_load(self, pid):
        raise DataFormatError(self._path, _EXPECTED, got="a persistent id")


def load_npy_restricted(path: str | Path):
    """Load a .npy file; an object array is unpickled with the restricted Unpickler above.

    A 0-d object array (how ``np.save`` stores a dict or a set) is unwrapped to its item.
    Anything else in the pickle -> DataFormatError naming the file and the refused global.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "an existing file (a numpy .npy file)")
    with open(path, "rb") as f:
        try:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except ValueError as e:
            raise DataFormatError(path, "a numpy .npy file (magic string and header)",
                                  got=str(e)) from None
        if not dtype.hasobject:
            f.seek(0)
            try:
                return np.load(f, allow_pickle=False)
            except ValueError as e:
                raise DataFormatError(path, "a readable numpy array", got=str(e)) from None
        try:
            array = _RestrictedUnpickler(f, path).load()
        except DataFormatError:
            raise
        except Exception as e:  # a truncated or corrupt pickle: any error the unpickler raises
            raise DataFormatError(path, "a pickled numpy object array",
                                  got=f"{type(e).__name__}: {e}") from None
    if not isinstance(array, np.ndarray):
        raise DataFormatError(path, "a pickled numpy array", got=type(array).__name__)
    if array.shape != tuple(shape):
        raise DataFormatError(path, f"an array of the header's shape {tuple(shape)}",
                              got=str(array.shape))
    if array.shape == ():
        return array.item()
    return array
