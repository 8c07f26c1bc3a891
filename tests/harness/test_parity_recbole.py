"""The pure parts of the RecBole parity harness (no RecBole needed): the atomic-file writer,
the digest both sides compute, the config mapping and the tables."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmarks.data.formats.recbole import read_recbole
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import protocols
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


def test_a_labelled_entry_is_our_side_of_the_same_recbole_model():
    """``hgn-ce``: our fidelity entry of that label (method hgn, RecBole's loss) against
    RecBole's HGN, whose config equals the ``hgn`` row's (so RecBole runs it once)."""
    ce, plain = harness.SPECS["hgn-ce"], harness.SPECS["hgn"]
    assert (ce.ours, ce.tag, plain.tag) == ("hgn", "hgn-ce", "hgn")
    over, cfg = harness.resolved_ours(ce, None, None)
    assert (cfg["loss"], cfg["T"], cfg["weight_decay"]) == ("ce", 1, 0.0)
    _, plain_cfg = harness.resolved_ours(plain, None, None)
    assert plain_cfg["loss"] == "bpr"
    assert ce.recbole_config(cfg, 20) == plain.recbole_config(plain_cfg, 20)
    m = harness.ours_matrix("yelp", ce, over, 0, "masked")
    assert m["methods"] == [{"name": "hgn", "label": "hgn-ce", "config": over}]


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

    assert harness.ours_evaluation("masked") == {"protocol": "masked"}
    with pytest.raises(ConfigError, match="unknown 'recbole'"):
        harness.ours_evaluation("recbole")
    assert harness.model_protocol("general", "recbole") == "masked-keep-target"
    assert harness.model_protocol("sequential", "recbole") == "unmasked"
    assert harness.model_protocol("general", "masked") == "masked"
    # the driver (RecBole's venv: it cannot import the suite) spells the suite's protocol names
    assert set(driver.RULES) == set(protocols.PROTOCOLS)
    assert set(harness.PROTOCOL_CHOICES) == {"recbole", *protocols.PROTOCOLS}
    spec = harness.SPECS["caser"]
    m = harness.ours_matrix("ml-100k", spec, {"epochs": 2}, seed=1, protocol="unmasked")
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


def _fake_recbole(sequential: bool, test_ndcg: float, legacy: bool = False) -> dict:
    """A driver result: RecBole's own figures under its rule, the driver's under every rule
    (``legacy``: as written before the driver knew ``masked``, two rules under old names)."""
    vals = {"recall@5": 0.1, "recall@10": 0.2, "ndcg@5": 0.05, "ndcg@10": test_ndcg}
    other = {k: v / 2 for k, v in vals.items()}
    keep = {k: v * 2 for k, v in vals.items()}
    own_rule = driver.recbole_rule(sequential)
    rules = {"unmasked": other, "masked": other, "masked-keep-target": keep} | {own_rule: vals}
    base = {"recbole_version": "1.2.1", "best_valid_result": vals, "test_result": vals,
            "agrees_with_recbole": True, "epochs_run": 7, "best_epoch": 4, "mean_epoch_seconds": 1.5,
            "process_peak_rss_mb": 500.0, "stopped": "early stopping", "data_check": "ok",
            "config": {"embedding_size": 64},
            "loaded": {"users": 3, "items": 4, "train": {"rows": 5}, "valid": {"rows": 3},
                       "test": {"rows": 3, "max_history": None}}}
    if legacy:
        old = {"unmasked": rules["unmasked"], "masked": rules["masked-keep-target"]}
        return base | {"recbole_masks_history": not sequential,
                       "own_metrics": {p: dict(old) for p in ("valid", "test")}}
    return base | {"recbole_protocol": own_rule, "own_metrics_rules": list(driver.RULES),
                   "own_metrics": {p: {**rules, "rows": 3, "recbole_mask_mismatches": 0}
                                   for p in ("valid", "test")}}


def test_recbole_side_picks_the_rule_of_the_protocol_and_reads_old_results():
    new, old = _fake_recbole(False, 0.1), _fake_recbole(False, 0.1, legacy=True)
    # BPR: RecBole's own rule is keep-target
    assert harness.recbole_side(new, "masked-keep-target", 5)[2:] == ("recbole", "masked-keep-target")
    assert harness.recbole_side(new, "masked", 5)[2:] == ("driver", "masked")
    assert harness.recbole_side(new, "masked", 5)[1]["ndcg@10"] == pytest.approx(0.05)
    # an old result: its `masked` was keep-target; ours `masked` is missing where targets repeat ...
    assert harness.recbole_rules(old)[0] == "masked-keep-target"
    assert harness.recbole_side(old, "masked", 5) == ({}, {}, "missing", None)
    assert harness.protocol_rule(old, "masked", 5) is None
    # ... and stands for it where none does (the two rules rank identically)
    assert harness.recbole_side(old, "masked", 0)[2:] == ("recbole", "masked-keep-target")
    seq_old = _fake_recbole(True, 0.1, legacy=True)
    v, t, src, rule = harness.recbole_side(seq_old, "masked-keep-target", 5)
    assert (src, rule) == ("driver", "masked-keep-target") and t["ndcg@10"] == pytest.approx(0.2)
    assert harness.recbole_side(seq_old, "unmasked", 5)[2] == "recbole"


def test_reevaluation_without_a_saved_model_says_what_to_do(tmp_path):
    old = {**_fake_recbole(False, 0.1, legacy=True), "harness_key": {}}
    res = tmp_path / "recbole" / "BPR.json"
    with pytest.raises(FileNotFoundError, match="predates the driver's `masked` rule.*rerun the model"):
        harness.reevaluate(harness.SPECS["bpr"], None, tmp_path / "work", ["--out", str(tmp_path / "x.json")],
                           old, res)


class _Scores:
    """A RecBole model as far as own_metrics reads it: fixed scores per user row."""

    def __init__(self, table):
        self.table = torch.tensor(table, dtype=torch.float32)
        self.n_items = self.table.shape[1]

    def eval(self):
        return self

    def full_sort_predict(self, interaction):
        return self.table[interaction["user_id"]].clone()


class _Batch(dict):
    def to(self, device):
        return self


class _Loader:
    def __init__(self, batches):
        self.batches = batches
        self._dataset = _Split({})

    def __iter__(self):
        return iter(self.batches)


def test_driver_histories_and_every_masking_rule_on_a_hand_made_case():
    """Users 1, 2 (id 0 = [PAD]); items 1..5. General layout: train 1 -> {1, 2}, 2 -> {3};
    valid 1 -> 4, 2 -> 1; test 1 -> 2 (a repeat), 2 -> 5."""
    t = torch.tensor
    train = _Split(_Feat(user_id=t([1, 1, 2]), item_id=t([1, 2, 3])))
    valid = _Split(_Feat(user_id=t([1, 2]), item_id=t([4, 1])))
    test = _Split(_Feat(user_id=t([1, 2]), item_id=t([2, 5])))
    h = driver._histories((train, valid, test), 3, sequential=False)
    assert h["valid"][1:] == [{1, 2}, {3}] and h["test"][1:] == [{1, 2, 4}, {1, 3}]
    # user 1 prefers 2 > 1 > 4 > 5 > 3; user 2 prefers 1 > 3 > 5 > 2 > 4
    model = _Scores([[0] * 6, [0, 4, 5, 0, 3, 2], [0, 5, 1, 4, 0, 3]])
    # RecBole's history index for the test phase: used - positives (user 1 keeps item 2)
    hist_index = (t([0, 0, 1, 1]), t([1, 4, 1, 3]))
    loader = _Loader([(_Batch(user_id=t([1, 2])), hist_index, t([0, 1]), t([2, 5]))])
    m = driver.own_metrics(model, loader, [1, 2], h["test"], "cpu")
    # top-1: unmasked 2 (hit) / 1 (miss); masked: 5 / 5 (user 1's repeat target removed);
    # keep-target: 2 / 5
    assert m["unmasked"]["recall@1"] == pytest.approx(0.5)
    assert m["masked"]["recall@1"] == pytest.approx(0.5)
    assert m["masked-keep-target"]["recall@1"] == pytest.approx(1.0)
    assert m["recbole_mask_mismatches"] == 0 and m["rows"] == 2
    wrong = _Loader([(_Batch(user_id=t([1, 2])), (t([0]), t([1])), t([0, 1]), t([2, 5]))])
    assert driver.own_metrics(model, wrong, [1], h["test"], "cpu")["recbole_mask_mismatches"] == 3


def test_tables_side_by_side(ds, tmp_path):
    ours = {"valid": {"recall@10": 0.2, "ndcg@10": 0.1, "recall@5": 0.1, "ndcg@5": 0.05},
            "test": {"recall@10": 0.2, "ndcg@10": 0.096, "recall@5": 0.1, "ndcg@5": 0.05},
            "epochs_run": 9, "best_epoch": 6, "mean_epoch_seconds": 0.5, "stopped": "early stopping",
            "peak_rss_mb": 400.0, "config": {"dim": 64}}
    capped = {**_fake_recbole(True, 0.2), "stopped": "time cap (10.0 min)"}
    results = {("bpr", "masked"): (harness.SPECS["bpr"], "masked", ours, _fake_recbole(False, 0.1, legacy=True)),
               ("sasrec", "masked"): (harness.SPECS["sasrec"], "masked", ours, capped),
               ("hgn", "unmasked"): (harness.SPECS["hgn"], "unmasked", {"error": "exit status 1", "log_tail": "boom"},
                                     {"error": "not run"})}
    rows = harness.table_rows("toy", ds, 0, results, repeats=0)
    assert rows[0]["gap_test_ndcg@10"] == pytest.approx(-0.04) and rows[0]["within_5pct_or_better"] is True
    # BPR: RecBole's own keep-target figures stand for `masked` (no target repeats here)
    assert rows[0]["recbole_source"] == "recbole" and rows[0]["recbole_rule"] == "masked-keep-target"
    # SASRec: RecBole evaluates it unmasked, so the masked figures are the driver's
    assert rows[1]["recbole_source"] == "driver" and rows[1]["recbole_test_ndcg@10"] == pytest.approx(0.1)
    assert rows[1]["within_5pct_or_better"] is True
    assert rows[2]["within_5pct_or_better"] is None and rows[2]["ours_error"] == "exit status 1"
    header = {"dataset": "toy", "users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions,
              "split": "loo", "max_history": 6, "seed": 0, "protocol": "masked", "recbole_version": "1.2.1",
              "repeats": 0, "command": "python -m benchmarks.parity.recbole --dataset toy"}
    harness.write_tables(tmp_path, rows, results, header)
    md = (tmp_path / "parity.md").read_text()
    assert "| mf / BPR | masked (RB: masked-keep-target, the same ranking here) | 0.2000 / 0.2000 |" in md
    assert "-4.0 %" in md and "so `masked` and `masked-keep-target` rank identically" in md
    assert md.count(" yes |") == 1 and " yes † |" in md and "at equal training time" in md
    assert "masked (driver; RB early-stopped under `unmasked`)" in md
    assert "the ours run failed" in md and "boom" in md
    assert "| SASRec (`unmasked`) | masked-keep-target | 0.4000 |" in md     # the other rules of each model
    # where targets repeat, the old BPR result has no `masked` figure: the row says so
    rows = harness.table_rows("toy", ds, 0, results, repeats=2)
    assert rows[0]["recbole_source"] == "missing" and rows[0]["within_5pct_or_better"] is None
    assert "not matched: RecBole's BPR has no regulariser" in md
    assert "BPR ok (3 users, 4 items, train / valid / test rows 5 / 3 / 3)" in md
    csv = pd.read_csv(tmp_path / "parity.csv")
    assert list(csv["model"]) == ["bpr", "sasrec", "hgn"]
    json.dumps(rows)   # plain values only


def test_several_protocols_in_one_parity_folder(tmp_path):
    """--protocol masked,unmasked: one matrix and one cell of ours per protocol, found again by
    --table-only (an older folder's single ours-<method>.yaml where its protocol matches);
    per-cell process stats, an older one-cell process.json read as before."""
    import argparse

    from benchmarks.matrix import expand, load_matrix

    assert harness.parse_protocols("masked, unmasked,masked") == ["masked", "unmasked"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown"):
        harness.parse_protocols("masked,rebole")
    spec = harness.SPECS["caser"]
    out = tmp_path / "par"
    cells = {}
    for proto in ("masked", "unmasked"):
        path = harness.ours_matrix_path(out, spec, proto)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(harness.ours_matrix("ml-100k", spec, {"epochs": 2}, 0, proto)))
        cell = expand(load_matrix(path))[0]
        cells[proto] = cell
        d = out / "ours" / spec.ours / cell.relpath
        d.mkdir(parents=True)
        value = 0.1 if proto == "masked" else 0.2
        pd.DataFrame([{"split": s, "subset": "all", "metric": m, "k": 10, "value": value}
                      for s in ("valid", "test") for m in ("recall", "ndcg")]).to_csv(d / "metrics.csv", index=False)
        (d / "train_log.json").write_text(json.dumps({"epochs": [{}, {}], "best_epoch": 2, "mean_epoch_seconds": 1.0,
                                                      "stopped": "max epochs", "train_seconds": 2.0}))
        (d / "config.json").write_text(json.dumps({"config": {"epochs": 2}}))
        np.savez(d / "per_user.npz", **{"test/all/ndcg@10": np.array([value, value])})
    assert cells["masked"].hash != cells["unmasked"].hash
    run_dir = out / "ours" / spec.ours
    (run_dir / "process.json").write_text(json.dumps({"hash": cells["masked"].hash, "process_peak_rss_mb": 10.0}))
    assert harness._process_stats(run_dir, cells["masked"].hash)["process_peak_rss_mb"] == 10.0
    harness._save_process_stats(run_dir, cells["unmasked"].hash, {"process_peak_rss_mb": 20.0})
    got = {p: harness.find_ours(out, spec, p) for p in ("masked", "unmasked", "masked-keep-target")}
    assert got["masked"]["test"]["ndcg@10"] == 0.1 and got["masked"]["peak_rss_mb"] == 10.0
    assert got["unmasked"]["test"]["ndcg@10"] == 0.2 and got["unmasked"]["peak_rss_mb"] == 20.0
    assert got["masked-keep-target"] == {"error": "not run"}
    # an older folder: one ours-caser.yaml, its protocol masked
    harness.ours_matrix_path(out, spec, "masked").rename(out / "configs" / "ours-caser.yaml")
    assert harness.find_ours(out, spec, "masked")["test"]["ndcg@10"] == 0.1
    # both rows of one model in one table; RecBole's other rules listed once
    rb = _fake_recbole(True, 0.2)
    results = {("caser", p): (spec, p, got[p], rb) for p in ("masked", "unmasked")}
    rows = harness.table_rows("toy", toy_dataset(max_history=6), 0, results, repeats=3)
    assert [(r["protocol"], r["recbole_source"]) for r in rows] == [("masked", "driver"), ("unmasked", "recbole")]
    header = {"dataset": "toy", "users": 1, "items": 1, "interactions": 1, "split": "loo", "max_history": 6,
              "seed": 0, "protocol": "masked,unmasked", "recbole_version": "1.2.1", "repeats": 3,
              "command": "python -m benchmarks.parity.recbole --dataset toy --protocol masked,unmasked"}
    harness.write_tables(out, rows, results, header)
    md = (out / "parity.md").read_text()
    assert "Protocol `masked`: every model; `unmasked`: every model." in md
    assert md.count("| Caser (`unmasked`) | masked-keep-target |") == 1
    assert "### caser / Caser (`masked`)" in md and "### caser / Caser (`unmasked`)" in md


def test_recbole_can_early_stop_under_the_rows_protocol(tmp_path):
    """--recbole-early-stopping protocol: a RecBole run of its own wherever the row's rule is
    not RecBole's (its files named after the rule, the rule in its key and on its command
    line); the driver then hands RecBole's evaluation that rule's history index."""
    rule = harness.recbole_evaluation_rule
    assert rule("general", "masked", "own", 5) is None
    assert rule("general", "masked", "protocol", 5) == "masked"
    assert rule("general", "masked", "protocol", 0) is None          # the same ranking as keep-target
    assert rule("general", "masked-keep-target", "protocol", 5) is None
    assert rule("sequential", "unmasked", "protocol", 5) is None
    assert rule("sequential", "masked", "protocol", 0) == "masked"
    spec = harness.SPECS["caser"]
    assert harness.recbole_run_name(spec, None) == "Caser"
    assert harness.recbole_run_name(spec, "masked") == "Caser-masked"
    yml = harness.recbole_yaml(spec, "gb-x", tmp_path, 0, {}, 9, "Caser-masked")
    assert yml["checkpoint_dir"] == str(tmp_path / "saved" / "Caser-masked")

    # the driver's side: users 1, 2; test histories {1, 2, 4} and {1, 3}; targets 2 (a repeat), 5
    t = torch.tensor
    histories = [set(), {1, 2, 4}, {1, 3}]

    class Loader:
        _dataset = _Split({})

        def collate_fn(self, index):
            return _Batch(user_id=t([1, 2])), None, t([0, 1]), t([2, 5])

    got = {}
    for r in driver.RULES:
        loader = Loader()
        driver.apply_rule(loader, histories, r)
        got[r] = loader.collate_fn([0, 1])[1]
    assert got["unmasked"] is None
    assert sorted(zip(*(x.tolist() for x in got["masked"]))) == [(0, 1), (0, 2), (0, 4), (1, 1), (1, 3)]
    assert sorted(zip(*(x.tolist() for x in got["masked-keep-target"]))) == [(0, 1), (0, 4), (1, 1), (1, 3)]
    # own_metrics checks the index it is given against the rule it implements
    model = _Scores([[0] * 6, [0, 4, 5, 0, 3, 2], [0, 5, 1, 4, 0, 3]])
    batch = (_Batch(user_id=t([1, 2])), got["masked"], t([0, 1]), t([2, 5]))
    m = driver.own_metrics(model, _Loader([batch]), [1], histories, "cpu", loader_rule="masked")
    assert m["recbole_mask_mismatches"] == 0
    assert driver.own_metrics(model, _Loader([batch]), [1], histories, "cpu")["recbole_mask_mismatches"] == 1


def _fake_cell(d, value, config=None):
    """A finished cell of the suite's runner in ``d`` (the files read_ours reads)."""
    d.mkdir(parents=True)
    pd.DataFrame([{"split": s, "subset": "all", "metric": m, "k": 10, "value": value}
                  for s in ("valid", "test") for m in ("recall", "ndcg")]).to_csv(d / "metrics.csv", index=False)
    (d / "train_log.json").write_text(json.dumps({"epochs": [{}], "best_epoch": 1, "mean_epoch_seconds": 1.0,
                                                  "stopped": "max epochs", "train_seconds": 1.0}))
    (d / "config.json").write_text(json.dumps(config))
    np.savez(d / "per_user.npz", **{"test/all/ndcg@10": np.array([value, value])})


def test_our_side_is_the_fidelity_cell_and_is_taken_from_a_fidelity_folder(tmp_path, monkeypatch):
    """The parity matrix evaluates as the fidelity preset does, so our side of a parity row
    and the fidelity run of the same entry are one cell (one hash); ``--ours-from`` copies that
    finished cell instead of training again, and refuses a folder that is not a runner's."""
    import argparse

    from benchmarks.matrix import expand, load_matrix, parse_matrix

    fid = load_matrix(preset="fidelity")
    spec = harness.SPECS["hgn-ce"]
    over, _ = harness.resolved_ours(spec, None, None)
    m = harness.ours_matrix("yelp", spec, over, 0, "unmasked")
    assert m["evaluation"] == {**fid.evaluation, "protocol": "unmasked"}
    cell = expand(parse_matrix(m, "parity matrix"))[0]
    fidelity_cell = next(c for c in expand(fid) if c.method.label == "hgn-ce" and c.dataset.name == "yelp")
    assert fidelity_cell.resolved["config"] == cell.resolved["config"]
    # the fidelity matrix under --protocol unmasked gives the parity cell's hash
    fid_unmasked = parse_matrix({**yaml.safe_load((harness.ROOT / "benchmarks/presets/fidelity.yaml").read_text()),
                                 "evaluation": m["evaluation"]}, "fidelity")
    assert cell.hash in {c.hash for c in expand(fid_unmasked) if c.method.label == "hgn-ce"}

    assert harness.reuse_ours(cell, []) is None
    with pytest.raises(FileNotFoundError, match="--ours-from .*nowhere: no such folder"):
        harness.reuse_ours(cell, [str(tmp_path / "nowhere")])
    empty, fidelity = tmp_path / "empty", tmp_path / "fidelity"
    empty.mkdir()
    resolved = json.loads(json.dumps(cell.resolved))
    _fake_cell(fidelity / cell.relpath, 0.3, resolved)
    assert harness.reuse_ours(cell, [str(empty), str(fidelity)]) == fidelity / cell.relpath
    bad = tmp_path / "bad"
    _fake_cell(bad / cell.relpath, 0.3, {**resolved, "seed": 7})
    with pytest.raises(ValueError, match="config.json: differs from the resolved config"):
        harness.reuse_ours(cell, [str(bad)])

    # run_ours copies it and runs nothing; the table says where it came from
    def no_run(*a, **k):
        raise AssertionError("our side was run although a finished cell was given")

    monkeypatch.setattr(harness, "_run", no_run)
    out = tmp_path / "par"
    args = argparse.Namespace(dataset="yelp", seed=0, threads=1, ours_from=[str(fidelity)])
    got = harness.run_ours(spec, args, out, over, ["unmasked"])["unmasked"]
    assert got["test"]["ndcg@10"] == 0.3 and got["peak_rss_mb"] is None
    assert got["reused_from"] == str(fidelity / cell.relpath)
    assert harness.find_ours(out, spec, "unmasked")["test"]["ndcg@10"] == 0.3
    rows = harness.table_rows("yelp", toy_dataset(max_history=6), 0,
                              {("hgn-ce", "unmasked"): (spec, "unmasked", got, _fake_recbole(True, 0.3))}, repeats=3)
    header = {"dataset": "yelp", "users": 1, "items": 1, "interactions": 1, "split": "loo", "max_history": 6,
              "seed": 0, "protocol": "unmasked", "recbole_version": "1.2.1", "repeats": 3, "command": "x"}
    harness.write_tables(out, rows, {("hgn-ce", "unmasked"): (spec, "unmasked", got, _fake_recbole(True, 0.3))},
                         header)
    assert f"copied from `{fidelity / cell.relpath}`" in (out / "parity.md").read_text()


def test_our_side_trains_once_for_all_its_protocols(tmp_path, monkeypatch):
    """Two protocols of one model: ONE runner process with the protocol list (the runner's
    shared training writes a cell per protocol, with the hashes of one run per protocol); a
    protocol whose cell is already there is left out of it."""
    import argparse

    from benchmarks.matrix import expand, load_matrix

    calls = []

    def fake_run(cmd, *, cwd, env, logfile):
        matrix, run_dir = load_matrix(cmd[3]), Path(cmd[4])
        calls.append(matrix.evaluation["protocol"])
        for cell in expand(matrix):
            value = 0.1 if cell.resolved["evaluation"]["protocol"] == "masked" else 0.2
            _fake_cell(run_dir / cell.relpath, value, json.loads(json.dumps(cell.resolved)))
        return 0, 12.0, 345.0

    monkeypatch.setattr(harness, "_run", fake_run)
    spec = harness.SPECS["caser"]
    over, _ = harness.resolved_ours(spec, 2, None)
    args = argparse.Namespace(dataset="ml-100k", seed=0, threads=1, ours_from=None)
    out = tmp_path / "par"
    got = harness.run_ours(spec, args, out, over, ["masked", "unmasked"])
    assert calls == [["masked", "unmasked"]]
    assert (got["masked"]["test"]["ndcg@10"], got["unmasked"]["test"]["ndcg@10"]) == (0.1, 0.2)
    assert got["masked"]["one_training_for"] == ["masked", "unmasked"] and got["unmasked"]["peak_rss_mb"] == 345.0
    # the per-protocol matrices find the same cells (--table-only)
    assert harness.find_ours(out, spec, "unmasked")["test"]["ndcg@10"] == 0.2
    # a third protocol: only it runs
    got = harness.run_ours(spec, args, out, over, ["masked", "unmasked", "masked-keep-target"])
    assert calls[1:] == ["masked-keep-target"] and got["masked-keep-target"]["one_training_for"] is None
    # a runner that fails after writing one protocol's cell: that row stands, the other says why
    calls.clear()

    def failing_run(cmd, *, cwd, env, logfile):
        matrix, run_dir = load_matrix(cmd[3]), Path(cmd[4])
        cell = expand(matrix)[0]
        _fake_cell(run_dir / cell.relpath, 0.3, json.loads(json.dumps(cell.resolved)))
        logfile.parent.mkdir(parents=True, exist_ok=True)
        logfile.write_text("Traceback: killed")
        return 1, 5.0, 100.0

    monkeypatch.setattr(harness, "_run", failing_run)
    over3, _ = harness.resolved_ours(spec, 3, None)
    got = harness.run_ours(spec, args, out, over3, ["masked", "unmasked"])
    assert got["masked"]["test"]["ndcg@10"] == 0.3
    assert got["unmasked"]["error"] == "exit status 1" and "killed" in got["unmasked"]["log_tail"]
