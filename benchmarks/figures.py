"""Figures of the report, one function each; PNG and PDF side by side, one colour per family.

Every figure: labelled axes with units, a legend, the same colour for the same identifier
family everywhere (traditional grey, ID blue, textual green, codebook orange, set red).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FAMILY_COLORS = {"traditional": "#7f7f7f", "id": "#1f77b4", "textual": "#2ca02c",
                 "codebook": "#ff7f0e", "set": "#d62728"}
FAMILY_MARKERS = {"traditional": "o", "id": "s", "textual": "^", "codebook": "D", "set": "*"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> list[Path]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:   # atomic, and byte-identical when re-drawn (no creation date in the PDF)
        tmp = p.with_name(f".{p.name}.tmp")
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=p.suffix[1:],
                    metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
        tmp.replace(p)
    _plt().close(fig)
    return out


def _shade(color: str, i: int, n: int) -> tuple:
    """Members of one family: the family colour, lighter for later members."""
    import matplotlib.colors as mc
    rgb = np.array(mc.to_rgb(color))
    return tuple(rgb + (1 - rgb) * (0.55 * i / max(n - 1, 1)))


def method_colors(methods: list[tuple[str, str]]) -> dict[str, tuple]:
    """(family, method) pairs -> colour per method (family hue, shade per member)."""
    out = {}
    for fam in dict.fromkeys(f for f, _ in methods):
        members = [m for f, m in methods if f == fam]
        for i, m in enumerate(members):
            out[m] = _shade(FAMILY_COLORS.get(fam, "#444444"), i, len(members))
    return out


def _label_offsets(x: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """Label offsets (points) that keep labels of nearby points apart: points are taken from
    the top down, and a label whose point is close to an already placed one (0.25 decades, 4 %
    of the y range) moves to the next free slot below."""
    span = max(float(np.ptp(y)), 1e-12) if len(y) else 1.0
    slots = [(5, 4), (5, -9), (-5, -9), (-5, 4), (5, 14), (5, -19)]
    placed: list[tuple[float, float, int]] = []
    out: list[tuple[int, int]] = [(5, 4)] * len(x)
    for i in np.argsort(-y, kind="stable"):
        taken = {k for px, py, k in placed if abs(px - x[i]) < 0.25 and abs(py - y[i]) < 0.04 * span}
        k = next((k for k in range(len(slots)) if k not in taken), 0)
        placed.append((float(x[i]), float(y[i]), k))
        out[i] = slots[k]
    return out


def efficiency_scatter(points: pd.DataFrame, path: Path, title: str = "") -> list[Path]:
    """NDCG@10 against users/s (log scale), one point per (dataset, method): columns dataset,
    family, method, ndcg, users_per_s."""
    plt = _plt()
    datasets = list(dict.fromkeys(points["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        sub = points[points["dataset"] == d]
        offsets = _label_offsets(np.log10(sub["users_per_s"].to_numpy(float)), sub["ndcg"].to_numpy(float))
        for r, off in zip(sub.itertuples(), offsets):
            ax.scatter(r.users_per_s, r.ndcg, s=60, color=FAMILY_COLORS.get(r.family, "#444444"),
                       marker=FAMILY_MARKERS.get(r.family, "o"), edgecolor="black", linewidth=0.5, zorder=3)
            ax.annotate(r.method, (r.users_per_s, r.ndcg), textcoords="offset points", xytext=off, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("throughput (users per second, log scale)")
        ax.set_ylabel("test NDCG@10")
        ax.set_title(d)
        ax.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], marker=FAMILY_MARKERS[f], color=c, linestyle="", markeredgecolor="black",
                          markersize=8, label=f) for f, c in FAMILY_COLORS.items()
               if f in set(points["family"])]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.06))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def popularity_bars(table: pd.DataFrame, methods: list[tuple[str, str]], path: Path, dataset: str,
                    ylabel: str = "test NDCG@10") -> list[Path]:
    """Grouped bars: x = popularity group (1 = most popular items), one bar per method.
    ``table``: index method, columns pop1..popG."""
    plt = _plt()
    colors = method_colors(methods)
    names = [m for _, m in methods if m in table.index]
    groups = list(table.columns)
    x = np.arange(len(groups))
    width = 0.85 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(min(12.0, max(6.0, 0.12 * len(names) * len(groups) + 3)), 4.8))
    for i, m in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, table.loc[m].values, width, label=m, color=colors[m],
               edgecolor="black", linewidth=0.3)
    ax.set_xticks(x, [f"group {g[3:]}" + (" (most popular)" if g == "pop1" else "") for g in groups])
    ax.set_xlabel("item popularity group of the test target (training interactions, equal item counts)")
    ax.set_ylabel(ylabel)
    ax.set_title(dataset)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def code_frequency_lines(curves: dict[str, np.ndarray], path: Path, families: dict[str, str],
                         title: str = "") -> list[Path]:
    """LETTER Fig. 6: share of items per group of first-level codes (codes sorted by how many
    items they hold; groups of 10 % of the codebook), one line per scheme."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    n = len(next(iter(curves.values())))
    x = np.arange(n)
    colors = method_colors([(families.get(name, ""), name) for name in curves])
    for name, freq in curves.items():
        ax.plot(x, freq, marker="o", label=name, color=colors[name])
    ax.axhline(1 / n, color="grey", lw=0.8, ls="--", label="uniform")
    step = 100 // n
    ax.set_xticks(x, [f"{i * step}-{(i + 1) * step}%" for i in range(n)], rotation=45, ha="right")
    ax.set_xlabel("first-level codes grouped by assignment frequency (most assigned first)")
    ax.set_ylabel("share of items assigned")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def code_change_curve(curves: dict[str, list[dict]], path: Path, title: str = "") -> list[Path]:
    """Tokenizer training: share of items whose codes changed since the previous point (left,
    log scale; thin lines: per level, the first three) and the total loss (right), against the epoch (log scale), one line per scheme.
    ``curves``: scheme -> the ``code_curve`` points of :func:`identifiers.quantizers.train_rqvae`."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    loss_ax = ax.twinx()
    for i, (name, curve) in enumerate(curves.items()):
        pts = [p for p in curve if p.get("changed") is not None]
        color = f"C{i}"
        ax.plot([p["epoch"] for p in pts], [max(p["changed"], 1e-5) for p in pts], color=color,
                marker=".", label=f"{name}: items whose codes changed")
        levels = [p for p in pts if p.get("changed_levels")]      # curves written before: none
        for lvl, ls in zip(range(len(levels[0]["changed_levels"]) if levels else 0), (":", "-.", (0, (1, 3)))):
            ax.plot([p["epoch"] for p in levels], [max(p["changed_levels"][lvl], 1e-5) for p in levels],
                    color=color, ls=ls, lw=0.8, label=f"{name}: level {lvl + 1} changed")
        loss_ax.plot([p["epoch"] for p in curve], [p["total"] for p in curve], color=color, ls="--",
                     alpha=0.6, label=f"{name}: total loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator
    # epochs as plain numbers at 1, 2, 5 x 10^k (the default labels 3x10^3 and 4x10^3 overlap)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of items with changed codes (0 shown at 1e-5)")
    loss_ax.set_ylabel("total loss (dashed)")
    lines = ax.get_legend_handles_labels()
    more = loss_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)
