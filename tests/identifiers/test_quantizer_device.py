"""The tokenizers on the cell's device: the RQ-VAE, its k-means and Sinkhorn, LETTER's cluster
tables and RQ-KMeans take the device the scheme gets from the FeatureStore; their host reads
do not grow with the optimiser steps (the losses are summed on the device and read per epoch
at most); the CPU build is deterministic; on a GPU (where there is one) the build runs there
and its steps never wait on the host."""

import sys

import numpy as np
import pytest
import torch

from benchmarks.data.toy import toy_dataset
from benchmarks.features import FeatureStore
from identifiers import quantizers, rqkmeans
from identifiers.base import identifier_cache_dir, load_or_build
from identifiers.letter import LetterConfig
from identifiers.quantizers import encode_items, train_rqvae

N, DIM = 96, 24


def _inputs(latent: int):
    rng = np.random.default_rng(0)
    return rng.normal(size=(N, DIM)).astype(np.float32), rng.normal(size=(N, latent)).astype(np.float32)


def _letter(batch_size: int, epochs: int = 4) -> LetterConfig:
    """LETTER's loss in full (CF term, diversity clusters, a Sinkhorn level), tiny."""
    return LetterConfig(hidden=(16,), latent_dim=8, codebook_size=8, epochs=epochs, batch_size=batch_size,
                        kmeans_init=False, diversity_clusters=2, recluster_every=2)


class _HostReads:
    """Counts the tensor-to-host conversions (the host waits on the device at each), but not
    the optimiser's reads of its step counters (host tensors on every device)."""

    NAMES = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, **k):
                caller = sys._getframe(1).f_globals.get("__name__", "")
                self.count += not caller.startswith("torch.optim")
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("batch_size", [N, N // 6])
def test_host_reads_do_not_grow_with_the_steps(monkeypatch, batch_size):
    """One step per epoch or six: the same number of host reads (a per-step ``.item()`` or a
    per-step ``if tensor`` would add five per epoch)."""
    x, cf = _inputs(8)
    counts = {}
    for bs in (N, batch_size):
        with monkeypatch.context() as m:
            reads = _HostReads(m)
            train_rqvae(x, _letter(bs), 0, cf=cf, progress=False)
            counts[bs] = reads.count
    assert counts[batch_size] == counts[N]


def test_the_cpu_build_is_deterministic():
    x, cf = _inputs(8)
    a_model, a = train_rqvae(x, _letter(16), 3, cf=cf, progress=False, device="cpu")
    b_model, b = train_rqvae(x, _letter(16), 3, cf=cf, progress=False)
    assert a["loss_log"] == b["loss_log"] and a["code_curve"] == b["code_curve"]
    assert np.array_equal(encode_items(a_model, x)["codes"], encode_items(b_model, x)["codes"])
    assert a_model.codebooks.device.type == "cpu"


class _DeviceFeatures(FeatureStore):
    """A FeatureStore of a cell on ``device`` with random text embeddings."""

    def text_embeddings(self, template=None, encoder=None, batch_size=256):
        rng = np.random.default_rng(0)
        return np.r_[np.zeros((1, DIM)), rng.normal(size=(self.ds.n_items, DIM))].astype(np.float32)


def test_the_schemes_train_on_the_feature_stores_device(monkeypatch, tmp_path):
    """TIGER's RQ-VAE and RQ-KMeans get the cell's device (here a made-up ``cuda:1``, the
    training replaced by a recorder that trains on the CPU), and a GPU's build has a cache entry
    of its own while the CPU's key is unchanged."""
    ds = toy_dataset()
    seen = []
    real_train, real_kmeans = quantizers.train_rqvae, rqkmeans.residual_kmeans

    def train(*a, device="cpu", **k):
        seen.append(("rqvae", str(device)))
        return real_train(*a, **k)

    def kmeans(x, cfg, seed, device="cpu"):
        seen.append(("rq-kmeans", str(device)))
        return real_kmeans(x, cfg, seed)

    monkeypatch.setattr(quantizers, "train_rqvae", train)
    monkeypatch.setattr(rqkmeans, "residual_kmeans", kmeans)
    store = _DeviceFeatures(ds, tmp_path / "f", device="cuda:1", progress=False)
    from benchmarks.config import build_config
    from benchmarks.registry import IDENTIFIERS
    for name in ("tiger", "rq-kmeans"):
        cls = IDENTIFIERS.get(name)
        load_or_build(name, build_config(cls.Config, dict(cls.smoke_config)), ds, store, 0, tmp_path / "c",
                      progress=False)
    assert seen == [("rqvae", "cuda:1"), ("rq-kmeans", "cuda:1")]
    cfg = IDENTIFIERS.get("tiger").Config()
    plain = identifier_cache_dir("tiger", cfg, ds, 0, tmp_path)
    assert identifier_cache_dir("tiger", cfg, ds, 0, tmp_path, "cpu") == plain
    assert identifier_cache_dir("tiger", cfg, ds, 0, tmp_path, "cuda:1") != plain
    assert (identifier_cache_dir("tiger", cfg, ds, 0, tmp_path, "cuda:0")
            == identifier_cache_dir("tiger", cfg, ds, 0, tmp_path, "cuda:1"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_the_build_runs_there_without_per_step_syncs():
    """CUDA's sync counter: the syncs of a run do not grow with its steps, the model and codes
    come from the GPU, and two runs agree (deterministic kernels are on)."""
    x, cf = _inputs(8)
    counts, codes = {}, []
    for bs in (N, N // 6, N // 6):
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with pytest.warns(UserWarning) as record:
                model, _ = train_rqvae(x, _letter(bs), 0, cf=cf, progress=False, device="cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        counts[bs] = sum("synchroniz" in str(w.message) for w in record)
        assert model.codebooks.device.type == "cuda"
        codes.append(encode_items(model, x)["codes"])
    assert counts[N // 6] == counts[N]
    assert np.array_equal(codes[1], codes[2])
