"""benchmarks.compute: a training step's matrix-multiply FLOPs, counted on real modules and on
the meta device (the estimate's), the same figure both ways."""

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.compute import GPU_PEAK_TFLOPS, GPU_UTILISATION, count_flops, projected_compute, train_step_flops
from benchmarks.registry import METHODS


def test_a_matrix_product_counts_two_m_n_k_and_its_backward_what_autograd_computes():
    m, k, n = 8, 16, 4
    lin = nn.Linear(k, n, bias=False)
    x = torch.randn(m, k)
    assert count_flops(lambda: lin(x)) == 2 * m * n * k
    # backward: the weight's gradient only (x needs none), then also the input's
    assert count_flops(lambda: lin(x).sum().backward()) == 4 * m * n * k
    x.requires_grad_(True)
    assert count_flops(lambda: lin(x).sum().backward()) == 6 * m * n * k
    lin.weight.requires_grad_(False)          # a frozen weight (LoRA's base): no weight gradient
    assert count_flops(lambda: lin(x).sum().backward()) == 4 * m * n * k


def _model(name: str, meta: bool, extra: dict | None = None):
    cls = METHODS.get(name)
    ctx = build_context(toy_dataset(), needs=cls.needs, progress=False, meta=meta)
    return cls(build_config(cls.Config, {**cls.smoke_config, **(extra or {})}), ctx)


@pytest.mark.parametrize("name", ["tiger", "p5-tid", "lcrec", "bigrec", "setrec-t5", "setrec-causal"])
def test_the_meta_device_count_equals_the_real_modules(name):
    """The estimate counts a module built on the meta device with the real batch (data-dependent
    steps on the batch run on its values): the same FLOPs as the real module's step."""
    real, meta = _model(name, False), _model(name, True)
    assert all(p.is_meta for p in meta.module.parameters())
    batch = next(iter(real.batches(np.random.default_rng(0))))
    same = next(iter(meta.batches(np.random.default_rng(0))))
    for a, b in zip(batch, same):
        assert torch.equal(a, b)
    before = torch.random.get_rng_state()
    counted = train_step_flops(real, batch)
    assert counted > 0 and train_step_flops(meta, batch) == counted
    assert torch.equal(torch.random.get_rng_state(), before)          # no random number drawn
    assert all(p.grad is None for p in real.module.parameters())       # and no gradient kept


def test_projected_compute_scales_the_step_by_the_epoch_and_the_cell():
    model = _model("tiger", True, {"epochs": 7})
    batch = next(iter(model.batches(np.random.default_rng(0))))
    step = train_step_flops(model, batch)
    out = projected_compute(model, batch)
    cell = step * model.n_batches() * 7
    assert out["train_tflop_step"] == float(f"{step / 1e12:.3g}")
    assert out["train_pflop_cell"] == float(f"{cell / 1e15:.3g}")
    assert out["gpu_train_hours"] == pytest.approx(cell / (GPU_PEAK_TFLOPS * 1e12 * GPU_UTILISATION) / 3600, rel=2e-3)
    assert projected_compute(model, None) == {}


def test_a_loss_without_a_dense_product_gets_no_figure():
    mf = _model("mf", False)       # dot products of embeddings: element-wise, not counted
    assert projected_compute(mf, next(iter(mf.batches(np.random.default_rng(0))))) == {}


def test_the_cpus_fused_attention_counts_what_its_matrix_products_would():
    q, k, v = (torch.randn(2, 3, 5, 8, requires_grad=True) for _ in range(3))
    fused = count_flops(lambda: nn.functional.scaled_dot_product_attention(q, k, v).sum().backward())
    # the same attention as matrix products: Q K^T, softmax, A V; and their gradients
    explicit = count_flops(lambda: (torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v).sum().backward())
    assert fused > 0 and fused == explicit


def test_a_sparse_product_counts_its_stored_entries():
    idx = torch.tensor([[0, 1, 2, 4], [1, 2, 0, 3]])
    adj = torch.sparse_coo_tensor(idx, torch.ones(4), (5, 5)).coalesce()
    x = torch.randn(5, 8)
    assert count_flops(lambda: torch.sparse.mm(adj, x)) == 2 * 4 * 8
    assert count_flops(lambda: adj.to_sparse_csr() @ x) == 2 * 4 * 8
    assert count_flops(lambda: x.T @ adj.to_dense()) == 2 * 8 * 5 * 5        # dense: its shape
    # LightGCN: each layer's propagation A E and, backward, A G (A symmetric), over A's entries
    lightgcn = _model("lightgcn", False)
    batch = next(iter(lightgcn.batches(np.random.default_rng(0))))
    net, cfg = lightgcn.module, lightgcn.config
    assert train_step_flops(lightgcn, batch) == 2 * cfg.n_layers * 2 * net.adj_csr._nnz() * cfg.dim
