"""RPG's graph-constrained decoding (Hou et al., KDD 2025, Sec. 3.4; the official
``build_ii_sim_mat`` / ``graph_propagation``), without an items x items matrix.

Graph (built once after training, from the learned code embeddings e_{j,c}):
    sim(i, i') = mean_j (1 + cos(e_{j,c_j(i)}, e_{j,c_j(i')})) / 2
and every item keeps its ``k`` most similar items, itself first (:func:`neighbour_graph`).
The official code fills a dense N x N float matrix (CDs: 16.6 GB) and takes its row-wise top-k;
here a chunk of rows at a time is computed ([chunk, N], from the m small [K, K] code-similarity
tables) and only its top-k kept. The item itself is forced to the front of its own list (its
similarity, 1, is the largest possible, but items sharing its whole code tuple tie with it and
could push it out of a short list): so every beam item is among the neighbours it expands,
which is what keeps the beam's scores from ever dropping.

Walk (per user, :func:`graph_walk`): start from ``b`` random items; then ``steps`` (q) times:
take the union of the beam's neighbour lists, score every item of it exactly with the user's
per-digit log-probabilities (:func:`backbones.rpg.code_scores`), keep the best ``b`` (ties:
lower item id first, the harness's rule). The result is the last beam, best first. Cost per
user O(b k q m) gathered log-probabilities, no term in N (where b k q exceeds N, the method
scores every item once instead, O(N m), and the walk looks the scores up: the same numbers).

Differences from the official code, each a choice the paper leaves open:
- Start: ``b`` DISTINCT items drawn uniformly (per user from a generator seeded by the run seed
  and the user id, so a user's start does not depend on the batch). The official code draws
  with replacement (``torch.randint``); a repeat there only narrows the start.
- Exclusions and candidate masks (``allowed``: the user's history where the run's protocol is
  ``masked``, the warm / cold subsets' candidates): items that may not be returned are never
  drawn as starts and never enter the beam (they still count as visited when a neighbour list
  offers them); the beam keeps its width ``b``. The official code excludes nothing (the
  ``unmasked`` protocol).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from backbones.rpg import code_scores


@torch.no_grad()
def neighbour_graph(tables: list[torch.Tensor], codes: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """[N + 1, k] item ids: row i = item i's ``k`` nearest items by the code-embedding
    similarity (see the module docstring), itself first; row 0 (padding) zeros.

    ``tables``: digit j's code embeddings [K_j, d]; ``codes`` [N + 1, m] within-digit codes
    (row 0 ignored). Memory O(chunk x N + m K²), never N x N."""
    real = codes[1:].long()
    n, m = real.shape
    k = min(int(k), n)
    sims = [0.5 * (1.0 + F.normalize(t.float(), dim=-1) @ F.normalize(t.float(), dim=-1).T) for t in tables]
    out = torch.zeros((n + 1, k), dtype=torch.long, device=real.device)
    for s in range(0, n, chunk):
        rows = real[s:s + chunk]
        acc = torch.zeros((len(rows), n), device=real.device)
        for j, table in enumerate(sims):
            acc += torch.index_select(table[rows[:, j]], 1, real[:, j])
        acc /= m
        local = torch.arange(len(rows), device=real.device)
        acc[local, s + local] = 2.0                       # the item itself, above any similarity
        out[s + 1:s + 1 + len(rows)] = torch.topk(acc, k, dim=1).indices + 1
    return out


def random_starts(users: np.ndarray, seed: int, beams: int, n_items: int,
                  allowed: torch.Tensor | None = None) -> torch.Tensor:
    """[B, beams] distinct start items per user, uniform over the items the user may get
    (``allowed`` [B, n_items + 1] bool, or every item), from a generator seeded by (seed,
    user). Fewer allowed items than ``beams``: all of them, the rest 0."""
    out = torch.zeros((len(users), beams), dtype=torch.long)
    allowed_np = None if allowed is None else allowed.cpu().numpy()
    for row, user in enumerate(np.asarray(users).tolist()):
        rng = np.random.default_rng([int(seed), int(user)])
        if allowed_np is None:
            pick = rng.choice(n_items, size=min(beams, n_items), replace=False) + 1
        else:
            pool = np.flatnonzero(allowed_np[row])
            pick = pool[rng.choice(len(pool), size=min(beams, len(pool)), replace=False)] if len(pool) else pool
        out[row, :len(pick)] = torch.as_tensor(pick, dtype=torch.long)
    return out


def stable_top(s: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices [B, k] of each row's k largest values, best first, equal values in
    column order (what a stable descending sort's first k columns are), via ``topk`` with the
    ties fixed: rows where the k-th value also occurs beyond the top-k are sorted stably in
    full, and ties inside the top-k are put in column order."""
    vals, idx = torch.topk(s, k, dim=1)
    kth = vals[:, -1:]
    cut = (s == kth).sum(1) > (vals == kth).sum(1)
    if cut.any():
        rows = cut.nonzero().squeeze(1)
        idx[rows] = torch.sort(s[rows], dim=1, descending=True, stable=True).indices[:, :k]
        vals[rows] = s[rows].gather(1, idx[rows])
    order = torch.argsort(idx, dim=1)
    idx, vals = idx.gather(1, order), vals.gather(1, order)
    return idx.gather(1, torch.sort(vals, dim=1, descending=True, stable=True).indices)


