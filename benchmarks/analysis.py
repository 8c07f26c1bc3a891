"""Code-assignment analyses of identifier schemes (LETTER Fig. 6, Tables 3 and 4).

- :func:`code_usage` — per level: codebook size, used codes, utilisation, entropy (bits) and
  perplexity of the code distribution, the largest code's share; overall: the collision rate
  over the SEMANTIC levels (share of items whose semantic code tuple is shared with another item,
  i.e. before TIGER's disambiguating token), collision groups, identifier length.
- :func:`code_frequency_groups` — LETTER Fig. 6: codes of one level sorted by how many items they
  get, cut into groups of equal code count (10 % of the codebook each by default), and the share
  of items per group (uniform assignment gives 0.1 everywhere).
- :func:`cf_neighbour_overlap` — LETTER Table 4: for each item its nearest neighbour by CF
  embedding cosine; the share of semantic positions where the two identifiers hold the same
  code; the mean over items.
- :func:`quantized_sasrec` — LETTER Table 3: a SASRec whose item table is the tokenizer's
  FROZEN quantised embeddings (through a learned linear projection when their dimension differs
  from SASRec's hidden size; identity when equal), the rest of the network trained as usual;
  its test ranking says how much collaborative signal the quantised embeddings carry.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from identifiers.base import ItemIdentifiers


def _levels(ids: ItemIdentifiers) -> list[list[str | None]]:
    """Token per item at each position (None where an identifier is shorter)."""
    depth = max(len(t) for t in ids.tokens)
    return [[t[pos] if len(t) > pos else None for t in ids.tokens] for pos in range(depth)]


def semantic_tuples(ids: ItemIdentifiers) -> list[tuple]:
    n = ids.n_semantic_levels
    return [t[:n] if n else t for t in ids.tokens]


def code_usage(ids: ItemIdentifiers) -> pd.DataFrame:
    """Tidy rows (scheme, level, metric, value); level "all" for whole-identifier metrics."""
    rows = []

    def add(level, metric, value):
        rows.append({"scheme": ids.scheme, "level": level, "metric": metric, "value": float(value)})

    if ids.kind == "codes":
        for lvl, col in enumerate(_levels(ids)):
            present = [c for c in col if c is not None]
            counts = np.array(list(Counter(present).values()), dtype=np.float64)
            p = counts / counts.sum()
            entropy = float(-(p * np.log2(p)).sum())
            size = len(ids.levels[lvl]) if ids.levels and lvl < len(ids.levels) else len(counts)
            add(lvl, "codebook_size", size)
            add(lvl, "used_codes", len(counts))
            add(lvl, "utilisation", len(counts) / max(size, 1))
            add(lvl, "entropy_bits", entropy)
            add(lvl, "perplexity", 2 ** entropy)
            add(lvl, "max_code_share", p.max())
    sem = Counter(semantic_tuples(ids))
    shared = sum(c for c in sem.values() if c > 1)
    add("all", "items", ids.n_items)
    add("all", "collision_rate", shared / max(ids.n_items, 1))
    add("all", "collision_groups", sum(1 for c in sem.values() if c > 1))
    add("all", "max_collision_group", max(sem.values()))
    add("all", "mean_length", np.mean([len(t) for t in ids.tokens]))
    add("all", "vocab_size", len(ids.vocab))
    def number(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    for key, value in ids.stats.items():
        if number(value):
            add("all", f"stats.{key}", value)
        elif (isinstance(value, list) and value and all(number(v) for v in value)
              and len(value) == ids.n_semantic_levels):      # one figure per semantic level
            for lvl, v in enumerate(value):
                add(lvl, f"stats.{key}", v)
    return pd.DataFrame(rows, columns=["scheme", "level", "metric", "value"])


def code_frequency_groups(ids: ItemIdentifiers, level: int = 0, n_groups: int = 10) -> np.ndarray:
    """Share of items per group of codes (codes sorted by frequency, most assigned first;
    ``n_groups`` groups of equal code count over the WHOLE codebook, unused codes included)."""
    col = [c for c in _levels(ids)[level] if c is not None]
    size = len(ids.levels[level]) if ids.levels else len(set(col))
    freq = np.zeros(size)
    counts = sorted(Counter(col).values(), reverse=True)
    freq[:len(counts)] = counts
    bounds = np.linspace(0, size, n_groups + 1).round().astype(int)
    return np.array([freq[a:b].sum() for a, b in zip(bounds[:-1], bounds[1:])]) / max(freq.sum(), 1)


def cf_neighbour_overlap(ids: ItemIdentifiers, cf: np.ndarray, batch: int = 2048) -> float:
    """Mean share of equal semantic positions between each item and its nearest CF neighbour.

    ``cf``: [n_items + 1, d] CF embeddings (row 0 padding, ignored)."""
    emb = np.asarray(cf[1:], dtype=np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    nn_idx = np.empty(len(emb), dtype=np.int64)
    for start in range(0, len(emb), batch):
        sims = emb[start:start + batch] @ emb.T
        sims[np.arange(sims.shape[0]), np.arange(start, start + sims.shape[0])] = -np.inf
        nn_idx[start:start + batch] = sims.argmax(1)
    sem = semantic_tuples(ids)
    overlaps = []
    for i, j in enumerate(nn_idx):
        a, b = sem[i], sem[j]
        n = max(len(a), len(b))
        overlaps.append(sum(x == y for x, y in zip(a, b)) / n if n else 0.0)
    return float(np.mean(overlaps))


def quantized_sasrec(dataset, quantized: np.ndarray, *, seed: int = 0, config: dict | None = None,
                     device: str = "cpu", progress: bool = False) -> dict[str, float]:
    """Train a SASRec on ``dataset`` with the frozen ``quantized`` item table; return its test
    Recall/NDCG@5/10 (all users)."""
    from baselines.sasrec import SASRec
    from benchmarks.config import build_config
    from benchmarks.evaluation import EvalConfig, Evaluator
    from benchmarks.protocol import Context
    from benchmarks.utils import seed_everything

    seed_everything(seed)
    cfg = build_config(SASRec.Config, {"hidden": int(quantized.shape[1]), **(config or {})})
    model = SASRec(cfg, Context(dataset, None, device, seed, progress=progress), item_table=quantized)
    ev = Evaluator(dataset, EvalConfig(ks=(5, 10), subsets=("all",)))
    model.fit(ev.validation_ndcg)
    rows = ev.evaluate(model, splits=("test",), progress=progress, throughput=False).rows
    return {f"{'R' if r['metric'] == 'recall' else 'N'}@{r['k']}": r["value"] for r in rows}
