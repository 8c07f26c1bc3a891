"""Where the suite caches what it computes once: downloads, preprocessed datasets, item
features (text and CF embeddings) and identifier-scheme outputs, each keyed by a hash of its
inputs, under one root folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$GENREC_BENCH_CACHE, else $XDG_CACHE_HOME/genrec-bench, else ~/.cache/genrec-bench."""
    if os.environ.get("GENREC_BENCH_CACHE"):
        return Path(os.environ["GENREC_BENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "genrec-bench"
    return Path.home() / ".cache" / "genrec-bench"
