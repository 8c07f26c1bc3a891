"""The pure parts of the RecBole parity harness (no RecBole needed): the atomic-file writer,
the digest both sides compute, the config mapping and the tables."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.data.formats.recbole import read_recbole
from benchmarks.data.toy import toy_dataset
from benchmarks.parity import recbole as harness
from benchmarks.parity import recbole_driver as driver
from benchmarks.parity.atomic import (HEADERS, compare_digests, split_digest, split_rows,
                                      write_atomic_files)


@pytest.fixture
def ds():
    return toy_dataset(max_history=6)


def _parse(path):
    lines = path.read_text().splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def test_general_files_read_back_through_the_suites_reader(ds, tmp_path):
    paths = write_atomic_files(ds, tmp_path / "toy-g", "toy-g", "general")
    for split in ("train", "valid", "test"):
        assert paths[split] == tmp_path / "toy-g" / f"toy-g.{split}.inter"
        raw = read_recbole(paths[split]).interactions
        got = Counter(zip(raw.user.astype(int), raw.item.astype(int)))
        want = Counter((u, int(i)) for u in range(ds.n_users) for i in getattr(ds, split)[u])
        assert got == want and sum(got.values()) > 0
    users = set(read_recbole(paths["train"]).interactions.user.astype(int))
    assert users == set(range(ds.n_users))
    items = set()
    for p in paths.values():
        items |= set(read_recbole(p).interactions.item.astype(int))
    assert items == set(range(1, ds.n_items + 1))


@pytest.mark.parametrize("cap", [None, 3, 21])
def test_sequential_files_hold_our_histories_and_targets(ds, tmp_path, cap):
    name = f"toy-s{cap}"
    paths = write_atomic_files(ds, tmp_path / name, name, "sequential", cap)
    h = ds.max_history if cap is None else cap
    for split in ("valid", "test"):
        header, rows = _parse(paths[split])
        assert header == HEADERS["sequential"]
        hist = ds.history(split)
        assert [int(r[0]) for r in rows] == list(ds.eval_users(split))
        for u, lst, target in rows:
            u = int(u)
            assert [int(i) for i in lst.split()] == hist[u][-h:].tolist()
            assert int(target) == int(ds.targets(split)[u][0])
    _, rows = _parse(paths["train"])
    users, hists, targets = ds.training_samples(max_history=h)
    want = Counter((int(u), tuple(int(i) for i in row if i), int(t)) for u, row, t in zip(users, hists, targets))
    got = Counter((int(u), tuple(int(i) for i in lst.split()), int(t)) for u, lst, t in rows)
    assert got == want
    longest = max(len(lst.split()) for _, lst, _ in rows)
    assert longest == min(h, max(len(s) for s in ds.train) - 1)
    # the suite's reader sees the targets as the interactions (it ignores item_id_list)
    raw = read_recbole(paths["test"]).interactions
    assert raw.item.astype(int).tolist() == [int(ds.test[u][0]) for u in ds.eval_users("test")]


def test_writer_checks_its_arguments(ds, tmp_path):
    with pytest.raises(ValueError, match="named after the dataset"):
        write_atomic_files(ds, tmp_path / "folder", "other", "general")
    with pytest.raises(ValueError, match="kind"):
        split_rows(ds, "graph")
    with pytest.raises(ValueError, match="cap"):
        split_rows(ds, "sequential", 0)


class _Feat(dict):
    """RecBole's Interaction as far as the driver's digest reads it (columns of tensors)."""


class _Split:
    def __init__(self, feat):
        self.inter_feat = feat
        self.uid_field, self.iid_field = "user_id", "item_id"
        self.item_id_list_field, self.item_list_length_field = "item_id_list", "item_length"


def _as_recbole_loaded(paths, kind):
    """What RecBole builds from the files: tokens factorised to ids 1.. in file order
    (train, valid, test), lists right-padded, [PAD] = id 0."""
    parsed = {s: _parse(p)[1] for s, p in paths.items()}
    user_tok, item_tok = {}, {}

    def uid(t):
        return user_tok.setdefault(t, len(user_tok) + 1)

    def iid(t):
        return item_tok.setdefault(t, len(item_tok) + 1)

    splits = []
    for split in ("train", "valid", "test"):
        rows = parsed[split]
        if kind == "general":
            feat = _Feat(user_id=torch.tensor([uid(r[0]) for r in rows]),
                         item_id=torch.tensor([iid(r[1]) for r in rows]))
        else:
            lists = [[iid(t) for t in r[1].split()] for r in rows]
            width = max([len(x) for x in lists] + [1])
            feat = _Feat(user_id=torch.tensor([uid(r[0]) for r in rows]),
                         item_id=torch.tensor([iid(r[2]) for r in rows]),
                         item_id_list=torch.tensor([x + [0] * (width - len(x)) for x in lists]),
                         item_length=torch.tensor([len(x) for x in lists]))
        splits.append(_Split(feat))

    class Whole:
        uid_field, iid_field = "user_id", "item_id"
        user_num, item_num = len(user_tok) + 1, len(item_tok) + 1
        field2id_token = {"user_id": np.array(["[PAD]"] + list(user_tok)),
                          "item_id": np.array(["[PAD]"] + list(item_tok))}
    return Whole(), splits


@pytest.mark.parametrize("kind,cap", [("general", None), ("sequential", 4)])
def test_the_drivers_digest_of_the_loaded_files_equals_ours(ds, tmp_path, kind, cap):
    name = f"toy-{kind}"
    paths = write_atomic_files(ds, tmp_path / name, name, kind, cap)
    whole, splits = _as_recbole_loaded(paths, kind)
    loaded = driver.loaded_digest(whole, splits, kind == "sequential")
    ours = split_digest(ds, kind, cap)
    assert compare_digests(ours, loaded) == [] and driver.digest_problems(ours, loaded) == []
    assert ours["users"] == ds.n_users and ours["items"] == ds.n_items
    assert ours["valid"]["rows"] == ours["test"]["rows"] == ds.n_users
    if kind == "sequential":
        assert ours["test"]["max_history"] == cap
    # one target changed in the files -> both checks name the split
    header, rows = _parse(paths["test"])
    rows[0][-1] = str(int(rows[0][-1]) % ds.n_items + 1)
    paths["test"].write_text("\n".join([header] + ["\t".join(r) for r in rows]) + "\n")
    whole, splits = _as_recbole_loaded(paths, kind)
    loaded = driver.loaded_digest(whole, splits, kind == "sequential")
    assert [p.split(":")[0] for p in compare_digests(ours, loaded)] == ["test.sha256"]
    assert len(driver.digest_problems(ours, loaded)) == 1


def test_model_mapping_carries_our_values_to_recbole():
    over, cfg = harness.resolved_ours(harness.SPECS["sasrec"], epochs=3, max_minutes=None)
    assert over["epochs"] == 3 and cfg["hidden"] == 64 and cfg["dropout"] == 0.5   # fidelity preset
    rb = harness.SPECS["sasrec"].recbole_config(cfg, 20)
    assert (rb["hidden_size"], rb["n_layers"], rb["n_heads"], rb["inner_size"]) == (64, 2, 2, 256)
    assert (rb["hidden_dropout_prob"], rb["loss_type"], rb["MAX_ITEM_LIST_LENGTH"]) == (0.5, "CE", 20)
    assert (rb["epochs"], rb["train_batch_size"], rb["stopping_step"]) == (3, 256, 10)
    assert rb["train_neg_sample_args"] is None
    _, b4 = harness.resolved_ours(harness.SPECS["bert4rec"], None, 5)
    spec = harness.SPECS["bert4rec"]
    rb = spec.recbole_config(b4, 20)
    assert spec.cap(b4, 20) == rb["MAX_ITEM_LIST_LENGTH"] == 21
    assert rb["learner"] == "adamw" and rb["clip_grad_norm"] == {"max_norm": 1.0, "norm_type": 2}
    assert b4["max_train_minutes"] == 5
    over, mf = harness.resolved_ours(harness.SPECS["bpr"], None, None)
    assert over["reg"] == 0.0 and harness.SPECS["bpr"].recbole_config(mf, 20)["embedding_size"] == 64
    _, lg = harness.resolved_ours(harness.SPECS["lightgcn"], None, None)
    rb = harness.SPECS["lightgcn"].recbole_config(lg, 20)
    assert rb["require_pow"] is True and rb["reg_weight"] == lg["reg"] and rb["eval_step"] == 5
    _, caser = harness.resolved_ours(harness.SPECS["caser"], None, None)
    assert harness.SPECS["caser"].cap(caser, 20) == caser["L"] == 5
    with pytest.raises(SystemExit, match="unknown"):
        harness.parse_models("bpr,gru4rec")
    assert harness.parse_models("mf, SASRec") == ["bpr", "sasrec"]


def test_our_matrix_is_a_valid_runner_matrix_with_the_protocol_key(tmp_path):
    from benchmarks.matrix import expand, parse_matrix

    assert harness.ours_evaluation(True) == {"protocol": "masked"}
    spec = harness.SPECS["caser"]
    m = harness.ours_matrix("ml-100k", spec, {"epochs": 2}, seed=1, masked=False)
    cells = expand(parse_matrix(m, "parity matrix"))
    assert len(cells) == 1
    cell = cells[0]
    assert cell.resolved["evaluation"]["protocol"] == "unmasked"
    assert cell.resolved["config"]["epochs"] == 2 and cell.seed == 1
    yml = harness.recbole_yaml(spec, "gb-x", tmp_path, 1, spec.recbole_config(cell.resolved["config"], 20), 99)
    assert yml["eval_batch_size"] == 256     # rows for sequential models, scores for general ones
    bpr = harness.SPECS["bpr"]
    assert harness.recbole_yaml(bpr, "gb-x", tmp_path, 1, {}, 99)["eval_batch_size"] == 256 * 100
    assert yml["benchmark_filename"] == ["train", "valid", "test"]
    assert yml["alias_of_item_id"] == ["item_id_list"]
    assert yml["load_col"] == {"inter": ["user_id", "item_id", "item_id_list"]}
    assert yml["eval_args"]["mode"] == "full" and yml["valid_metric"] == "NDCG@10"


def _fake_recbole(masks: bool, test_ndcg: float) -> dict:
    vals = {"recall@5": 0.1, "recall@10": 0.2, "ndcg@5": 0.05, "ndcg@10": test_ndcg}
    other = {k: v / 2 for k, v in vals.items()}
    return {"recbole_version": "1.2.1", "recbole_masks_history": masks, "best_valid_result": vals,
            "test_result": vals, "own_metrics": {p: {"masked" if masks else "unmasked": vals,
                                                     "unmasked" if masks else "masked": other}
                                                 for p in ("valid", "test")},
            "agrees_with_recbole": True, "epochs_run": 7, "best_epoch": 4, "mean_epoch_seconds": 1.5,
            "process_peak_rss_mb": 500.0, "stopped": "early stopping", "data_check": "ok",
            "config": {"embedding_size": 64},
            "loaded": {"users": 3, "items": 4, "train": {"rows": 5}, "valid": {"rows": 3},
                       "test": {"rows": 3, "max_history": None}}}


def test_tables_side_by_side(ds, tmp_path):
    ours = {"valid": {"recall@10": 0.2, "ndcg@10": 0.1, "recall@5": 0.1, "ndcg@5": 0.05},
            "test": {"recall@10": 0.2, "ndcg@10": 0.096, "recall@5": 0.1, "ndcg@5": 0.05},
            "epochs_run": 9, "best_epoch": 6, "mean_epoch_seconds": 0.5, "stopped": "early stopping",
            "peak_rss_mb": 400.0, "config": {"dim": 64}}
    capped = {**_fake_recbole(False, 0.2), "stopped": "time cap (10.0 min)"}
    results = {"bpr": (harness.SPECS["bpr"], True, ours, _fake_recbole(True, 0.1)),
               "sasrec": (harness.SPECS["sasrec"], True, ours, capped),
               "hgn": (harness.SPECS["hgn"], False, {"error": "exit status 1", "log_tail": "boom"},
                       {"error": "not run"})}
    rows = harness.table_rows("toy", ds, 0, "masked", results)
    assert rows[0]["gap_test_ndcg@10"] == pytest.approx(-0.04) and rows[0]["within_5pct_or_better"] is True
    assert rows[0]["recbole_source"] == "recbole"
    # SASRec: RecBole evaluates it unmasked, so the masked figures are the driver's
    assert rows[1]["recbole_source"] == "driver" and rows[1]["recbole_test_ndcg@10"] == pytest.approx(0.1)
    assert rows[1]["within_5pct_or_better"] is True
    assert rows[2]["within_5pct_or_better"] is None and rows[2]["ours_error"] == "exit status 1"
    header = {"dataset": "toy", "users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
              "split": "loo", "max_history": 6, "seed": 0, "protocol": "masked", "recbole_version": "1.2.1",
              "command": "python -m benchmarks.parity.recbole --dataset toy"}
    harness.write_tables(tmp_path, rows, results, header)
    md = (tmp_path / "parity.md").read_text()
    assert "| mf / BPR | masked | 0.2000 / 0.2000 |" in md and "-4.0 %" in md
    assert md.count(" yes |") == 1 and " yes † |" in md and "at equal training time" in md
    assert "masked (driver)" in md and "the ours run failed" in md and "boom" in md
    assert "not matched: RecBole's BPR has no regulariser" in md
    assert "BPR ok (3 users, 4 items, train / valid / test rows 5 / 3 / 3)" in md
    csv = pd.read_csv(tmp_path / "parity.csv")
    assert list(csv["model"]) == ["bpr", "sasrec", "hgn"]
    json.dumps(rows)   # plain values only
