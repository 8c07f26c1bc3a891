"""One table across runs: ``genrec-bench gather`` and ``genrec-bench compare``.

``gather`` joins the results of any number of run folders into one tidy table (the results
columns plus ``run``, ``matrix`` and ``commit``, read through :mod:`benchmarks.rundir`) and
writes it as Parquet; ``compare`` reads run folders and / or gathered Parquet files and prints
one metric as a method x dataset table, a row per (run, protocol, method), so that two
protocols never share a row. The tables are pandas frames (pandas and pyarrow are base
dependencies; a few thousand rows per run need no query engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from benchmarks.errors import ConfigError
from benchmarks.protocol import FAMILIES
from benchmarks.rundir import RESULT_TYPES, RunDir, read_results_parquet, write_results_parquet

#: the columns of a gathered table and their types: the results columns, then where each row
#: comes from
GATHERED_TYPES = {**RESULT_TYPES, "run": "string", "matrix": "string", "commit": "string"}


def gather(dirs: Iterable[Path | str]) -> pd.DataFrame:
    """The results of every run folder in ``dirs``, one table (GATHERED_TYPES' columns)."""
    frames = []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise ConfigError(f"{path}: not a run folder (expected a directory with results.csv)")
        frames.append(RunDir(path).records())
    if not frames:
        raise ConfigError("gather: no run folders given")
    return pd.concat(frames, ignore_index=True)[list(GATHERED_TYPES)].drop_duplicates(ignore_index=True)


def write_gathered(df: pd.DataFrame, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_results_parquet(df, path, GATHERED_TYPES)
    return path


def load(sources: Iterable[Path | str]) -> pd.DataFrame:
    """Run folders and gathered Parquet files (``gather --output``), as one gathered table; a
    run read twice (its folder and a gathered file holding it) counts once."""
    frames = []
    for s in sources:
        path = Path(s)
        if path.is_dir():
            frames.append(gather([path]))
        elif path.is_file():
            frames.append(read_results_parquet(path, GATHERED_TYPES))
        else:
            raise ConfigError(f"{path}: no such run folder or gathered .parquet file")
    if not frames:
        raise ConfigError("compare: no run folders or gathered files given")
    return pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)


def _run_labels(df: pd.DataFrame) -> dict[str, str]:
    """run folder -> its row label: the matrix name, with the folder where two runs share one."""
    runs = list(dict.fromkeys(df["run"]))
    matrix = {r: df.loc[df["run"] == r, "matrix"].iloc[0] for r in runs}
    shared = {m for m in matrix.values() if list(matrix.values()).count(m) > 1}
    return {r: f"{matrix[r]} ({r})" if matrix[r] in shared else matrix[r] for r in runs}


def compare_frame(df: pd.DataFrame, metric: str = "ndcg", k: int = 10, split: str = "test",
                  subset: str = "all") -> pd.DataFrame:
    """Mean, std and number of seeds of one metric per (run, protocol, family, method, dataset),
    the rows ordered by run (as given), family, method."""
    sel = df[(df["metric"] == metric) & (df["k"] == k) & (df["split"] == split) & (df["subset"] == subset)]
    if sel.empty:
        have = sorted({f"{m}@{kk}" for m, kk in df[["metric", "k"]].drop_duplicates().itertuples(index=False)})
        raise ConfigError(f"compare: no rows with metric={metric}, k={k}, split={split}, subset={subset} "
                          f"(the tables hold {', '.join(have) or 'no rows'})")
    labels = _run_labels(df)
    sel = sel.assign(run=sel["run"].map(labels))
    g = sel.groupby(["run", "protocol", "family", "method", "dataset"], sort=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "seeds": g.size()}).reset_index()
    run_rank = {label: i for i, label in enumerate(dict.fromkeys(labels.values()))}
    fam_rank = {f: i for i, f in enumerate(FAMILIES)}
    out = out.assign(_r=out["run"].map(run_rank), _f=out["family"].map(lambda f: fam_rank.get(f, len(FAMILIES))))
    return out.sort_values(["_r", "_f", "family", "method", "protocol"], kind="stable").drop(columns=["_r", "_f"])


def compare_table(df: pd.DataFrame, digits: int = 4, **selection) -> pd.DataFrame:
    """The method x dataset table of :func:`compare_frame` as text: ``mean`` (``mean ± std`` over
    seeds where there are several), empty where a run has no such cell."""
    frame = compare_frame(df, **selection)

    def fmt(r) -> str:
        return f"{r['mean']:.{digits}f}" + (f" ± {r['std']:.{digits}f}" if r["seeds"] > 1 else "")

    frame = frame.assign(text=frame.apply(fmt, axis=1))
    datasets = list(dict.fromkeys(frame["dataset"]))
    keys = ["run", "protocol", "method"]
    table = frame.pivot_table(index=keys, columns="dataset", values="text", aggfunc="first", sort=False)
    order = list(dict.fromkeys(map(tuple, frame[keys].values.tolist())))
    return table.reindex(index=pd.MultiIndex.from_tuples(order, names=keys), columns=datasets).fillna("").reset_index()


def run_summary(df: pd.DataFrame) -> list[str]:
    """One line per run: its label, folder and the commits its cells record."""
    labels = _run_labels(df)
    lines = []
    for run, label in labels.items():
        commits = sorted(set(df.loc[df["run"] == run, "commit"]))
        lines.append(f"{label}: {run} (commit {', '.join(commits)})")
    return lines
