"""The generative methods' token space: a compact text vocabulary changes the numbering of
the text tokens only, never the token sequences themselves."""

import numpy as np

from benchmarks.methods.token_space import TokenSpace
from identifiers.base import ItemIdentifiers

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)",
          "Toy Story (1995)"]   # the last one collides with the first after tokenisation


def _spaces(**kw):
    ids = ItemIdentifiers("textual", "text", [(t,) for t in TITLES])
    args = dict(text_tokenizer="all-MiniLM-L6-v2", user_tokens=3, max_title_tokens=16,
                titles=TITLES, texts=["Which item will the user interact with next?"], **kw)
    return TokenSpace(ids, compact=False, **args), TokenSpace(ids, compact=True, **args)


def _to_raw(space: TokenSpace, table) -> list[list[int]]:
    """Rows of a token table as tokenizer ids (compact ids mapped back), new tokens by name."""
    names = {i: t for t, i in space.index.items()}
    n_text = len(space._keep) if space._keep is not None else len(space.tok)
    rows = []
    for row in table.tolist():
        rows.append([names[t] if t >= n_text else (int(space._keep[t]) if space._keep is not None else t)
                     for t in row if t != space.pad_id])
    return rows


def test_compact_vocabulary_keeps_every_sequence():
    full, small = _spaces()
    assert small.vocab_size < 100 < len(full.tok) < full.vocab_size
    assert _to_raw(full, full.item_table) == _to_raw(small, small.item_table)
    assert _to_raw(full, full.title_table) == _to_raw(small, small.title_table)
    # the colliding title was disambiguated: every item has its own token sequence
    assert len({tuple(r) for r in small.item_table[1:].tolist()}) == len(TITLES)
    # prompt text maps to kept tokens (no unknowns), and decodes back
    prompt = small.text("Which item will the user interact with next?")
    unk = small._compact[small.tok.unk_token_id]
    assert unk not in prompt
    assert small.decode(prompt) == full.decode(full.text("Which item will the user interact with next?"))
    assert small.decode(small.item_table[2].tolist()) == "goldeneye ( 1995 )"
    # text outside the kept set becomes the unknown token
    assert small.text("zeppelin") == [unk] * len(full.text("zeppelin"))
    # the new tokens (separator, user tokens) sit after the text tokens in both spaces
    assert small.sep_id == len(small._keep) and full.sep_id == len(full.tok)
    assert np.all(np.diff(sorted(small.new_token_ids)) == 1)