@torch.no_grad()
def graph_walk(logp: torch.Tensor, flat: torch.Tensor, adjacency: torch.Tensor, starts: torch.Tensor,
               steps: int, allowed: torch.Tensor | None = None, count_visited: bool = False,
               table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The beam after ``steps`` propagation steps: item ids [B, b] best first (0 where no
    allowed item was left) and their scores [B, b] (-inf there).

    ``logp`` [B, Σ K] per-digit log-probabilities; ``flat`` [N + 1, m] their column of each
    item's codes; ``adjacency`` [N + 1, k] (:func:`neighbour_graph`); ``starts`` [B, b];
    ``allowed`` [B, N + 1] bool: the items that may enter the beam (None: all real items).
    The info dict holds ``beam_means`` [steps + 1, B] (the mean beam score after each step,
    the start first) and, with ``count_visited``, ``visited`` [B]: distinct items scored.

    ``table`` [B, N + 1]: every item's exact score (:func:`backbones.rpg.exact_scores`), to
    look the visited items' scores up in instead of gathering their m log-probabilities: the
    same numbers (both come from :func:`backbones.rpg.code_scores`), cheaper where a walk
    scores more items (b k q) than the catalogue holds."""
    score = ((lambda ids: code_scores(logp, flat, ids)) if table is None
             else (lambda ids: table.gather(1, ids)))
    beam = starts.to(logp.device)
    scores = score(beam).masked_fill(beam == 0, float("-inf"))
    means = [scores.mean(1)]
    seen = None
    if count_visited:
        seen = torch.zeros((beam.shape[0], flat.shape[0]), dtype=torch.bool, device=logp.device)
        seen.scatter_(1, beam, True)
    width = beam.shape[1]
    for _ in range(steps):
        nbr = adjacency[beam].flatten(1).sort(1).values                # [B, b k], ascending ids
        bad = nbr == 0
        bad[:, 1:] |= nbr[:, 1:] == nbr[:, :-1]                       # each item once
        if allowed is not None:
            bad |= ~allowed.gather(1, nbr)
        s = score(nbr).masked_fill(bad, float("-inf"))
        order = stable_top(s, width)
        beam, scores = nbr.gather(1, order), s.gather(1, order)
        beam = beam.masked_fill(torch.isneginf(scores), 0)
        means.append(scores.mean(1))
        if seen is not None:
            seen.scatter_(1, nbr, True)
    info = {"beam_means": torch.stack(means)}
    if seen is not None:
        seen[:, 0] = False
        info["visited"] = seen.sum(1)
    return beam, scores, info
