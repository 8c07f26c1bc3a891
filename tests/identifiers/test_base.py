"""ItemIdentifiers: code matrix, uniqueness check, save/load round trip."""

import numpy as np
import pytest

from identifiers.base import ItemIdentifiers


def _ids():
    levels = [["<a_0>", "<a_1>"], ["<b_0>", "<b_1>", "<b_2>"]]
    toks = [("<a_1>", "<b_0>"), ("<a_0>", "<b_2>"), ("<a_1>", "<b_2>")]
    return ItemIdentifiers("t", "codes", toks, vocab=[t for lv in levels for t in lv], levels=levels,
                           n_semantic_levels=2, stats={"epochs": 3},
                           arrays={"quantized": np.arange(8, dtype=np.float32).reshape(4, 2)})


def test_code_matrix_and_uniqueness():
    ids = _ids()
    assert ids.code_matrix().tolist() == [[1, 0], [0, 2], [1, 2]]
    ids.check_unique()
    dup = ItemIdentifiers("t", "codes", [("<a_1>",), ("<a_1>",)])
    with pytest.raises(ValueError, match="items 1 and 2 share"):
        dup.check_unique()
    with pytest.raises(ValueError, match="kind"):
        ItemIdentifiers("t", "words", [])


def test_save_load_round_trip(tmp_path):
    ids = _ids()
    ids.save(tmp_path, ["10", "11", "12"])
    back = ItemIdentifiers.load(tmp_path, ["10", "11", "12"])
    assert back.tokens == ids.tokens and back.levels == ids.levels and back.stats == ids.stats
    assert np.array_equal(back.arrays["quantized"], ids.arrays["quantized"])
