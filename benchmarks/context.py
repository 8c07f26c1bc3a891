"""The one place a run's :class:`~benchmarks.protocol.Context` is built.

The runner (per cell), ``genrec-bench tokenize`` and both benchmark scripts call
:func:`build_context`, so every method and every feature gets the same run-wide settings: the
cache root, the device, the numeric precision, the seed and the validation callback that early-stops every training,
including the ones a method starts inside itself (the CF SASRec of the FeatureStore, which LETTER
and SETRec read).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.cache import cache_dir
from benchmarks.evaluation import Evaluator
from benchmarks.features import FeatureStore
from benchmarks.precision import resolve_precision, set_matmul_precision
from benchmarks.protocol import Context

if TYPE_CHECKING:
    from benchmarks.data.dataset import Dataset

#: what a context's FeatureStore may be asked for (``Recommender.needs``, ``IdentifierScheme.needs``)
ALL_FEATURES = frozenset({"text", "cf"})


def build_context(dataset: "Dataset", *, seed: int = 0, device: str = "cpu", evaluator: Evaluator | None = None,
                  needs: frozenset[str] = ALL_FEATURES, features: dict | None = None,
                  cache: Path | None = None, progress: bool = True, precision: str | None = "auto",
                  max_steps: int | None = None, meta: bool = False) -> Context:
    """The context of a method (or an identifier build) on ``dataset``.

    ``evaluator``: whose ``validation_ndcg`` early-stops the trainings (default: an Evaluator of
    the dataset with the default settings; the runner passes the cell's). ``needs``: the
    features the consumer reads; with none, the context has no FeatureStore. ``features``: the
    FeatureStore settings (``text_template``, ``text_encoder``). ``cache``: the cache root
    (default :func:`benchmarks.cache.cache_dir`). ``precision``: auto | fp32 | bf16 | fp16, resolved
    for ``device`` (:func:`benchmarks.precision.resolve_precision`: auto is bf16 on a CUDA device
    with bf16, else fp32; an unknown value is a ConfigError naming the key); on CUDA it also sets
    the process's float32 matmul precision (TF32 unless fp32). The FeatureStore's own trainings
    (the CF SASRec, whose embeddings are cached under a key without the precision) stay fp32.
    ``max_steps``: a dry run's cap on the method's optimiser steps (features and identifiers are
    built as configured). ``meta``: modules built on the meta device (an estimate, see
    :class:`benchmarks.protocol.Context`)."""
    from baselines.sasrec import train_cf_embeddings

    precision = resolve_precision(precision, device)
    set_matmul_precision(precision, device)
    cache = cache_dir() if cache is None else Path(cache)
    validator = (evaluator or Evaluator(dataset)).validation_ndcg
    store = None
    if needs:
        store = FeatureStore(dataset, cache, device=device, seed=seed, progress=progress, validator=validator,
                             cf_trainer=train_cf_embeddings, **(features or {}))
    return Context(dataset=dataset, features=store, device=device, seed=seed, precision=precision, cache=cache,
                   progress=progress, validator=validator, max_steps=max_steps, meta=meta,
                   protocol=evaluator.protocol.label if evaluator is not None else "")
