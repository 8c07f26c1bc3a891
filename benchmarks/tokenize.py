"""``genrec-bench tokenize``: build one scheme's identifiers for a dataset, with its analyses.

Writes into the output folder:
- ``index.json`` (raw item id -> tokens, LETTER's format), ``meta.json``, ``arrays.npz``;
- ``stats.csv``: tidy rows ``scheme, level, metric, value`` (code usage per level, collisions,
  the scheme's own stats; ``cf_overlap`` (LETTER Table 4) where CF embeddings are available;
  ``table3.R@10`` ... (LETTER Table 3) with ``--table3``);
- ``code_frequency.png`` / ``.pdf`` (LETTER Fig. 6, level 0) for level-structured schemes;
- ``code_curve.json`` / ``code_curve.png`` (trained tokenizers): the share of items whose codes
  changed between checkpoints of training, and the loss, against the epoch;
- ``config.json``: the scheme config, seed, dataset, suite version (and, for a snapshot, the
  checkpoint's epoch).

``snapshot=True`` (``genrec-bench tokenize --snapshot``) analyses an unfinished tokenizer run
as its checkpoint stands (a 20,000-epoch run in progress, or stopped), without training and
without caching anything: the same files, in a folder named after the checkpoint's epoch, so
that the analyses can be compared across a long run's epochs.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd

import benchmarks
from benchmarks.analysis import code_frequency_groups, code_usage, cf_neighbour_overlap, quantized_sasrec
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.catalog import load_dataset
from benchmarks.registry import IDENTIFIERS
from benchmarks.utils import (atomic_write_json, atomic_write_text, seed_everything, show_progress,
                              stable_hash)
from identifiers.base import load_or_build, snapshot_identifiers

log = logging.getLogger(__name__)


def tokenize(dataset: str | dict, scheme: str, *, overrides: dict | None = None, seed: int = 0,
             output: Path | None = None, cf_overlap: str = "auto", table3: bool = False,
             device: str = "cpu", progress: bool = True, snapshot: bool = False) -> Path:
    """Build, analyse and write one scheme's identifiers; return the output folder.
    ``snapshot``: the identifiers of the run's training checkpoint instead (see the module doc).

    ``cf_overlap``: "auto" computes LETTER Table 4 when CF embeddings are cheap (published with
    the dataset, or already needed by the scheme); "yes" trains a SASRec for them if needed;
    "no" skips it.
    """
    progress = show_progress(progress)   # no bars in a log file (identifier training included)
    ds = load_dataset(dataset)
    cls = IDENTIFIERS.get(scheme)
    cfg = build_config(cls.Config, overrides)
    seed_everything(seed)
    ctx = build_context(ds, seed=seed, device=device, progress=progress)
    store = ctx.features
    if snapshot:
        ids = snapshot_identifiers(scheme, cfg, ds, store, seed, ctx.cache, progress=progress)
    else:
        ids = load_or_build(scheme, cfg, ds, store, seed, ctx.cache, progress=progress)
    run = f"{scheme}-{stable_hash([dataclasses.asdict(cfg), seed])}"
    out = Path(output or Path("runs") / "tokenize" / ds.name / (f"{run}-epoch{ids.stats['epochs']}" if snapshot else run))
    out.mkdir(parents=True, exist_ok=True)
    ids.save(out, ds.item_ids)
    stats = code_usage(ids)
    extra = []
    has_cf = "cf" in cls.needs or ds.info.get("cf_embeddings_file")
    if ids.kind == "codes" and (cf_overlap == "yes" or (cf_overlap == "auto" and has_cf)):
        overlap = cf_neighbour_overlap(ids, store.cf_embeddings(32))
        extra.append({"scheme": scheme, "level": "all", "metric": "cf_overlap", "value": overlap})
    if table3:
        if "quantized" not in ids.arrays:
            raise ValueError(f"--table3 needs quantised embeddings; scheme {scheme!r} has none")
        for metric, value in quantized_sasrec(ds, ids.arrays["quantized"], seed=seed, device=device,
                                              progress=progress).items():
            extra.append({"scheme": scheme, "level": "all", "metric": f"table3.{metric}", "value": value})
    if extra:
        stats = pd.concat([stats, pd.DataFrame(extra)], ignore_index=True)
    atomic_write_text(out / "stats.csv", stats.to_csv(index=False))
    if ids.kind == "codes" and ids.levels:
        from benchmarks.figures import code_frequency_lines
        code_frequency_lines({scheme: code_frequency_groups(ids, 0)}, out / "code_frequency", {scheme: cls.family},
                             title=f"{ds.name}: first-level code assignment (LETTER Fig. 6)")
    if ids.stats.get("code_curve"):
        from benchmarks.figures import code_change_curve
        atomic_write_json(out / "code_curve.json", ids.stats["code_curve"])
        code_change_curve({scheme: ids.stats["code_curve"]}, out / "code_curve",
                          title=f"{ds.name}: {scheme} tokenizer, when the codes stop changing")
    snap = ({"snapshot": {"epoch": ids.stats["epochs"], "of_epochs": ids.stats["of_epochs"],
                          "since_last_point": ids.stats["since_last_point"]}} if snapshot else {})
    atomic_write_json(out / "config.json", {"scheme": scheme, "config": dataclasses.asdict(cfg),
                                           "seed": seed, "dataset": ds.name, "dataset_info": ds.info,
                                           "suite_version": benchmarks.__version__, **snap})
    return out
