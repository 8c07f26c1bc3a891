"""The run directory: its layout, its files and the results columns, in one place.

The runner writes through :class:`RunDir` and :class:`CellDir`, the report reads through
them, and nothing else knows a file name of a run::

    DIR/
      matrix.yaml               the matrix as run (its method labels order the report's rows)
      results.csv               every finished cell's metrics.csv, one tidy table (RESULT_COLUMNS)
      results.parquet           the same table as Parquet, typed by RESULT_TYPES (for `gather`)
      failures.json             this run's failed cells (absent when none failed)
      tensorboard/<dataset>/<method>/seed<S>-<hash>/   `run --track tensorboard`'s event files, one
                                folder per cell (benchmarks.tracking), unless --track-uri says elsewhere
      report.md, table.*, figures/   the report's own output (benchmarks.report), from the above
      report.html               report.md as one self-contained page (benchmarks.report_html):
                                the same tables and marks, figures/*.png embedded, sortable
      checkpoints/<key>.pt      an unfinished training's state (benchmarks.training: resumed by
                                the next run of the same cells, removed once they are written);
                                <key>: the runner's training key (one per training)
      cells/<dataset>/<method>/seed<S>-<hash>/      one CellDir (<hash>: of the resolved config)
        config.json             the resolved config the hash is taken over
        train_log.json          the fit log: per-epoch loss, validation NDCG@10, seconds, memory;
                                ``notes``: a free-text sentence of what the method ran (printed
                                by the report); ``decoding``: how ``rank`` decodes, where a
                                method says (RPG's ``graph``); ``stopped``, ``best_epoch``
        throughput.json         users/s, ms/user of producing the top-K on the test split
        per_user.npz            per-user arrays, keyed (split, subset, name): the users of a
                                row and their metric values (``ndcg@10`` ...)
        run.json                provenance: git commit, package versions, device, wall time,
                                protocol, cold-item scoring, dataset statistics
        artefacts/identifiers/  a generative method's item identifiers and their stats.csv
        metrics.csv             written LAST: its presence marks the cell complete

A cell is built in a staging folder beside its final place (``<name>.tmp-<stamp>``) and renamed
into place when complete (:meth:`RunDir.building`), so a folder under ``cells/`` without that
suffix is a finished cell and a run killed at any moment leaves only staging folders, which
the next run removes.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from benchmarks.errors import ConfigError
from benchmarks.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from identifiers.base import ItemIdentifiers

#: the columns of metrics.csv and results.csv, in order
RESULT_COLUMNS = ["dataset", "method", "family", "seed", "protocol", "split", "subset", "metric", "k",
                  "value", "n_users", "config_hash"]
#: the columns that are text, never numbers
RESULT_TEXT_COLUMNS = ("dataset", "method", "family", "protocol", "split", "subset", "metric", "config_hash")
#: every column's type, in results.csv (as read by read_results_csv) and in results.parquet
RESULT_TYPES = {c: ("string" if c in RESULT_TEXT_COLUMNS else "float64" if c == "value" else "int64")
                for c in RESULT_COLUMNS}
#: what a results table from before protocols were recorded says in its ``protocol`` column
UNRECORDED_PROTOCOL = "unrecorded"
#: what a gathered table says where a run folder lacks the record of a value (its matrix name,
#: a cell's commit)
UNRECORDED = UNRECORDED_PROTOCOL

_STAGING = ".tmp-"
#: the report's files in the run folder, in the order they are written (``RunDir.report_paths``)
REPORT_FILES = ("table.md", "table.tex", "table.csv", "report.md", "report.html")


def read_results_csv(path: Path) -> pd.DataFrame:
    """A tidy results table with its text columns read as text: left to inference, a config
    hash such as ``812108563e58`` becomes the float 8.12e+58 (and a hash of digits an int), so
    the cell it names can no longer be found."""
    df = pd.read_csv(path, dtype={c: str for c in RESULT_TEXT_COLUMNS})
    if "protocol" not in df.columns:   # written before the protocol was recorded per row
        df.insert(min(4, len(df.columns)), "protocol", UNRECORDED_PROTOCOL)
    df["protocol"] = df["protocol"].fillna(UNRECORDED_PROTOCOL)
    return df


def parquet_schema(types: dict[str, str]):
    """The Arrow schema of a results table whose columns have ``types`` (RESULT_TYPES, plus the
    columns a gathered table adds)."""
    import pyarrow as pa

    arrow = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    return pa.schema([(c, arrow[t]) for c, t in types.items()])


def write_results_parquet(df: pd.DataFrame, path: Path, types: dict[str, str] = RESULT_TYPES) -> None:
    """``df`` as a Parquet file with exactly the columns and types of ``types``: a column that
    is missing or holds a value of another type is one error naming the file and the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    missing = [c for c in types if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: the results table lacks the column(s) {missing} (expected {list(types)})")
    schema = parquet_schema(types)
    columns = []
    for field in schema:
        try:
            columns.append(pa.array(df[field.name].tolist(), type=field.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: column {field.name!r} is not all {types[field.name]} ({exc})") from None
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_arrays(columns, schema=schema), buf)
    atomic_write_bytes(Path(path), buf.getvalue().to_pybytes())


def read_results_parquet(path: Path, types: dict[str, str] = RESULT_TYPES) -> pd.DataFrame:
    """A Parquet results table, checked against ``types`` (one error naming the file and the
    column that is missing or of another type)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from None
    expected = parquet_schema(types)
    for field in expected:
        if field.name not in table.schema.names:
            raise ConfigError(f"{path}: no column {field.name!r} (expected the columns {list(types)})")
        got = table.schema.field(field.name).type
        if not (got == field.type or (field.type == pa.string() and got == pa.large_string())):
            raise ConfigError(f"{path}: column {field.name!r} is {got}, expected {types[field.name]}")
    return table.select(list(types)).to_pandas()


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """Result rows (dicts with the RESULT_COLUMNS keys) as a table in the column order."""
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


class CellDir:
    """One cell's folder (see the module docstring): writers for the runner, readers for the
    report. Readers return None for a file the cell does not have."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CellDir({str(self.path)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, CellDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @staticmethod
    def relpath(dataset: str, method: str, seed: int, config_hash: str) -> Path:
        """Where a cell lives inside its run directory."""
        return Path("cells") / dataset / method / f"seed{seed}-{config_hash}"

    @property
    def complete(self) -> bool:
        return (self.path / "metrics.csv").is_file()

    @property
    def artefacts(self) -> Path:
        """A folder for what a method keeps of itself (``Recommender.write_artefacts``)."""
        return self.path / "artefacts"

    # ------------------------------------------------------------------ writing
    def write_config(self, resolved: dict) -> None:
        atomic_write_json(self.path / "config.json", resolved)

    def write_train_log(self, log: dict) -> None:
        atomic_write_json(self.path / "train_log.json", log)

    def write_throughput(self, throughput: dict) -> None:
        atomic_write_json(self.path / "throughput.json", throughput)

    def write_per_user(self, arrays: dict[tuple[str, str, str], np.ndarray]) -> None:
        """``{(split, subset, name): array}``, e.g. ``("test", "all", "users")``,
        ``("test", "all", "ndcg@10")``."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **{"/".join(key): value for key, value in arrays.items()})
        atomic_write_bytes(self.path / "per_user.npz", buf.getvalue())

    def write_run(self, record: dict) -> None:
        atomic_write_json(self.path / "run.json", record)

    def write_identifiers(self, ids: "ItemIdentifiers", item_ids: list[str], stats: pd.DataFrame) -> None:
        """A generative method's identifiers and their code-usage table (report: code usage)."""
        folder = self.artefacts / "identifiers"
        ids.save(folder, item_ids)
        atomic_write_text(folder / "stats.csv", stats.to_csv(index=False))

    def write_metrics(self, rows: list[dict]) -> None:
        """The cell's result rows; written LAST (its presence marks the cell complete)."""
        atomic_write_text(self.path / "metrics.csv", results_frame(rows).to_csv(index=False))

    # ------------------------------------------------------------------ reading
    def config(self) -> dict | None:
        return _read_json(self.path / "config.json")

    def train_log(self) -> dict | None:
        return _read_json(self.path / "train_log.json")

    def throughput(self) -> dict | None:
        return _read_json(self.path / "throughput.json")

    def run_info(self) -> dict | None:
        return _read_json(self.path / "run.json")

    def metrics(self) -> pd.DataFrame:
        return read_results_csv(self.path / "metrics.csv")

    def notes(self) -> str | None:
        """The fit log's ``notes``: what the method says it ran (a sentence), or None."""
        notes = (self.train_log() or {}).get("notes")
        return notes if isinstance(notes, str) and notes else None

    def decoding(self) -> str | None:
        """The fit log's ``decoding``: how the method's ``rank`` decodes where it says (RPG's
        ``graph``), or None (a method that does not say)."""
        name = (self.train_log() or {}).get("decoding")
        return name if isinstance(name, str) and name else None

    def per_user(self, split: str, subset: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(users, values of ``name``) of one (split, subset) row, or None where not recorded."""
        f = self.path / "per_user.npz"
        if not f.is_file():
            return None
        key, users = f"{split}/{subset}/{name}", f"{split}/{subset}/users"
        with np.load(f, allow_pickle=False) as z:
            if key not in z.files or users not in z.files:
                return None
            return z[users], z[key]

    def identifiers(self, item_ids: list[str] | None = None) -> "ItemIdentifiers | None":
        """The saved identifiers, or None; ``item_ids``: the raw ids in the dataset's item
        order (default: the saved index's order)."""
        from identifiers.base import ItemIdentifiers

        folder = self.artefacts / "identifiers"
        return ItemIdentifiers.load(folder, item_ids) if ItemIdentifiers.saved_in(folder) else None

    def identifier_stats(self) -> pd.DataFrame | None:
        f = self.artefacts / "identifiers" / "stats.csv"
        return pd.read_csv(f) if f.is_file() else None


def _label(method: dict) -> str:
    """A matrix.yaml method entry's label (its name where it has none)."""
    return method.get("label", method.get("name"))


class RunDir:
    """A run directory (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def tensorboard(self) -> Path:
        """The default folder of ``run --track tensorboard``'s event files (one per cell)."""
        return self.root / "tensorboard"

    def training_checkpoint(self, key: str) -> Path:
        """The checkpoint file of the training ``key`` (the runner's training key); where
        :func:`benchmarks.training.train_loop` keeps and resumes that training's state."""
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"a training key is a plain file name, got {key!r}")
        return self.root / "checkpoints" / f"{key}.pt"

    def cell(self, dataset: str, method: str, seed: int, config_hash: str) -> CellDir:
        return CellDir(self.root / CellDir.relpath(dataset, method, seed, config_hash))

    def complete(self, relpath: Path) -> bool:
        """Whether the cell at ``relpath`` (:meth:`CellDir.relpath`) has finished."""
        return CellDir(self.root / relpath).complete

    def finished(self) -> list[CellDir]:
        """The complete cells, in path order."""
        return [CellDir(p.parent) for p in sorted((self.root / "cells").glob("*/*/*/metrics.csv"))
                if _STAGING not in p.parent.name]

    def cells_of(self, df: pd.DataFrame) -> dict[tuple[str, str, int], CellDir]:
        """(dataset, method, seed) -> the cell folder of those result rows (via their hash)."""
        out = {}
        rows = df[["dataset", "method", "seed", "config_hash"]].drop_duplicates()
        for d, m, seed, h in rows.itertuples(index=False):
            cell = self.cell(d, m, int(seed), h)
            if cell.path.is_dir():
                out[(d, m, int(seed))] = cell
        return out

    # ------------------------------------------------------------------ building cells
    @contextlib.contextmanager
    def building(self, relpath: Path, *, scratch: bool = False) -> Iterator[CellDir]:
        """A fresh staging CellDir for the cell at ``relpath``. When the block ends without an
        error the staging folder replaces the cell's folder, provided its metrics were written;
        on an error it is removed. ``scratch``: a private temporary folder that is always
        removed (a data-parallel helper process trains but does not write the cell)."""
        final = self.root / relpath
        if scratch:
            tmp = Path(tempfile.mkdtemp(prefix="genrec-cell-"))
        else:
            tmp = final.with_name(final.name + f"{_STAGING}{int(time.time() * 1e6)}")
            tmp.mkdir(parents=True)
        staging = CellDir(tmp)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if scratch or not staging.complete:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)

    def clean_stale(self) -> None:
        """Remove the staging folders a killed run left behind."""
        for tmp in (self.root / "cells").glob(f"*/*/*{_STAGING}*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def adopt_cells(self, sources: list["RunDir"]) -> list[Path]:
        """Copy every finished cell of ``sources`` into this run directory (same relative
        paths), so that one report covers cells computed by several runs. A cell already here
        with the same path (same dataset, label, seed and config hash) is kept, not copied
        again; two sources holding the same path with different metrics are an error. The
        methods of the sources' ``matrix.yaml`` are merged, in order, into this one's (their
        labels order the report's rows). Returns the paths copied."""
        copied, seen = [], {}
        for src in sources:
            src_cells = src.finished()
            if not src_cells:
                raise ConfigError(f"{src.root}: no finished cells (cells/*/*/*/metrics.csv) to gather")
            for cell in src_cells:
                rel = cell.path.relative_to(src.root)
                dest = self.root / rel
                body = (cell.path / "metrics.csv").read_bytes()
                if rel in seen and seen[rel][1] != body:
                    raise ConfigError(f"{cell.path}: the same cell as {seen[rel][0]} with different metrics "
                                      f"(same config hash); gather one of them")
                seen[rel] = (cell.path, body)
                if dest.is_dir():
                    continue
                tmp = dest.with_name(dest.name + f"{_STAGING}{int(time.time() * 1e6)}")
                shutil.copytree(cell.path, tmp)
                tmp.rename(dest)
                copied.append(dest)
        methods, labels = [], set()
        for run in [self, *sources]:
            for m in run._matrix_methods():
                if _label(m) not in labels:
                    methods.append(m)
                    labels.add(_label(m))
        # a run resumed with --methods rewrites its matrix.yaml with the selection only: the
        # labels of cells no matrix lists are added from the cells' own configs
        for cell in self.finished():
            cfg = cell.config() or {}
            if cfg.get("label") not in labels and cfg.get("label") is not None:
                methods.append({"name": cfg.get("method", cfg["label"]), "label": cfg["label"]})
                labels.add(cfg["label"])
        name = self.root.name
        self.write_matrix({"name": name, "gathered_from": [str(s.root) for s in sources], "methods": methods})
        return copied

    # ------------------------------------------------------------------ run-level files
    def collect_results(self) -> pd.DataFrame:
        """All finished cells' metrics in one tidy table, also written to ``results.csv`` and
        ``results.parquet``."""
        frames = [c.metrics() for c in self.finished()]
        df = pd.concat(frames, ignore_index=True) if frames else results_frame([])
        atomic_write_text(self.root / "results.csv", df.to_csv(index=False))
        write_results_parquet(df, self.root / "results.parquet")
        return df

    def results(self) -> pd.DataFrame:
        path = self.root / "results.csv"
        if not path.is_file():
            raise ConfigError(f"{path}: no results.csv (run `genrec-bench run ... --output {self.root}` first)")
        return read_results_csv(path)

    def results_table(self) -> pd.DataFrame:
        """The run's results, from ``results.parquet`` where the run wrote one, else from
        ``results.csv`` (a run from before Parquet was written)."""
        parquet = self.root / "results.parquet"
        if parquet.is_file():
            df = read_results_parquet(parquet)
            df["protocol"] = df["protocol"].fillna(UNRECORDED_PROTOCOL)
            return df
        return self.results()

    def records(self) -> pd.DataFrame:
        """The results with what the run recorded about them: ``run`` (this folder), ``matrix``
        (the name in matrix.yaml) and ``commit`` (the git commit in each row's cell run.json);
        ``unrecorded`` where the run folder lacks that file (a committed report ships without
        its cells)."""
        df = self.results_table()
        commits = {key: (cell.run_info() or {}).get("git_commit") for key, cell in self.cells_of(df).items()}
        keys = zip(df["dataset"], df["method"], df["seed"].astype(int))
        df["run"] = str(self.root)
        df["matrix"] = self.matrix_name() or UNRECORDED
        df["commit"] = [commits.get(key) or UNRECORDED for key in keys]
        return df

    def _matrix_record(self) -> dict:
        path = self.root / "matrix.yaml"
        if not path.is_file():
            return {}
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        return data if isinstance(data, dict) else {}

    def matrix_name(self) -> str | None:
        """The ``name`` of the run's matrix.yaml (None where there is none)."""
        name = self._matrix_record().get("name")
        return str(name) if name is not None else None

    def write_matrix(self, record: dict, *, keep_methods: bool = False) -> None:
        """Write ``matrix.yaml``. ``keep_methods``: the methods an existing ``matrix.yaml`` lists
        and ``record`` does not are kept (in their place, before the new ones), so that a run
        resumed with a ``--methods`` selection still lists the methods of every cell the folder
        holds (their labels order the report's rows); an entry with a label of ``record``
        takes that entry's place."""
        import yaml

        if keep_methods:
            new = {_label(m): m for m in record.get("methods", [])}
            merged = [new.pop(_label(m), m) for m in self._matrix_methods()]
            record = {**record, "methods": merged + list(new.values())}
        atomic_write_text(self.root / "matrix.yaml", yaml.safe_dump(record, sort_keys=False))

    def method_order(self) -> list[str]:
        """Method labels in the order of the run's matrix.yaml (empty if there is none)."""
        return [_label(m) for m in self._matrix_methods()]

    def _matrix_methods(self) -> list[dict]:
        """The method entries of the run's matrix.yaml (empty if there is none)."""
        return [m for m in self._matrix_record().get("methods") or [] if isinstance(m, dict)]

    def report_paths(self) -> dict[str, Path]:
        """The report's files (REPORT_FILES), name -> path."""
        return {name: self.root / name for name in REPORT_FILES}

    def report_figure(self, src: str) -> bytes:
        """The bytes of a figure the report links, ``src`` as written in report.md
        (``figures/<name>.png``, relative to the run folder)."""
        path = self.root / src
        if Path(src).is_absolute() or Path(src).parts[:1] != ("figures",) or ".." in Path(src).parts:
            raise ConfigError(f"{self.root}: report figure {src!r}: expected a path under figures/")
        if not path.is_file():
            raise ConfigError(f"{path}: the figure report.md links is missing")
        return path.read_bytes()

    def write_failures(self, failed: list[dict]) -> None:
        """``failures.json``: this run's failed cells; removed when none failed (a list left
        from an earlier run would report cells that have run since)."""
        path = self.root / "failures.json"
        if failed:
            atomic_write_json(path, failed)
        elif path.exists():
            path.unlink()

    def failures(self) -> list[dict]:
        return _read_json(self.root / "failures.json") or []
