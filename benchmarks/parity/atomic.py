"""A suite dataset's split as RecBole atomic files, and the digest RecBole's loaded copy must match.

RecBole reads pre-split data as "benchmark files": with ``benchmark_filename: [train, valid,
test]`` it loads ``<name>.train.inter``, ``<name>.valid.inter`` and ``<name>.test.inter`` from
``<data_path>/<name>/``, concatenates them only to map tokens to ids, and uses each file as
that split's rows WITHOUT filtering or re-splitting (``Dataset._data_processing`` skips the
filters; ``Dataset.build`` cuts the rows back at the file boundaries). Two layouts are written:

- ``general`` (BPR, LightGCN): ``user_id:token  item_id:token``, one row per interaction:
  every training interaction of a user in ``train`` (repeats kept), the validation target in
  ``valid``, the test target in ``test``. RecBole's full-ranking evaluation then ranks each
  user of a split over all items, and removes the user's items of the earlier files (the
  history) from the ranking.
- ``sequential`` (SASRec, BERT4Rec, Caser, HGN): ``user_id:token  item_id_list:token_seq
  item_id:token``, one row per (history -> target) sample. With benchmark files
  ``SequentialDataset`` does NOT build histories itself (no ``data_augmentation``): the
  ``item_id_list`` column IS the history (``alias_of_item_id: [item_id_list]`` maps its tokens
  with the item ids). Rows: ``train`` = every prefix of every training sequence, history =
  the <= ``cap`` items before position t >= 1, target = item t (the suite's
  ``Dataset.training_samples``); ``valid`` = the last <= ``cap`` training items -> the
  validation target; ``test`` = the last <= ``cap`` training + validation items -> the test
  target (``Dataset.history``). ``cap`` is the dataset's ``max_history`` unless a model reads
  fewer or more items (see ``benchmarks.parity.recbole``).

Tokens are the suite's own ids (user u -> ``"u"``, item i -> ``"i"``, 1-based), so RecBole's
ids map back to ours through its ``field2id_token`` tables. :func:`split_digest` gives, per
split, the row and user counts and a SHA-256 over the sorted rows in that token space; the
driver that runs inside RecBole's venv computes the same digest from what RecBole loaded, and
the harness compares the two (:func:`compare_digests`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmarks.data.dataset import Dataset

SPLITS = ("train", "valid", "test")
KINDS = ("general", "sequential")
HEADERS = {"general": "user_id:token\titem_id:token",
           "sequential": "user_id:token\titem_id_list:token_seq\titem_id:token"}


def split_rows(ds: Dataset, kind: str, cap: int | None = None) -> dict[str, list[tuple]]:
    """The rows of each split in the suite's ids: ``general`` -> (user, item); ``sequential``
    -> (user, (history items oldest first, <= cap), target). ``cap`` (sequential only)
    defaults to ``ds.max_history``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    rows: dict[str, list[tuple]] = {s: [] for s in SPLITS}
    if kind == "general":
        for u in range(ds.n_users):
            for split in SPLITS:
                rows[split] += [(u, int(i)) for i in getattr(ds, split)[u]]
        return rows
    cap = ds.max_history if cap is None else int(cap)
    if cap < 1:
        raise ValueError(f"cap: expected >= 1 history items, got {cap}")
    for u, seq in enumerate(ds.train):
        seq = [int(i) for i in seq]
        rows["train"] += [(u, tuple(seq[max(0, t - cap):t]), seq[t]) for t in range(1, len(seq))]
    for split in ("valid", "test"):
        hists = ds.history(split)
        for u, targets in enumerate(ds.targets(split)):
            hist = tuple(int(i) for i in hists[u][-cap:])
            if not hist:          # no history: the suite does not evaluate such a user either
                continue
            rows[split] += [(u, hist, int(t)) for t in targets]
    return rows


def _line(kind: str, row: tuple) -> str:
    if kind == "general":
        return f"{row[0]}\t{row[1]}"
    return f"{row[0]}\t{' '.join(map(str, row[1]))}\t{row[2]}"


def write_atomic_files(ds: Dataset, folder: str | Path, name: str, kind: str,
                       cap: int | None = None) -> dict[str, Path]:
    """Write ``<folder>/<name>.{train,valid,test}.inter`` (see the module docstring) and
    return {split: path}. ``name`` must be the folder's name for RecBole to find the files
    (``data_path/<dataset>/<dataset>.<split>.inter``)."""
    folder = Path(folder)
    if folder.name != name:
        raise ValueError(f"RecBole reads <data_path>/<dataset>/<dataset>.<split>.inter: the folder "
                         f"{folder} must be named after the dataset {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in split_rows(ds, kind, cap).items():
        path = folder / f"{name}.{split}.inter"
        text = "\n".join([HEADERS[kind]] + [_line(kind, r) for r in rows]) + "\n"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        paths[split] = path
    return paths


def digest_lines(lines: list[str]) -> str:
    """SHA-256 of the sorted lines (order-free): the same function runs in RecBole's venv."""
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def split_digest(ds: Dataset, kind: str, cap: int | None = None) -> dict:
    """{split: {rows, users, max_history, sha256}, users, items}: what RecBole must load."""
    out: dict = {"users": ds.n_users, "items": ds.n_items}
    for split, rows in split_rows(ds, kind, cap).items():
        out[split] = {"rows": len(rows), "users": len({r[0] for r in rows}),
                      "max_history": max((len(r[1]) for r in rows), default=0) if kind == "sequential" else None,
                      "sha256": digest_lines([_line(kind, r) for r in rows])}
    return out


def compare_digests(ours: dict, theirs: dict) -> list[str]:
    """The differences between our digest and the one RecBole's loaded data gave ([] = equal)."""
    problems = []
    for key in ("users", "items"):
        if ours[key] != theirs.get(key):
            problems.append(f"{key}: ours {ours[key]}, RecBole loaded {theirs.get(key)}")
    for split in SPLITS:
        a, b = ours[split], theirs.get(split, {})
        for key in ("rows", "users", "max_history", "sha256"):
            if a[key] != b.get(key):
                problems.append(f"{split}.{key}: ours {a[key]}, RecBole loaded {b.get(key)}")
    return problems

