"""A run's figures beside their references: a paper's table and a reference implementation.

    genrec-bench check RUN [RUN ...] [--references letter-table1 | FILE.yaml ...] [--parity DIR ...]
                       [--output DIR]

A figure a reviewer can trust names its reference. For every row of the runs' test tables (all
users; one row per dataset, method label and evaluation protocol, mean over seeds) this writes:

- each published figure it is compared with: reference files (``benchmarks/references/*.yaml``,
  or any file of that shape; :func:`load_references`) map a paper's rows to the suite's method
  labels (a file that states its protocol is compared with our rows of that protocol only); the gap is ours / published - 1 on every metric the file checks, "within" when every
  |gap| <= the file's tolerance (LETTER Table 1: ±10 % on R@10 and N@10);
- the reference implementation on the same split: the parity harness's tables
  (``python -m benchmarks.parity.recbole``, its ``parity.csv``) give RecBole's figures per
  dataset, protocol and model; the row is compared with RecBole's figure under the SAME
  protocol (gap = ours / RecBole - 1), "within ±5 % or better" when every gap >= -5 %; a row
  more than +25 % above RecBole's on a checked metric meets the bar but is marked "far above"
  (two implementations that far apart are different models: the reason belongs next to it);
- a verdict: which reference the row meets, or that it meets none / has none.

Output: ``check.md`` and ``check.csv`` in ``--output`` (default: the first run folder), and the
table on standard output. Nothing here reruns or changes a figure: it reads the runs'
``results.csv`` (a committed report folder without its cells will do) and the parity tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.errors import ConfigError
from benchmarks.rundir import RunDir, read_results_csv
from benchmarks.utils import atomic_write_text

#: the reference files shipped with the suite (``--references NAME`` reads NAME.yaml here)
REFERENCES = Path(__file__).resolve().parent / "references"
METRIC = re.compile(r"^(recall|ndcg)@(\d+)$")
REFERENCE_KEYS = {"name", "source", "tolerance", "check", "rows", "protocol"}
ROW_KEYS = {"dataset", "method", "ours"}
#: the parity harness's bar: ours within 5 % of RecBole's figure, or better
PARITY_TOLERANCE = 0.05
#: above this gap over RecBole's figure a met parity row is marked "far above"
FAR_ABOVE = 0.25


@dataclass
class Reference:
    """One published table: its rows (dataset, method, our labels, figures by ``metric@k``)."""

    name: str
    source: str
    tolerance: float
    check: list[str]
    rows: list[dict] = field(default_factory=list)
    path: Path | None = None
    #: the evaluation protocol the figures were measured under, where the source says (then only
    #: our rows of that protocol are compared); None: unstated, every protocol's row is compared
    protocol: str | None = None


def _need(ok: bool, where: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {expected}")


def load_references(name_or_path: str | Path) -> Reference:
    """A reference file by path, or by name among the shipped ones (``letter-table1``). Every
    key is checked; an error names the file, the row and what was expected."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = REFERENCES / f"{name_or_path}.yaml"
        if not shipped.is_file():
            known = sorted(p.stem for p in REFERENCES.glob("*.yaml"))
            raise ConfigError(f"{name_or_path}: no such reference file, and not a shipped one ({', '.join(known)})")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    _need(isinstance(raw, dict), str(path), "expected a mapping with keys " + ", ".join(sorted(REFERENCE_KEYS)))
    bad = set(raw) - REFERENCE_KEYS
    _need(not bad, str(path), f"unknown key(s) {sorted(bad)}; expected {sorted(REFERENCE_KEYS)}")
    for key in ("name", "source"):
        _need(isinstance(raw.get(key), str) and raw[key], f"{path}: {key}", "expected a non-empty string")
    tol = raw.get("tolerance")
    _need(isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1, f"{path}: tolerance",
          f"expected a relative tolerance in (0, 1), e.g. 0.10, got {tol!r}")
    check = raw.get("check")
    _need(isinstance(check, list) and check and all(isinstance(m, str) and METRIC.match(m) for m in check),
          f"{path}: check", f"expected a list of metric@k (recall@10, ndcg@10 ...), got {check!r}")
    protocol = raw.get("protocol")
    _need(protocol is None or (isinstance(protocol, str) and protocol), f"{path}: protocol",
          f"expected the protocol the figures were measured under (masked, unmasked ...), got {protocol!r}")
    rows = raw.get("rows")
    _need(isinstance(rows, list) and rows, f"{path}: rows", "expected a non-empty list of rows")
    seen = set()
    for i, row in enumerate(rows):
        where = f"{path}: rows[{i}]"
        _need(isinstance(row, dict), where, "expected a mapping {dataset, method, ours, metric@k: value ...}")
        strangers = sorted(k for k in row if k not in ROW_KEYS and not METRIC.match(str(k)))
        _need(not strangers, where, f"unknown key(s) {strangers}: a row has dataset, method, ours and metric@k figures")
        for key in ("dataset", "method"):
            _need(isinstance(row.get(key), str) and row[key], f"{where}.{key}", "expected a non-empty string")
        ours = row.get("ours")
        _need(isinstance(ours, list) and ours and all(isinstance(x, str) for x in ours), f"{where}.ours",
              "expected a non-empty list of the suite's method labels")
        figures = {k: v for k, v in row.items() if METRIC.match(str(k))}
        for k, v in figures.items():
            _need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, f"{where}.{k}",
                  f"expected a figure >= 0, got {v!r}")
        _need(any(m in figures for m in check), where, f"none of the checked metrics {check}")
        key = (row["dataset"], row["method"])
        _need(key not in seen, where, f"a second row for {key[0]} / {key[1]}")
        seen.add(key)
    return Reference(raw["name"], raw["source"], float(tol), list(check), list(rows), path, protocol)


