"""Paper-style tables from a run directory's results.csv.

``write_report(DIR)`` writes
- ``DIR/table.md``, ``DIR/table.tex``, ``DIR/table.csv``: LETTER Table 1's layout — rows are
  methods grouped by identifier family (traditional, ID, textual, codebook, set), columns are
  dataset x R@5 R@10 N@5 N@10 on the TEST split over all users; the best value of a column is
  bold and the second underlined; with several seeds a cell reads mean ± std;
- ``DIR/report.md``: that table plus the validation table, the popularity-group table and the
  throughput table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.protocol import FAMILIES
from benchmarks.utils import atomic_write_text

FAMILY_TITLES = {"traditional": "Traditional", "id": "ID identifiers", "textual": "Textual identifiers",
                 "codebook": "Codebook identifiers", "set": "Set identifiers"}
TABLE_METRICS = [("recall", 5, "R@5"), ("recall", 10, "R@10"), ("ndcg", 5, "N@5"), ("ndcg", 10, "N@10")]


def load_results(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results.csv"
    if not path.is_file():
        from benchmarks.errors import ConfigError
        raise ConfigError(f"{path}: no results.csv (run `genrec-bench run ... --output {run_dir}` first)")
    return pd.read_csv(path)


def _method_order(df: pd.DataFrame, order: list[str] | None = None) -> list[tuple[str, str]]:
    """(family, method) pairs: families in FAMILIES order, then methods in ``order`` (the
    matrix's order), then in order of appearance."""
    seen = list(dict.fromkeys(zip(df["family"], df["method"])))
    rank = {f: i for i, f in enumerate(FAMILIES)}
    pos = {m: i for i, m in enumerate(order or [])}
    return sorted(seen, key=lambda fm: (rank.get(fm[0], len(FAMILIES)),
                                        pos.get(fm[1], len(pos)), seen.index(fm)))


def summary_table(df: pd.DataFrame, split: str = "test", subset: str = "all",
                  metrics=TABLE_METRICS) -> pd.DataFrame:
    """Mean, std and seed count per (method, dataset, metric@k)."""
    sel = df[(df["split"] == split) & (df["subset"] == subset)]
    keys = {(m, k) for m, k, _ in metrics}
    sel = sel[[(m, int(k)) in keys for m, k in zip(sel["metric"], sel["k"])]]
    g = sel.groupby(["family", "method", "dataset", "metric", "k"])["value"]
    out = g.agg(mean="mean", std="std", seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _cells(summary: pd.DataFrame, metrics, order=None) -> tuple[list, list, dict, dict]:
    """Rows (family, method), columns (dataset, label), values and ranks (1 best, 2 second)."""
    rows = _method_order(summary, order)
    datasets = list(dict.fromkeys(summary["dataset"]))
    cols = [(d, m, k, lab) for d in datasets for m, k, lab in metrics]
    vals, ranks = {}, {}
    for d, m, k, _ in cols:
        sub = summary[(summary["dataset"] == d) & (summary["metric"] == m) & (summary["k"] == k)]
        for r in sub.itertuples():
            vals[(r.family, r.method, d, m, k)] = (r.mean, r.std, r.seeds)
        means = sorted({round(r.mean, 12) for r in sub.itertuples()}, reverse=True)
        for r in sub.itertuples():
            pos = means.index(round(r.mean, 12)) + 1
            if pos <= 2:
                ranks[(r.family, r.method, d, m, k)] = pos
    return rows, cols, vals, ranks


def _fmt(v: tuple | None, digits: int = 4) -> str:
    if v is None:
        return "–"
    mean, std, n = v
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def table_markdown(summary: pd.DataFrame, metrics=TABLE_METRICS, title: str = "",
                   order: list[str] | None = None) -> str:
    rows, cols, vals, ranks = _cells(summary, metrics, order)
    head = ["Family", "Method"] + [f"{d} {lab}" for d, _, _, lab in cols]
    lines = ([f"**{title}**", ""] if title else []) + [
        "| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(cols)) + "|"]
    for fam, meth in rows:
        cells = [FAMILY_TITLES.get(fam, fam), meth]
        for d, m, k, _ in cols:
            key = (fam, meth, d, m, k)
            txt = _fmt(vals.get(key))
            rank = ranks.get(key)
            cells.append(f"**{txt}**" if rank == 1 else f"<u>{txt}</u>" if rank == 2 else txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_latex(summary: pd.DataFrame, metrics=TABLE_METRICS, caption: str = "",
                order: list[str] | None = None) -> str:
    rows, cols, vals, ranks = _cells(summary, metrics, order)
    datasets = list(dict.fromkeys(d for d, *_ in cols))
    per = len(metrics)
    out = [r"\begin{table*}[t]", r"\centering", r"\small",
           r"\begin{tabular}{l" + ("c" * per + "|") * (len(datasets) - 1) + "c" * per + "}", r"\toprule",
           "Model & " + " & ".join(rf"\multicolumn{{{per}}}{{c}}{{{_tex(d)}}}" for d in datasets) + r" \\",
           " & " + " & ".join(lab for _ in datasets for _, _, lab in metrics) + r" \\"]
    prev = None
    for fam, meth in rows:
        out.append(r"\midrule" if prev != fam else "")
        if prev != fam:
            out.append(rf"\multicolumn{{{1 + per * len(datasets)}}}{{l}}{{\textit{{{_tex(FAMILY_TITLES.get(fam, fam))}}}}} \\")
        prev = fam
        cells = [_tex(meth)]
        for d, m, k, _ in cols:
            key = (fam, meth, d, m, k)
            txt = _fmt(vals.get(key)).replace("±", r"$\pm$").replace("–", "--")
            rank = ranks.get(key)
            cells.append(rf"\textbf{{{txt}}}" if rank == 1 else rf"\underline{{{txt}}}" if rank == 2 else txt)
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{_tex(caption)}}}")
    out.append(r"\end{table*}")
    return "\n".join(x for x in out if x != "") + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        s = s.replace(a, b)
    return s


def popularity_markdown(df: pd.DataFrame) -> str:
    sel = df[(df["split"] == "test") & df["subset"].astype(str).str.startswith("pop")
             & (df["metric"].isin(["ndcg", "share_generated", "share_targets"]))]
    sel = sel[(sel["metric"] != "ndcg") | (sel["k"] == 10)]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "method", "subset", "metric"])["value"].mean().unstack(["subset"])
    piv = piv.reindex(sorted(piv.columns, key=lambda s: int(s[3:])), axis=1)
    lines = ["| Dataset | Method | Metric | " + " | ".join(piv.columns) + " |",
             "|---|---|---|" + "---:|" * len(piv.columns)]
    for (d, m, met), row in piv.iterrows():
        name = {"ndcg": "NDCG@10", "share_generated": "share of top-K",
                "share_targets": "share of targets"}[met]
        lines.append(f"| {d} | {m} | {name} | " + " | ".join(f"{v:.4f}" for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def beam_global_markdown(df: pd.DataFrame) -> str:
    """LETTER Fig. 3 / SETRec: beam search vs exact global ranking on the same test users."""
    sel = df[(df["split"] == "test") & df["subset"].isin(["beam", "global"]) & (df["k"] == 10)
             & df["metric"].isin(["recall", "ndcg"])]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "method", "subset", "metric"])["value"].mean().unstack(["subset", "metric"])
    lines = ["| Dataset | Method | beam R@10 | global R@10 | beam N@10 | global N@10 | users |",
             "|---|---|---:|---:|---:|---:|---:|"]
    users = sel[sel["subset"] == "global"].groupby(["dataset", "method"])["n_users"].max()
    for (d, m), row in piv.iterrows():
        lines.append(f"| {d} | {m} | {row[('beam', 'recall')]:.4f} | {row[('global', 'recall')]:.4f} | "
                     f"{row[('beam', 'ndcg')]:.4f} | {row[('global', 'ndcg')]:.4f} | {int(users.get((d, m), 0))} |")
    return "\n".join(lines) + "\n"


