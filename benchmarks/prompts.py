"""Instruction templates for the generative methods, kept in one place.

LC-Rec (Zheng et al., ICDE 2024) trains on a MIX of tasks that align the item codes with
language; each task is an (input, target) pair. ``{history}`` is the user's history (each item
written as its identifier tokens), ``{item}`` one item's identifier, ``{title}`` an item title.
Text around the placeholders is tokenised by the backbone's text tokenizer. ``seq`` without a
prompt (TIGER, P5-CID on T5) is the bare history -> next-item mapping.
"""

from __future__ import annotations

#: task -> (input template, target kind); target kind: "item" (identifier tokens) or "title"
TASKS: dict[str, tuple[str, str]] = {
    # sequential recommendation: history -> next item's identifier
    "seq": ("The user has interacted with these items in order: {history}. "
            "Which item will the user interact with next?", "item"),
    # item -> index: the item's title -> its identifier
    "item2index": ("Which item has the title \"{title}\"?", "item"),
    # index -> item: an identifier -> the item's title
    "index2item": ("What is the title of item {item}?", "title"),
    # history -> the next item's title
    "seq2title": ("The user has interacted with these items in order: {history}. "
                  "What is the title of the item the user will interact with next?", "title"),
}

LCREC_TASKS = ("seq", "item2index", "index2item", "seq2title")


def split_template(template: str) -> list[tuple[str, str | None]]:
    """``"a {history} b"`` -> [("a ", "history"), (" b", None)]: literal text before each
    placeholder, and the trailing text."""
    import string

    return [(literal, name) for literal, name, _, _ in string.Formatter().parse(template)]
