"""Tokenizer training survives a stop: a run resumed from its checkpoint ends exactly where an
uninterrupted one does; a checkpoint made for something else is ignored; the code-change
curve says when the codes stop changing."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from identifiers import quantizers
from identifiers.quantizers import RQVAEConfig, code_changes, train_rqvae


def _data(n=40, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, 8)).astype(np.float32)


def _cfg(**kw):
    # LETTER's losses too (CF InfoNCE, diversity with re-clustering every 3 epochs)
    return RQVAEConfig(**{"hidden": (16,), "latent_dim": 8, "n_levels": 2, "codebook_size": 6, "epochs": 12,
                          "batch_size": 16, "kmeans_iters": 5, "alpha": 0.1, "beta": 0.01,
                          "recluster_every": 3, "diversity_clusters": 2, **kw})


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    x, cf = _data()
    ref_model, ref = train_rqvae(x, _cfg(), seed=3, cf=cf, progress=False)
    ckpt = tmp_path / "rq.checkpoint.pt"
    calls = {"n": 0}
    real = quantizers.rqvae_loss

    def stop_in_epoch_8(*a, **k):           # 40 items / batch 16 = 3 steps an epoch
        calls["n"] += 1
        if calls["n"] == 7 * 3 + 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(quantizers, "rqvae_loss", stop_in_epoch_8)
    with pytest.raises(KeyboardInterrupt):
        train_rqvae(x, _cfg(), seed=3, cf=cf, progress=False, checkpoint=ckpt, checkpoint_seconds=0)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 7
    monkeypatch.setattr(quantizers, "rqvae_loss", real)
    model, stats = train_rqvae(x, _cfg(), seed=3, cf=cf, progress=False, checkpoint=ckpt, checkpoint_seconds=0)
    for k, v in _state(ref_model).items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert stats["loss_log"] == ref["loss_log"] and stats["code_curve"] == ref["code_curve"]


def test_a_checkpoint_for_another_config_is_ignored(tmp_path, caplog):
    x, cf = _data()
    ckpt = tmp_path / "c.pt"
    train_rqvae(x, _cfg(epochs=4), seed=0, cf=cf, progress=False, checkpoint=ckpt, checkpoint_seconds=0)
    ref_model, _ = train_rqvae(x, _cfg(epochs=5), seed=0, cf=cf, progress=False)
    model, stats = train_rqvae(x, _cfg(epochs=5), seed=0, cf=cf, progress=False, checkpoint=ckpt)
    assert "ignoring checkpoint" in caplog.text
    assert len(stats["loss_log"]["total"]) == 5
    for k, v in _state(ref_model).items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_code_curve_counts_changed_items():
    x, cf = _data()
    model, stats = train_rqvae(x, _cfg(epochs=12), seed=0, cf=cf, progress=False)
    curve = stats["code_curve"]
    assert [p["epoch"] for p in curve] == list(range(1, 13))     # fewer epochs than CURVE_POINTS
    assert curve[0]["changed"] is None and all(0 <= p["changed"] <= 1 for p in curve[1:])
    assert any(p["changed"] > 0 for p in curve[1:])          # codes move while it learns
    assert all(set(p) >= {"epoch", "changed", "total", "recon"} for p in curve)
    assert curve[-1]["total"] == stats["final_losses"]["total"]
    assert curve[0]["changed_levels"] is None
    assert all(len(p["changed_levels"]) == 2 and max(p["changed_levels"]) <= p["changed"] for p in curve[1:])


def test_code_changes_per_level():
    prev = np.array([[1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8, 9]])
    now = np.array([[1, 2, 3], [1, 2, 0], [0, 5, 0], [7, 8, 9]])
    assert code_changes(now, prev) == {"changed": 0.5, "changed_levels": [0.25, 0.0, 0.5]}
    assert code_changes(now, None) == {"changed": None, "changed_levels": None}


def test_load_or_build_keeps_the_checkpoint_beside_the_cache_and_removes_it(tmp_path):
    from benchmarks.data.toy import toy_dataset
    from benchmarks.features import FeatureStore
    from benchmarks.registry import IDENTIFIERS
    from identifiers.base import identifier_cache_dir, load_or_build

    ds = toy_dataset()
    cls = IDENTIFIERS.get("tiger")
    cfg = cls.Config(**cls.smoke_config)
    ids = load_or_build("tiger", cfg, ds, FeatureStore(ds, tmp_path / "c", progress=False), 0,
                        tmp_path / "cache", progress=False)
    target = identifier_cache_dir("tiger", cfg, ds, 0, tmp_path / "cache")
    assert (target / "meta.json").is_file()
    assert not target.with_name(target.name + ".checkpoint.pt").exists()
    assert ids.stats["code_curve"][-1]["epoch"] == cfg.epochs


def test_a_snapshot_reads_an_unfinished_run_without_training_or_caching(tmp_path, monkeypatch):
    """``tokenize(snapshot=True)`` on a run stopped in its 8th of 30 epochs: the identifiers of
    the checkpoint's model (the codes a resumed-then-stopped run would hold), its epoch in
    config.json, nothing written to the cache, the checkpoint left for the run to resume."""
    import json

    from benchmarks.data.catalog import load_dataset
    from benchmarks.data.toy import write_toy_recbole
    from benchmarks.features import FeatureStore
    from benchmarks.tokenize import tokenize
    from identifiers.base import ItemIdentifiers, checkpoint_path, identifier_cache_dir, snapshot_identifiers
    from identifiers.quantizers import SMOKE
    from identifiers.tiger import TigerConfig

    entry = write_toy_recbole(tmp_path / "data")
    with pytest.raises(FileNotFoundError, match=r"checkpoint\.pt: no tokenizer checkpoint"):
        tokenize(entry, "tiger", overrides=dict(SMOKE), output=tmp_path / "none", progress=False, snapshot=True)
    calls = {"n": 0}
    real = quantizers.rqvae_loss

    def stop_in_epoch_8(*a, **k):            # the toy's 30 items in one batch: a step an epoch
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(quantizers, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(quantizers, "rqvae_loss", stop_in_epoch_8)
    with pytest.raises(KeyboardInterrupt):
        tokenize(entry, "tiger", overrides=dict(SMOKE), output=tmp_path / "run", progress=False)
    monkeypatch.setattr(quantizers, "rqvae_loss", real)
    out = tokenize(entry, "tiger", overrides=dict(SMOKE), output=tmp_path / "snap", progress=False, snapshot=True)
    snap = json.loads((out / "config.json").read_text())["snapshot"]
    assert snap["epoch"] == 7 and snap["of_epochs"] == SMOKE["epochs"]
    assert snap["since_last_point"]["from_epoch"] == 7 and snap["since_last_point"]["changed"] == 0.0
    for f in ("index.json", "stats.csv", "code_curve.json", "code_frequency.png"):
        assert (out / f).is_file(), f
    assert [p["epoch"] for p in json.loads((out / "code_curve.json").read_text())] == list(range(1, 8))
    cfg = TigerConfig(**SMOKE)
    ds = load_dataset(entry)
    cache = Path(os.environ["GENREC_BENCH_CACHE"])
    target = identifier_cache_dir("tiger", cfg, ds, 0, cache)
    assert checkpoint_path(target).is_file() and not ItemIdentifiers.saved_in(target)
    # the written identifiers are the checkpoint model's, read again the same
    ids = snapshot_identifiers("tiger", cfg, ds, FeatureStore(ds, cache, progress=False), 0, cache, progress=False)
    assert ItemIdentifiers.load(out, ds.item_ids).tokens == ids.tokens
    # a scheme without a training checkpoint says so
    with pytest.raises(ValueError, match="keeps no training checkpoint"):
        tokenize(entry, "p5-cid", overrides={"n_clusters": 3, "max_leaf": 8}, output=tmp_path / "x",
                 progress=False, snapshot=True)


def test_assignment_margins_are_the_relative_gap_to_the_second_nearest_code():
    book = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    r = torch.tensor([[0.9, 0.0], [0.0, 1.0]])     # d = (0.81, 1.21, 16.81), (1, 5, 9)
    m = quantizers.assignment_margins(r, book)
    assert torch.allclose(m, torch.tensor([(1.21 - 0.81) / 0.81, (5.0 - 1.0) / 1.0]))
