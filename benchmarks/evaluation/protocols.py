"""The evaluation protocol: ONE named choice per run, recorded with every figure.

Published numbers in this field differ as much by protocol as by model. The choices that
move them most are named here, resolved once per dataset, and written into every result row
(``results.csv``'s ``protocol`` column) and every table caption, so that no table mixes them:

- ``masked`` — each user's history items (everything before the target: training items for
  validation, training + validation items for test) are removed from the ranking, the target
  too where it repeats a history item (it can then never be hit). Where no target ever occurs
  in its user's history (5-core Amazon / MovieLens files: nobody buys or rates an item twice)
  this equals ``masked-keep-target``, RecBole's masking for its general models.
- ``masked-keep-target`` — the history items are removed EXCEPT the user's own targets of the
  split: RecBole 1.2.1's rule for general models (BPR, LightGCN; ``FullSortEvalDataLoader``
  masks ``used_ids - positive_items``), so a repeat target stays rankable while every other
  history item is removed. The mask reads the answer (which history item is the target), so
  this is not a protocol a deployed recommender could run; it is here because RecBole's
  general-model figures, and the parity harness's RecBole side, use it. Where targets repeat
  (LETTER's Yelp: 6 % of them) it moves figures far from ``masked`` (repeat targets become
  easy hits): results/parity/yelp-caser/README.md measures it.
- ``unmasked`` — every item stays rankable, history items included: what the generative
  papers' own code does (TIGER, LC-Rec, LETTER rank all items), and the only sound choice where
  users do repeat items (a masked repeat target could never be hit).
- ``auto`` (default) — decided from the data: ``masked`` when no validation or test target
  occurs in its user's history, else ``unmasked``. The resolution and its reason (the counts)
  are recorded in each cell's ``run.json``.

``refit`` (a separate switch, written as ``+refit`` after the name): after early stopping on
validation, methods whose ranking does not read the user's sequence (``Recommender.sequential
= False``: MostPop, MF, LightGCN) are trained again from scratch on training + validation
interactions for the best epoch count, and that model ranks the test split. Sequence models
already read the validation item in their test input; with ``refit`` every method's test
ranking sees it. Validation rows always come from the model trained on training only.

(:mod:`benchmarks.protocol` is a different concept: the interface every method implements.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.errors import ConfigError

if TYPE_CHECKING:
    from benchmarks.data.dataset import Dataset

#: name -> what the caption says
PROTOCOLS = {
    "masked": "history items removed from the ranking, a repeat target too",
    "masked-keep-target": "history items removed from the ranking except the user's target "
                          "(RecBole's general-model rule: the mask reads the answer)",
    "unmasked": "history items ranked like any other (the generative papers' code)",
}
CHOICES = ("auto", *PROTOCOLS)


def check_name(name: str) -> str:
    if name not in CHOICES:
        raise ConfigError(f"evaluation.protocol: unknown {name!r}; known: {', '.join(CHOICES)}")
    return name


def repeat_targets(ds: "Dataset") -> dict:
    """How often a validation / test target is an item already in its user's history."""
    out = {}
    for split in ("valid", "test"):
        hist = ds.history(split)
        n = hits = 0
        for u, targets in enumerate(ds.targets(split)):
            if len(targets):
                n += len(targets)
                hits += int(np.isin(targets, hist[u]).sum())
        out[split] = {"targets": n, "in_history": hits}
    return out


@dataclass(frozen=True)
class Resolved:
    """A protocol resolved for one dataset: ``name`` (a key of :data:`PROTOCOLS`), ``refit``,
    what was asked for, and why (the counts behind an ``auto`` decision)."""

    name: str
    refit: bool
    requested: str
    reason: str

    @property
    def mask_history(self) -> bool:
        return self.name in ("masked", "masked-keep-target")

    def excluded(self, history: list[np.ndarray], targets: list[np.ndarray]) -> list[np.ndarray] | None:
        """Per user, the items this protocol removes from the ranking, given the user's
        (uncapped) ``history`` and the split's ``targets``; None when nothing is removed."""
        if not self.mask_history:
            return None
        if self.name == "masked":
            return list(history)
        return [h[~np.isin(h, t)] for h, t in zip(history, targets)]

    @property
    def label(self) -> str:
        """The protocol as written in results.csv and captions, e.g. ``masked+refit``."""
        return self.name + ("+refit" if self.refit else "")

    def to_dict(self) -> dict:
        return {**asdict(self), "label": self.label}


def resolve(requested: str, ds: "Dataset", refit: bool = False) -> Resolved:
    """The protocol a run on ``ds`` uses (see the module docstring for ``auto``)."""
    check_name(requested)
    if requested != "auto":
        return Resolved(requested, refit, requested, "set in the matrix's evaluation.protocol")
    counts = repeat_targets(ds)
    hits = sum(c["in_history"] for c in counts.values())
    total = sum(c["targets"] for c in counts.values())
    if hits == 0:
        return Resolved("masked", refit, "auto",
                        f"auto: none of the {total} validation / test targets occurs in its user's "
                        f"history, so masking history items never removes a correct answer")
    return Resolved("unmasked", refit, "auto",
                    f"auto: {hits} of the {total} validation / test targets occur in their user's "
                    f"history (repeat consumption): masking would remove correct answers")


def equivalent(a: str, b: str, repeats: int) -> bool:
    """Whether protocols ``a`` and ``b`` rank every user the same on a dataset where
    ``repeats`` validation / test targets occur in their user's history
    (:func:`repeat_targets`): ``masked`` and ``masked-keep-target`` differ only on those."""
    return a == b or ({a, b} == {"masked", "masked-keep-target"} and repeats == 0)


def describe(label: str) -> str:
    """Caption text for a protocol label (``masked``, ``unmasked+refit`` ...)."""
    name, _, extra = label.partition("+")
    text = f"protocol `{label}`: {PROTOCOLS.get(name, 'unknown protocol')}"
    if extra == "refit":
        text += ("; non-sequential methods refit on training + validation for the best "
                 "epoch count before ranking the test split")
    return text