def throughput_markdown(df: pd.DataFrame) -> str:
    sel = df[df["metric"].isin(["users_per_s", "ms_per_user"])]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "family", "method", "metric"])["value"].mean().unstack("metric").reset_index()
    lines = ["| Dataset | Method | users/s | ms/user |", "|---|---|---:|---:|"]
    for r in piv.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.users_per_s:,.1f} | {r.ms_per_user:.3f} |")
    return "\n".join(lines) + "\n"


def matrix_method_order(run_dir: Path) -> list[str]:
    """Method labels in the order of the run's matrix.yaml (empty if there is none)."""
    path = Path(run_dir) / "matrix.yaml"
    if not path.is_file():
        return []
    import yaml
    data = yaml.safe_load(path.read_text()) or {}
    return [m.get("label", m.get("name")) for m in data.get("methods", []) if isinstance(m, dict)]


def write_report(run_dir: Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    df = load_results(run_dir)
    test = summary_table(df, "test")
    valid = summary_table(df, "valid")
    seeds = sorted(df["seed"].unique().tolist()) if len(df) else []
    caption = (f"Test split, all users, full ranking; mean ± std over seeds {seeds}" if len(seeds) > 1
               else f"Test split, all users, full ranking; seed {seeds[0] if seeds else '-'}")
    order = matrix_method_order(run_dir)
    md = table_markdown(test, title=caption, order=order)
    paths = {"table.md": run_dir / "table.md", "table.tex": run_dir / "table.tex",
             "table.csv": run_dir / "table.csv", "report.md": run_dir / "report.md"}
    atomic_write_text(paths["table.md"], md)
    atomic_write_text(paths["table.tex"], table_latex(test, caption=caption, order=order))
    atomic_write_text(paths["table.csv"], test.to_csv(index=False))
    parts = [f"# Results: {run_dir.name}", "", "## Overall (LETTER Table 1 layout)", "", md]
    if not valid.empty:
        parts += ["## Validation split", "", table_markdown(valid, order=order)]
    pop = popularity_markdown(df)
    if pop:
        parts += ["## Popularity groups (test; group 1 = most popular items)", "", pop]
    bg = beam_global_markdown(df)
    if bg:
        parts += ["## Beam search vs global ranking (test; exact log-probability of every item)", "", bg]
    thr = throughput_markdown(df)
    if thr:
        parts += ["## Throughput (producing the top-K on the test split)", "", thr]
    atomic_write_text(paths["report.md"], "\n".join(parts))
    return paths
