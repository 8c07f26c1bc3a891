"""Where the suite caches what it computes once: downloads, preprocessed datasets, item
features (text and CF embeddings) and identifier-scheme outputs, each keyed by a hash of its
inputs, under one root folder."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_dir() -> Path:
    """$GENREC_BENCH_CACHE, else $XDG_CACHE_HOME/genrec-bench, else ~/.cache/genrec-bench."""
    if os.environ.get("GENREC_BENCH_CACHE"):
        return Path(os.environ["GENREC_BENCH_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "genrec-bench"
    return Path.home() / ".cache" / "genrec-bench"


def lock_path(target: Path) -> Path:
    """The lock file of ``target``'s build (:func:`build_lock`): in the system's temporary
    folder, named by the hash of the target's absolute path."""
    name = hashlib.sha256(str(Path(target).resolve()).encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / "genrec-bench-locks" / f"{name}.lock"


@contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s build while
    this process checks for and builds the entry: a second process building the same entry
    (the cells of a ``--jobs N`` run, two runs sharing a cache) waits here, then finds the
    entry built and reads it instead of computing it again. POSIX ``flock``: released when
    the process exits, whatever happens to it; where the platform has none (Windows) the
    lock is a no-op and concurrent builds stay correct (every write is atomic), only
    duplicated. The lock files live in the system's temporary folder (one per entry, named by
    the hash of its absolute path), never in the cache itself: a lock covers the processes of
    one machine, and a failed build leaves nothing beside the entry."""
    try:
        import fcntl
    except ImportError:          # pragma: no cover (no flock on this platform)
        yield
        return
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
