import io
import pickle
import struct

import numpy as np
import pytest
from numpy.lib import format as npformat

from benchmarks.data.safe_pickle import load_npy_restricted
from benchmarks.errors import DataFormatError


def object_npy(path, payload: bytes):
    """A .npy file whose header announces a 0-d object array, followed by ``payload``."""
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + payload)  # the header starts with the magic string
    return path


def global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 pickle of ``module.name(arg)`` (GLOBAL, then REDUCE)."""
    s = arg.encode()
    return (b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(s)) + s
            + b"\x85R.")


def test_plain_array_without_pickle(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "a.npy", a)
    out = load_npy_restricted(tmp_path / "a.npy")
    assert out.dtype == np.float32 and (out == a).all()


def test_object_containers_round_trip(tmp_path):
    value = {0: [1, 2, 3], "u": {"nested": (1.5, True, None, b"x", 2j)}, 7: np.arange(3)}
    np.save(tmp_path / "d.npy", np.array(value, dtype=object))
    out = load_npy_restricted(tmp_path / "d.npy")
    assert out.keys() == value.keys() and out[0] == [1, 2, 3] and out["u"] == value["u"]
    assert (out[7] == np.arange(3)).all()
    np.save(tmp_path / "s.npy", np.array({3, 1, 2}, dtype=object))
    assert load_npy_restricted(tmp_path / "s.npy") == {1, 2, 3}
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = [1], frozenset({2})
    np.save(tmp_path / "o.npy", arr)
    out = load_npy_restricted(tmp_path / "o.npy")
    assert out.shape == (2,) and out[0] == [1] and out[1] == frozenset({2})


@pytest.mark.parametrize("module, name", [("os", "system"), ("posix", "system"),
                                          ("builtins", "eval"), ("builtins", "exec")])
def test_refuses_malicious_global_and_runs_nothing(tmp_path, module, name):
    marker = tmp_path / "pwned"
    code = f"touch {marker}" if name == "system" else \
        f"open({str(marker)!r}, 'w').close()"
    path = object_npy(tmp_path / "evil.npy", global_call(module, name, code))
    with pytest.raises(DataFormatError) as e:
        load_npy_restricted(path)
    assert str(e.value) == (f"{path}: expected only plain containers, numbers and numpy arrays, "
                            f"got 'global {module}.{name}'")
    assert not marker.exists()


def test_refuses_payload_hidden_inside_an_object_array(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("true",))

    arr = np.empty(1, dtype=object)
    arr[0] = {"ok": [1], "bad": Evil()}
    np.save(tmp_path / "hidden.npy", arr, allow_pickle=True)
    with pytest.raises(DataFormatError, match=r"got 'global (posix|os)\.system'"):
        load_npy_restricted(tmp_path / "hidden.npy")


def test_corrupt_and_missing_files(tmp_path):
    np.save(tmp_path / "d.npy", np.array({1: [2]}, dtype=object))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "d.npy").read_bytes()[:-5])
    with pytest.raises(DataFormatError, match=r"cut\.npy: expected a pickled numpy object array"):
        load_npy_restricted(tmp_path / "cut.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataFormatError, match=r"junk\.npy: expected a numpy \.npy file"):
        load_npy_restricted(tmp_path / "junk.npy")
    with pytest.raises(DataFormatError, match=r"none\.npy: expected an existing file"):
        load_npy_restricted(tmp_path / "none.npy")
    path = object_npy(tmp_path / "notarray.npy", pickle.dumps([1, 2], protocol=2))
    with pytest.raises(DataFormatError, match=r"expected a pickled numpy array, got 'list'"):
        load_npy_restricted(path)


@pytest.mark.shared
def test_loads_real_setrec_files(shared):
    d = shared("setrec-beauty")
    train = load_npy_restricted(d / "training_dict.npy")
    assert isinstance(train, dict) and len(train) == 18136
    assert train[0] == [1949, 11053, 9934, 7222, 10214]
    cold = load_npy_restricted(d / "cold_item.npy")
    assert isinstance(cold, set) and len(cold) == 617
    emb = load_npy_restricted(d / "SASRec_item_embed.npy")
    assert emb.shape == (12024, 64) and emb.dtype == np.float32