def parity_table(folder: Path) -> pd.DataFrame:
    """RecBole's test figures from one parity folder's ``parity.csv``: one row per (dataset,
    protocol, ours) with ``recbole`` (its model), ``recbole_test_<metric@k>`` and the folder."""
    path = Path(folder) / "parity.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: no parity table (run `python -m benchmarks.parity.recbole ... --output {folder}`)")
    df = pd.read_csv(path)
    need = {"dataset", "protocol", "ours", "recbole"}
    missing = sorted(need - set(df.columns))
    _need(not missing, str(path), f"missing column(s) {missing}: not a parity table of this suite")
    if "recbole_error" in df.columns:
        df = df[df["recbole_error"].isna()]
    df = df.copy()
    df["folder"] = str(folder)
    return df


def run_rows(runs: list[Path]) -> pd.DataFrame:
    """Test / all-users rows of the runs: mean, std and seed count per (dataset, method label,
    protocol, metric@k). A (dataset, label, protocol, seed) found in two runs is an error."""
    frames = []
    for run in runs:
        path = Path(run)
        df = RunDir(path).results() if path.is_dir() else read_results_csv(path)
        df = df[(df["split"] == "test") & (df["subset"] == "all") & df["metric"].isin(["recall", "ndcg"])].copy()
        df["run"] = str(run)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["metric_k"] = df["metric"] + "@" + df["k"].astype(int).astype(str)
    dup = df.groupby(["dataset", "method", "protocol", "seed", "metric_k"])["run"].nunique()
    dup = dup[dup > 1]
    if len(dup):
        (d, m, p, s, _), = dup.index[:1]
        runs_of = sorted(set(df[(df["dataset"] == d) & (df["method"] == m) & (df["protocol"] == p)
                                & (df["seed"] == s)]["run"]))
        raise ConfigError(f"{d} / {m} / protocol {p} / seed {s} is in more than one run ({', '.join(runs_of)}): "
                          f"give each cell once")
    g = df.groupby(["dataset", "method", "protocol", "metric_k"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _gap(ours: float, ref: float | None) -> float | None:
    if ref is None or pd.isna(ref) or not ref:
        return None
    return ours / ref - 1


def check_rows(runs: list[Path], references: list[Reference], parity: list[Path]) -> pd.DataFrame:
    """One row per (dataset, method label, protocol, reference): ours, the reference's figure,
    gap and "within" per checked metric, and the row's verdict (see the module doc)."""
    ours = run_rows(runs)
    par = pd.concat([parity_table(p) for p in parity], ignore_index=True) if parity else pd.DataFrame()
    metrics = list(dict.fromkeys(m for r in references for m in r.check)) or ["recall@10", "ndcg@10"]
    out = []
    keys = ours[["dataset", "method", "protocol"]].drop_duplicates().itertuples(index=False)
    for dataset, method, protocol in keys:
        mine = ours[(ours["dataset"] == dataset) & (ours["method"] == method) & (ours["protocol"] == protocol)]
        vals = {r.metric_k: (r.mean, r.std, r.seeds) for r in mine.itertuples()}
        base = {"dataset": dataset, "method": method, "protocol": protocol,
                "seeds": int(max(v[2] for v in vals.values()))}
        for m in metrics:
            base[f"ours_{m}"] = vals.get(m, (None,))[0]
            base[f"ours_std_{m}"] = vals.get(m, (None, None))[1]
        found = []
        for ref in references:
            if ref.protocol is not None and ref.protocol != protocol:
                continue
            for row in ref.rows:
                if row["dataset"] == dataset and method in row["ours"]:
                    found.append(("published", ref.name, row["method"], ref.tolerance, ref.check,
                                  {m: row.get(m) for m in ref.check}))
        if len(par):
            hit = par[(par["dataset"] == dataset) & (par["protocol"] == protocol) & (par["ours"] == method)]
            for r in hit.to_dict("records"):
                found.append(("implementation", f"RecBole {r['recbole']} ({Path(r['folder']).name})", r["recbole"],
                              PARITY_TOLERANCE, metrics, {m: r.get(f"recbole_test_{m}") for m in metrics}))
        if not found:
            out.append({**base, "kind": "", "reference": "", "reference_row": "", "within": None})
        for kind, name, ref_row, tol, checked, figures in found:
            row = {**base, "kind": kind, "reference": name, "reference_row": ref_row}
            oks = []
            for m in metrics:
                ref_v = figures.get(m)
                gap = _gap(base[f"ours_{m}"], ref_v) if base[f"ours_{m}"] is not None else None
                row[f"ref_{m}"] = ref_v
                row[f"gap_{m}"] = gap
                if m in checked and gap is not None:
                    oks.append(abs(gap) <= tol if kind == "published" else gap >= -tol)
            row["within"] = bool(oks) and all(oks)
            row["far_above"] = kind == "implementation" and any(
                row[f"gap_{m}"] is not None and row[f"gap_{m}"] > FAR_ABOVE for m in checked)
            out.append(row)
    df = pd.DataFrame(out)
    # rows in a stable order: dataset and method as the runs list them, then the protocol
    first = {k: i for i, k in enumerate(dict.fromkeys(zip(ours["dataset"], ours["method"])))}
    df["_order"] = [first[(d, m)] for d, m in zip(df["dataset"], df["method"])]
    df = df.sort_values(["_order", "protocol"], kind="stable").drop(columns="_order").reset_index(drop=True)
    verdicts = {}
    for key, g in df.groupby(["dataset", "method", "protocol"], sort=False):
        met = g[g["within"] == True]   # noqa: E712 (None is "no reference")
        if g["kind"].eq("").all():
            verdicts[key] = "no reference"
        elif len(met):
            verdicts[key] = "meets " + "; ".join(dict.fromkeys(
                r.reference + (f" (far above: more than +{FAR_ABOVE * 100:.0f} %)" if r.far_above else "")
                for r in met.itertuples()))
        else:
            verdicts[key] = "meets none"
    df["verdict"] = [verdicts[k] for k in zip(df["dataset"], df["method"], df["protocol"])]
    return df


def _pct(v) -> str:
    return "" if v is None or pd.isna(v) else f"{v * 100:+.1f} %"


def _num(v) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.4f}"


def _shown(path: Path | None) -> str:
    """A shipped reference file as its path in the repository (not this machine's), others as given."""
    try:
        return str(Path(path).resolve().relative_to(REFERENCES.parents[1]))
    except ValueError:
        return str(path)


def check_markdown(df: pd.DataFrame, references: list[Reference], parity: list[Path]) -> str:
    metrics = [c[len("ours_"):] for c in df.columns if c.startswith("ours_") and not c.startswith("ours_std_")]
    head = ["dataset", "method", "protocol", "seeds"] + [f"ours {m}" for m in metrics] + ["reference"] \
        + [f"ref {m}" for m in metrics] + [f"gap {m}" for m in metrics] + ["within", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.to_dict("records"):
        ours = [(_num(r[f"ours_{m}"]) + (f" ± {r[f'ours_std_{m}']:.4f}" if r["seeds"] > 1 else "")) for m in metrics]
        tol = next((f"±{ref.tolerance * 100:.0f} %" for ref in references if ref.name == r["reference"]), "")
        within = {True: f"yes ({tol or '±5 % or better'})", False: "no", None: ""}[r["within"]]
        if r["within"] and r.get("far_above"):
            within += ", far above"
        ref = f"{r['reference']}: {r['reference_row']}" if r["reference"] else "–"
        lines.append("| " + " | ".join([r["dataset"], r["method"], f"`{r['protocol']}`", str(r["seeds"]), *ours, ref,
                                        *[_num(r.get(f"ref_{m}")) for m in metrics],
                                        *[_pct(r.get(f"gap_{m}")) for m in metrics], within, r["verdict"]]) + " |")
    srcs = [f"- {ref.name}: {ref.source} (tolerance ±{ref.tolerance * 100:.0f} % on {', '.join(ref.check)}; "
            + (f"our `{ref.protocol}` rows only; " if ref.protocol else "")
            + f"`{_shown(ref.path)}`)" for ref in references]
    srcs += [f"- RecBole 1.2.1 on the same split: `{p}/parity.csv` (ours within 5 % of it, or better, on "
             f"{', '.join(metrics)}; the same protocol only)" for p in parity]
    return "\n".join(["Test split, all users, full ranking; ours = mean over the seeds shown (± std). "
                      "Gap = ours / reference - 1.", "", *lines, "", "References:", "", *srcs, ""])


def write_check(runs: list[Path], references: list[Reference], parity: list[Path],
                output: Path | None = None) -> tuple[Path, str]:
    """Write ``check.md`` / ``check.csv`` (see the module doc); return the folder and the markdown."""
    df = check_rows(runs, references, parity)
    md = check_markdown(df, references, parity)
    out = Path(output or runs[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "check.md", "# Reference check\n\n" + md)
    atomic_write_text(out / "check.csv", df.to_csv(index=False))
    return out, md
