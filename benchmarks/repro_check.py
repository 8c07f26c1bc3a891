"""Does a fresh run reproduce a results table? Runs a matrix from scratch and compares.

    python -m benchmarks.repro_check --preset quick --against results/quick
    python -m benchmarks.repro_check --preset quick --methods tiger,lcrec --datasets ml-100k --runs 2
    make repro-check                    # the first line

Each run is a fresh ``python -m benchmarks.cli run`` process with its own empty cache
(``GENREC_BENCH_CACHE``: datasets, text and CF embeddings, identifiers are all recomputed) and
its own output folder under ``--workdir`` (default: a temporary folder, removed afterwards
unless ``--keep``). The runs' results tables (read through :class:`benchmarks.rundir.RunDir`) are compared with the reference (``--against``:
a run folder or its ``results.csv``) and, with ``--runs 2`` or more, with each other: every
value formatted to ``--digits`` decimals (4, as the tables print them) must be equal. The
throughput rows (users/s, ms/user) are timings and are left out. Where the run is filtered
(``--methods``, ``--datasets``, ``--seeds``) only the reference's rows of the cells that ran
are compared. Rows are matched on their evaluation protocol too, unless a table was written
before protocols were recorded. Rows that differ are printed with both values, and cells whose config hash
differs from the reference's are named (their configuration changed since); the exit status is
1 if any value differs, or if a row is missing on one side.

Exact equality is only to be expected with the same library versions (``constraints/``), the
same CPU kind and the same torch thread count (``--threads`` sets ``OMP_NUM_THREADS`` for the
runs; by default the runs use torch's default, the number of cores): floating-point sums may
be split differently elsewhere, and the training trajectories of the generative methods then
drift apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.evaluation.protocols import CHOICES as PROTOCOL_CHOICES
from benchmarks.rundir import UNRECORDED_PROTOCOL, RunDir, read_results_csv

#: the columns that name a value of a results table (with ``protocol`` where both sides record it)
KEY = ["dataset", "method", "seed", "split", "subset", "metric", "k"]
#: metrics that are measured times, not results
TIMING_METRICS = ("users_per_s", "ms_per_user")


def _results(path: Path) -> pd.DataFrame:
    """The results table of a run folder (through :class:`RunDir`) or a ``results.csv`` file,
    without the timing rows."""
    path = Path(path)
    if path.is_dir():
        df = RunDir(path).results()
    elif path.is_file():
        df = read_results_csv(path)
    else:
        raise SystemExit(f"repro_check: {path}: no such run folder or results table")
    df = df[~df["metric"].isin(TIMING_METRICS)].copy()
    df["seed"] = df["seed"].astype(int)
    df["k"] = df["k"].fillna(-1).astype(int)
    return df


def compare(reference: pd.DataFrame, new: pd.DataFrame, digits: int = 4,
            restrict: bool = True) -> pd.DataFrame:
    """Rows where ``new`` and ``reference`` disagree at ``digits`` decimals, with both values
    (``reference``/``new``, NaN where one side has no such row) and ``abs_diff``. With
    ``restrict``, only the reference's rows of the (dataset, method, seed) cells present in
    ``new`` are compared (a filtered run)."""
    key = _key(reference, new)
    if restrict:
        cells = new[["dataset", "method", "seed"]].drop_duplicates()
        reference = reference.merge(cells, on=["dataset", "method", "seed"])
    both = reference[key + ["value"]].merge(new[key + ["value"]], on=key, how="outer",
                                            suffixes=("_ref", "_new"), indicator=True)
    fmt = lambda v: "" if pd.isna(v) else f"{float(v):.{digits}f}"   # noqa: E731
    same = [fmt(a) == fmt(b) for a, b in zip(both["value_ref"], both["value_new"])]
    out = both[[not s for s in same]].rename(columns={"value_ref": "reference", "value_new": "new"})
    out = out.assign(abs_diff=(out["new"] - out["reference"]).abs())
    return out.drop(columns="_merge").sort_values(key).reset_index(drop=True)


def _key(reference: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """KEY, with the evaluation protocol where both tables record it (a table written before
    protocols were recorded says ``unrecorded`` on every row; its rows are then matched without)."""
    unrecorded = any((df["protocol"].astype(str) == UNRECORDED_PROTOCOL).any() for df in (reference, new))
    return KEY if unrecorded else KEY + ["protocol"]


def run_once(index: int, workdir: Path, cli_args: list[str], threads: int | None) -> tuple[Path, float]:
    """One fresh ``benchmarks.cli run`` into ``workdir/run-<index>`` with the empty cache
    ``workdir/cache-<index>``; returns the output folder and the wall seconds."""
    out, cache = workdir / f"run-{index}", workdir / f"cache-{index}"
    cache.mkdir(parents=True)
    env = {**os.environ, "GENREC_BENCH_CACHE": str(cache), "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "benchmarks.cli", "run", *cli_args, "--output", str(out), "--quiet"]
    print(f"[run {index}] {' '.join(cmd[1:])}  (cache {cache})", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"repro_check: run {index} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    print(f"[run {index}] finished in {seconds:.0f} s", flush=True)
    return out, seconds


def _environment(threads: int | None) -> str:
    import torch
    from benchmarks.utils import package_versions

    v = package_versions()
    shown = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "transformers", "sentence-transformers",
                                               "numpy") if v.get(k))
    t = threads or torch.get_num_threads()
    return f"{shown}; {platform.machine()}, {os.cpu_count()} cores, {t} torch threads"


def changed_configs(reference: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """``dataset/method/seed`` of the cells whose config hash differs from the reference's: the
    preset, a default or the suite version changed since the reference was made, so its
    numbers are not expected to come back."""
    cols = ["dataset", "method", "seed"]
    a = reference[cols + ["config_hash"]].drop_duplicates(cols)
    b = new[cols + ["config_hash"]].drop_duplicates(cols)
    both = a.merge(b, on=cols, suffixes=("_ref", "_new"))
    bad = both[both["config_hash_ref"] != both["config_hash_new"]]
    return [f"{r.dataset}/{r.method}/seed{r.seed}" for r in bad.itertuples()]


def _print_diff(title: str, diff: pd.DataFrame, total: int, digits: int) -> None:
    if diff.empty:
        print(f"{title}: all {total} values agree to {digits} decimals")
        return
    print(f"{title}: {len(diff)} of {total} values differ at {digits} decimals")
    from tabulate import tabulate
    print(tabulate(diff.values.tolist(), headers=list(diff.columns), tablefmt="simple",
                   floatfmt=f".{digits + 2}f", showindex=False))
    worst = diff.groupby(["dataset", "method"])["abs_diff"].max().sort_values(ascending=False)
    print("largest difference per row: " + "; ".join(f"{d}/{m} {v:.4g}" for (d, m), v in worst.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.repro_check", description=__doc__.split("\n")[0])
    p.add_argument("matrix", nargs="?", help="matrix YAML file (or --preset)")
    p.add_argument("--preset", help="a built-in matrix, e.g. quick")
    p.add_argument("--datasets", help="comma-separated filter, as for `run`")
    p.add_argument("--methods", help="comma-separated filter, as for `run`")
    p.add_argument("--seeds", help="comma-separated filter, as for `run`")
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES, help="evaluation protocol, as for `run`")
    p.add_argument("--against", help="reference run folder or results.csv (e.g. results/quick)")
    p.add_argument("--runs", type=int, default=1, help="fresh runs (2+: also compared with each other)")
    p.add_argument("--digits", type=int, default=4)
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (default: torch's default)")
    p.add_argument("--jobs", type=int, help="worker processes, as for `run` (the reference must have been run "
                                            "with the same number: a worker uses one torch thread)")
    p.add_argument("--workdir", help="where the runs and their caches go (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    if (args.matrix is None) == (args.preset is None):
        p.error("give a matrix file or --preset NAME")
    if not args.against and args.runs < 2:
        p.error("nothing to compare: give --against REFERENCE or --runs 2")
    cli_args = [args.matrix] if args.matrix else ["--preset", args.preset]
    for flag in ("datasets", "methods", "seeds", "protocol", "jobs"):
        if getattr(args, flag):
            cli_args += [f"--{flag}", str(getattr(args, flag))]
    reference = _results(Path(args.against)) if args.against else None
    if reference is not None and (reference["protocol"] == UNRECORDED_PROTOCOL).all():
        print(f"note: {args.against} records no evaluation protocol (written before protocols were); "
              f"its rows are matched without it")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="genrec-repro-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"environment: {_environment(args.threads)}")
    failed = False
    try:
        runs = [_results(run_once(i, workdir, cli_args, args.threads)[0]) for i in range(1, args.runs + 1)]
        first: pd.DataFrame | None = None
        for i, df in enumerate(runs, start=1):
            if reference is not None:
                diff = compare(reference, df, args.digits)
                if first is not None and not diff.empty and diff.equals(first):
                    print(f"run {i} vs {args.against}: the same {len(diff)} differences as run 1")
                else:
                    _print_diff(f"run {i} vs {args.against}", diff, len(df), args.digits)
                first = diff if first is None else first
                failed |= not diff.empty
                stale = changed_configs(reference, df) if i == 1 else []
                if stale:
                    print(f"note: {len(stale)} cells have another config hash than in {args.against} "
                          f"(the preset, a default or the suite version changed since): {', '.join(stale)}")
            if i > 1:
                diff = compare(runs[0], df, args.digits, restrict=False)
                _print_diff(f"run {i} vs run 1", diff, len(df), args.digits)
                failed |= not diff.empty
    finally:
        if args.keep or args.workdir:
            print(f"runs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
