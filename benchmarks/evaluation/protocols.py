"""The evaluation protocol: ONE named choice per run, recorded with every figure.

Published numbers in this field differ as much by protocol as by model. The two choices that
move them most are named here, resolved once per dataset, and written into every result row
(``results.csv``'s ``protocol`` column) and every table caption, so that no table mixes them:

- ``masked`` — each user's history items (everything before the target: training items for
  validation, training + validation items for test) are removed from the ranking, the target
  too where it repeats a history item (it can then never be hit). Where no target ever occurs
  in its user's history (5-core Amazon / MovieLens files: nobody buys or rates an item twice)
  this is exactly RecBole's masking for its general models (BPR, LightGCN), and what its
  baseline tables report. Where targets repeat (LETTER's Yelp) it is NOT: RecBole removes the
  history MINUS the user's positive items (``used_ids - positive_items``), so a repeat target
  stays rankable while the other history items are removed — a third protocol, not built here
  (results/parity/yelp-masked/README.md measures what it changes).
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
    "masked": "history items removed from the ranking (RecBole's default)",
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
    """A protocol resolved for one dataset: ``name`` (masked | unmasked), ``refit``, what was
    asked for, and why (the counts behind an ``auto`` decision)."""

    name: str
    refit: bool
    requested: str
    reason: str

    @property
    def mask_history(self) -> bool:
        return self.name == "masked"

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


def describe(label: str) -> str:
    """Caption text for a protocol label (``masked``, ``unmasked+refit`` ...)."""
    name, _, extra = label.partition("+")
    text = f"protocol `{label}`: {PROTOCOLS.get(name, 'unknown protocol')}"
    if extra == "refit":
        text += ("; non-sequential methods refit on training + validation for the best "
                 "epoch count before ranking the test split")
    return text
