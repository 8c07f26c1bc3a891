"""Published codes: the semantic ids a paper's authors released, read from their file.

LETTER (and LC-Rec) release each dataset's item codes as ``<Name>.index.json``: raw item id ->
a list of code tokens, one per level, in the format this suite also writes
(``{"0": ["<a_183>", "<b_70>", "<c_232>", "<d_6>"], ...}``). Running TIGER's recommender on
them separates a tokenizer from the recommender trained on it: the same T5, loss and beam
search on the authors' codes and on ours.

- ``path``: the JSON file; None (default) = the file the dataset's catalog entry names beside
  its data (``beauty``: ``Beauty.index.json``, ``yelp``: ``Yelp.index.json``).
- Levels: the token's position in the list; each level's vocabulary is the tokens seen there,
  ordered by their number (``<b_70>`` -> 70), so the code-usage analyses read the codes as
  published. Every item of the dataset needs a code (an error names the file and the first
  missing ids); codes of items the dataset does not have (filtered out) are ignored, and the
  count is reported in the stats.
- Collisions: the released files are not collision-free (Beauty: 13 of 12,101 items share
  their 4 codes with another item; Yelp: 1,664 of 20,033 ... see ``stats``). The harness needs
  one identifier per item, so ``collision="token"`` (the default, TIGER's policy) appends a
  token 0, 1, 2 ... numbering the items that share a code tuple (every item gets it, so all
  identifiers keep one length). The authors' own evaluation instead counts a generated code as
  a hit for every item holding it ("ties"), which a trie over unique items cannot express; the
  collision share before and after is recorded (``collisions_before`` / ``collisions_after``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.errors import ConfigError, DataFormatError
from benchmarks.registry import register_identifier
from identifiers.base import IdentifierScheme, ItemIdentifiers
from identifiers.quantizers import LEVEL_LETTERS, code_usage, collision_report, disambiguation_token

_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


@dataclass
class PublishedCodesConfig:
    path: str | None = None
    collision: str = "token"

    def __post_init__(self):
        if self.collision != "token":
            raise ConfigError(f"published-codes: collision must be 'token' (a disambiguating last token), "
                              f"got {self.collision!r}")


def read_codes(path: Path) -> dict[str, tuple[str, ...]]:
    """The file's raw item id -> code tokens; errors name the file, the item and what was expected."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "a published codes file (raw item id -> list of code tokens)",
                              got="no such file") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(path, "valid JSON", line=e.lineno, got=e.msg) from None
    if not isinstance(data, dict) or not data:
        raise DataFormatError(path, "a non-empty JSON object raw item id -> list of code tokens",
                              got=type(data).__name__)
    out, length = {}, None
    for rid, toks in data.items():
        if (not isinstance(toks, list) or not toks
                or not all(isinstance(t, str) and _TOKEN.match(t) for t in toks)):
            raise DataFormatError(path, "a list of code tokens like \"<a_12>\"", got=f"item {rid!r}: {toks!r}")
        if length is None:
            length = len(toks)
        if len(toks) != length:
            raise DataFormatError(path, f"{length} codes per item (as the first item has)",
                                  got=f"item {rid!r}: {len(toks)}")
        out[str(rid)] = tuple(toks)
    return out


@register_identifier("published-codes")
class PublishedCodes(IdentifierScheme):
    """Codes released by a paper's authors (LETTER's <Name>.index.json), read as identifiers."""

    kind = "codes"
    family = "codebook"
    Config = PublishedCodesConfig
    content_based = True         # the authors derived them from item text
    smoke_config: dict = {}      # needs a file: the tests write one

    def _path(self) -> Path:
        path = self.config.path or self.dataset.info.get("codes_file")
        if not path:
            raise ConfigError(f"published-codes: dataset {self.dataset.name!r} has no published codes file "
                              f"beside its data; give identifier_config.path")
        return Path(path)

    def build(self) -> ItemIdentifiers:
        path = self._path()
        codes = read_codes(path)
        missing = [rid for rid in self.dataset.item_ids if rid not in codes]
        if missing:
            raise DataFormatError(path, f"a code for every item of dataset {self.dataset.name!r}",
                                  got=f"{len(missing)} items without one, e.g. {missing[:5]}")
        rows = [codes[rid] for rid in self.dataset.item_ids]
        n_levels = len(rows[0])
        parsed = [[_TOKEN.match(t).groups() for t in row] for row in rows]
        letters = []
        for lvl in range(n_levels):
            seen = {p[lvl][0] for p in parsed}
            if len(seen) != 1:
                raise DataFormatError(path, f"one token letter per level (e.g. <a_k> at level 1)",
                                      got=f"level {lvl + 1}: {sorted(seen)}")
            letters.append(seen.pop())
        extra_letter = next(x for x in LEVEL_LETTERS if x not in letters)
        numbers = np.array([[int(k) for _, k in p] for p in parsed], dtype=np.int64)
        extra = disambiguation_token(numbers)
        full = np.concatenate([numbers, extra[:, None]], 1)
        sizes = [int(full[:, j].max()) + 1 for j in range(n_levels + 1)]   # codebook = 0 .. largest code
        levels = [[f"<{x}_{k}>" for k in range(size)] for x, size in zip(letters + [extra_letter], sizes)]
        tokens = [tuple(levels[j][c] for j, c in enumerate(row)) for row in full.tolist()]
        stats = {"file": str(path), "codes_in_file": len(codes),
                 "codes_not_in_dataset": len(codes) - len(self.dataset.item_ids),
                 "collision_policy": "token (a disambiguating last token, TIGER's)",
                 "collisions_before": collision_report(numbers),
                 "collisions_after": collision_report(full),
                 "code_usage": code_usage(full, sizes)}
        return ItemIdentifiers(self.name, "codes", tokens, vocab=[t for lv in levels for t in lv],
                               levels=levels, n_semantic_levels=n_levels, stats=stats)
