"""The one protocol every method follows, traditional baseline or generative scheme.

A method is a :class:`Recommender` subclass registered by name (see :mod:`benchmarks.registry`):

    @register_method("my-model")
    class MyModel(Recommender):
        family = "traditional"          # traditional | id | textual | codebook | set
        Config = MyConfig               # a dataclass; its defaults are the paper's values

        def fit(self, validator): ...   # train; early-stop on validator(self) (NDCG@10)
        def score(self, batch): ...     # [B, n_items + 1] scores over ALL items, or
        def rank(self, batch, k, candidates=None, exclude=None): ...  # top-k directly

The harness calls ``fit`` once, then ``rank`` on batches of users for every split and subset
(warm items only, cold items only ...). The default ``rank`` takes ``score`` and applies the
candidate mask and the exclusions; generative methods that decode top-k lists (beam search)
override ``rank`` instead and may leave ``score`` unimplemented.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from benchmarks.errors import ConfigError
from benchmarks.precision import autocast

if TYPE_CHECKING:  # imported for type hints only: the protocol must stay light
    from benchmarks.data.dataset import Dataset
    from benchmarks.features import FeatureStore

FAMILIES = ("traditional", "id", "textual", "codebook", "set")


@dataclass
class UserBatch:
    """Users to rank: ``users`` [B] (0-based user index) and ``history`` [B, H] (the last H
    items before the split's targets, LEFT-padded with 0, most recent item last).

    Where the dataset has timestamps, ``times`` [B, H] (float64 seconds, 0 at padding) holds
    those of the history items. ``target_time`` [B] is the timestamp of each user's (first)
    target interaction: HELD-OUT information, which the harness sets only for a method whose
    ``reads_target_time`` is true (a config value that opts in, e.g. HSTU's
    ``time_query="next"``); None otherwise."""

    users: torch.Tensor
    history: torch.Tensor
    times: torch.Tensor | None = None
    target_time: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "UserBatch":
        move = lambda t: None if t is None else t.to(device)
        return UserBatch(self.users.to(device), self.history.to(device), move(self.times),
                         move(self.target_time))

    def __len__(self) -> int:
        return int(self.users.shape[0])


#: validator(model) -> validation NDCG@10 (higher is better), computed by the harness.
Validator = Callable[["Recommender"], float]


class ValidatorPanel:
    """Several validators of ONE training, one per evaluation protocol (``labels``: the
    protocols' labels, e.g. ``masked`` and ``unmasked``), given to ``fit`` in place of a
    validator when the runner trains a method once for several protocols.

    The protocols rank the same model differently but leave training untouched, so one training
    serves all of them: :func:`benchmarks.training.train_loop` validates every protocol at every
    validation, keeps each protocol's best state, early-stops each on its own patience and
    trains on until the last one has stopped; each protocol's ``outcomes`` entry is then the log
    and best state a run of that protocol alone would have produced (its epochs end where its
    patience ran out). Only ``train_loop`` reads a panel: the runner gives one to methods whose
    ``fit`` is that loop's, and trains the others once per protocol. Calling the panel like a
    validator is an error, so a fit that bypasses the loop cannot use one protocol's scores for
    all.

    ``on_stop(index, log, best_state)``: called by the loop as soon as protocol ``index``'s
    patience has run out while another protocol trains on (not in data-parallel training, where
    every process would have to take part): the runner evaluates and writes that protocol's
    cell there and then, so a training stopped later (a killed run, a sitting's end) keeps it.
    The loop puts the module's weights and every random stream back afterwards
    (:func:`benchmarks.utils.preserved_rng`): the training that goes on is the one it would have
    been. Those protocols' indices are in ``written_early``."""

    def __init__(self, validators: list[Validator], labels: list[str],
                 on_stop: "Callable[[int, dict, dict | None], None] | None" = None):
        if len(validators) != len(labels) or not validators:
            raise ValueError(f"ValidatorPanel: one label per validator, at least one, got "
                             f"{len(validators)} validator(s) and labels {labels}")
        self.validators, self.labels = list(validators), list(labels)
        self.on_stop = on_stop
        #: after training, per protocol (in ``labels``' order): (train log, best state or None)
        self.outcomes: list[tuple[dict, dict | None]] | None = None
        #: the protocols whose ``on_stop`` ran during the training (their cells are written)
        self.written_early: list[int] = []

    def __call__(self, model: "Recommender") -> float:
        raise TypeError(f"{type(model).__name__}: a ValidatorPanel ({', '.join(self.labels)}) is read by "
                        f"benchmarks.training.train_loop only; this method's fit validates by itself")


@dataclass
class Context:
    """What a method gets besides its config: the data, lazily computed item features and the
    run-wide settings. A run's context is built in one place,
    :func:`benchmarks.context.build_context` (the runner, ``tokenize``, the bench scripts).

    - ``features``: the dataset's FeatureStore; None for a method whose ``needs`` is empty.
    - ``device``, ``seed``, ``progress`` (whether bars may be drawn).
    - ``precision``: ``fp32``, ``bf16`` or ``fp16``, already resolved for the device
      (:func:`benchmarks.precision.resolve_precision`): what torch methods train and decode in.
    - ``cache``: the root folder of the suite's cache (identifier-scheme outputs are kept under
      it); None: nothing is cached (a refit, a unit test).
    - ``validator``: the harness's validation NDCG@10, the early-stopping signal of trainings
      inside a method or its features (the FeatureStore's CF SASRec gets the same one); the
      runner passes it to ``fit`` as well.
    - ``max_steps``: a dry run's cap on the optimiser steps of the method's own training (the
      training loop stops there); None (always, outside ``genrec-bench run --dry-run``).
    - ``meta``: ``genrec-bench run --estimate-only``: a torch method builds its module on the
      meta device (every tensor a shape, no memory: a 1.5B-parameter LM is counted on a
      laptop) and is never trained; False otherwise.
    - ``protocol``: the label of the evaluation protocol ``validator`` scores under (``masked``,
      ``unmasked`` ...; empty where none was named): what a training checkpoint records its
      model selection under.
    - ``checkpoint``: the file the method's :func:`~benchmarks.training.train_loop` keeps its
      state in every ``checkpoint_seconds`` of training and resumes from (the runner names it,
      one per training, :meth:`benchmarks.rundir.RunDir.training_checkpoint`); None: no
      checkpoint (a unit test, a refit, a dry run)."""

    dataset: "Dataset"
    features: "FeatureStore | None" = None
    device: str = "cpu"
    seed: int = 0
    precision: str = "fp32"
    cache: Path | None = None
    progress: bool = True
    validator: Validator | None = None
    max_steps: int | None = None
    meta: bool = False
    protocol: str = ""
    checkpoint: Path | None = None
    checkpoint_seconds: float = 600.0


@dataclass
class NoConfig:
    """For methods without hyper-parameters."""


class Recommender(abc.ABC):
    """Base class of every method. See the module docstring for the contract."""

    name: ClassVar[str] = ""
    #: the report's row group (one of FAMILIES), read through :meth:`family_of`; None for a
    #: method whose group follows its config (generative methods: their identifier scheme's)
    family: ClassVar[str | None] = "traditional"
    Config: ClassVar[type] = NoConfig
    #: what the method reads from the FeatureStore: {"text", "cf"}. With none, the method gets no
    #: FeatureStore (``ctx.features`` is None). With some, the matrix's feature settings (text
    #: template, text encoder) are part of its cells' config hash. Features are computed when a
    #: method first asks for one (and cached), so a method builds only what it reads.
    needs: ClassVar[frozenset[str]] = frozenset()
    #: config overrides for a seconds-long run on the toy dataset (contract tests, smoke runs)
    smoke_config: ClassVar[dict] = {}
    #: True for methods whose ``rank`` DECODES (beam search) while ``score`` gives exact scores
    #: of every item: the evaluator can then compare the two (beam vs global ranking)
    decodes: ClassVar[bool] = False
    #: False for methods whose ranking ignores the user's sequence (MostPop, MF, LightGCN):
    #: the ``refit`` protocol option retrains those on training + validation for the test split
    sequential: ClassVar[bool] = True

    def __init__(self, config: Any, ctx: Context):
        self.config = config
        self.ctx = ctx
        self.dataset = ctx.dataset
        self.n_items = ctx.dataset.n_items
        self.device = torch.device(ctx.device)
        self.precision = ctx.precision

    @classmethod
    def family_of(cls, config: Any = None) -> str | None:
        """The one answer to "which family is this method": the report's row group for
        ``config`` (the runner records it in every result row), and for ``config=None`` the
        method's own, as ``genrec-bench plugins`` lists it (None where only a config decides).
        Default: the class's ``family``."""
        return cls.family

    # ------------------------------------------------------------------ training
    @abc.abstractmethod
    def fit(self, validator: Validator | None = None) -> dict:
        """Train on ``self.dataset.train`` only; return a log (dict, JSON-serialisable: the
        cell's train log). Its ``notes``, where given, is one free-text sentence of what the
        method ran (a variant, the loss it trained with), which the report prints."""

    # ------------------------------------------------------------------ inference
    def score(self, batch: UserBatch) -> torch.Tensor:
        """Scores over all items, [B, n_items + 1] (column 0 = padding, ignored)."""
        raise NotImplementedError(f"{type(self).__name__} ranks directly and has no scores")

    @torch.no_grad()
    def rank(self, batch: UserBatch, k: int, candidates: torch.Tensor | None = None,
             exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k item ids [B, k] (best first) and their scores [B, k].

        ``candidates``: bool [n_items + 1], only these items may be returned (e.g. warm items).
        ``exclude``: [B, M] item ids per user that must not be returned (0 = none).
        Fewer than k valid items -> the tail is filled with item 0 and score -inf.
        """
        scores = self.score(batch).float().clone()
        return topk_from_scores(scores, k, candidates, exclude)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the harness runs this method's forward passes under (its training
        losses in :func:`benchmarks.training.train_loop`, its ``rank`` / ``score`` calls in the
        evaluator): ``torch.autocast`` in the run's precision (``ctx.precision``: bf16 / fp16),
        nothing in fp32. Inert for a method without torch modules."""
        return autocast(self.precision, self.device)

    def write_artefacts(self, cell) -> None:
        """Keep what the method wants a finished cell to hold besides its metrics (a generative
        method: its item identifiers and their code usage), through the writers of ``cell``, a
        :class:`benchmarks.rundir.CellDir` (the run directory sits above the protocol, so it is
        not imported here). The runner calls it once, after training and evaluation; default:
        nothing."""

    def cold_scoring(self) -> str | None:
        """How this method can score a COLD item (one no training interaction contains):
        ``"content"`` where its item representation comes from item features (text
        embeddings, semantic ids built from them), or None where it cannot — such an item's
        score is its initialisation or a tie-break (MostPop, MF, LightGCN, SASRec's and the
        other ID-embedding models' untrained rows, ID identifiers), which the report does not
        print as a figure. Default: None."""
        return None

    @property
    def reads_target_time(self) -> bool:
        """True if ranking reads the held-out interaction's timestamp (``UserBatch.target_time``);
        only a config value that says so may make it true. Default False."""
        return False

    @property
    def has_scores(self) -> bool:
        return type(self).score is not Recommender.score

    def eval(self) -> "Recommender":
        """Switch torch modules to evaluation mode (no-op for non-torch methods)."""
        return self

    def train(self) -> "Recommender":
        return self


def history_window(requested: int | None, dataset_cap: int, where: str = "") -> int:
    """How many recent history items a method reads: the dataset's ``max_history`` (the cap
    every split's histories are cut to, evaluation included) where the method's config says
    None, else the config's value, which may only be SHORTER. A longer one is a ConfigError: the
    method would train on longer histories than it is ranked on. The one rule for every
    method config with a ``max_history`` field, checked when a matrix is expanded and when a
    method is built."""
    if requested is None:
        return dataset_cap
    if requested < 1 or requested > dataset_cap:
        raise ConfigError(f"{where + ': ' if where else ''}field 'max_history': expected 1 .. {dataset_cap} "
                          f"(the dataset's history cap, its max_history), got {requested}; set the dataset's "
                          f"max_history to train on longer histories")
    return requested


class NaNScoreError(FloatingPointError):
    """NaN among the scores a ranking would use (a diverged model). ``torch.topk`` puts NaN
    first, so such a model would look like one recommending items 1..K; it is an error
    instead, which the evaluator completes with the method and the split."""


def topk_from_scores(scores: torch.Tensor, k: int, candidates: torch.Tensor | None = None,
                     exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask padding, non-candidates and exclusions with -inf, then top-k. Ties go to the lower
    item id (a stable descending sort), so rankings are deterministic. A NaN among the scores
    left (the ones a ranking uses) is a :class:`NaNScoreError`."""
    scores[:, 0] = float("-inf")
    if candidates is not None:
        scores[:, ~candidates.to(scores.device)] = float("-inf")
    if exclude is not None and exclude.numel():
        exclude = exclude.to(scores.device)
        rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(exclude)
        keep = exclude > 0
        scores[rows[keep], exclude[keep]] = float("-inf")
    nan = torch.isnan(scores)
    if nan.any():
        raise NaNScoreError(f"{int(nan.sum())} NaN score(s) for {int(nan.any(1).sum())} of "
                            f"{scores.shape[0]} users")
    k = min(k, scores.shape[1] - 1)
    vals, idx = torch.topk(scores, k, dim=1)
    # ties at the cut: rows where the k-th score occurs beyond the top-k get a stable sort
    kth = vals[:, -1:]
    cut = (scores == kth).sum(1) > (vals == kth).sum(1)
    if cut.any():
        rows = cut.nonzero().squeeze(1)
        v, i = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = v[:, :k], i[:, :k]
    # ties inside the top-k: lower id first
    order = torch.argsort(idx, dim=1)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    idx = torch.where(torch.isinf(vals) & (vals < 0), torch.zeros_like(idx), idx)
    return idx, vals


def check_ranked_scores(scores: torch.Tensor, k: int) -> None:
    """A NaN among the scores a ``rank`` returned (a decoder's beam scores) is a
    :class:`NaNScoreError`: its ranking is meaningless."""
    nan = torch.isnan(scores)
    if nan.any():
        raise NaNScoreError(f"NaN scores in the top-{k} lists of {int(nan.any(1).sum())} of "
                            f"{scores.shape[0]} users")
