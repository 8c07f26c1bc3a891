"""The shared RQ-VAE's pieces on tiny hand-checked tensors: Eq. 2 terms, InfoNCE (Eq. 3), the
diversity loss and its target sampler, Sinkhorn marginals and spreading, balanced k-means,
the straight-through estimator, collision handling."""

import math

import numpy as np
import pytest
import torch

from benchmarks.errors import ConfigError
from identifiers.quantizers import (RQVAE, ClusterTable, RQVAEConfig, balanced_kmeans, code_usage,
                                    collision_report, disambiguation_token, diversity_loss, info_nce,
                                    kmeans, quantisation_losses, resolve_collisions, rqvae_loss,
                                    sample_cluster_targets, sinkhorn, sinkhorn_assign)


def _two_level_model() -> RQVAE:
    """latent 2-d, 2 levels x 2 codes, codebooks set by hand."""
    cfg = RQVAEConfig(hidden=(), latent_dim=2, n_levels=2, codebook_size=2, standardize=False)
    model = RQVAE(2, cfg)
    with torch.no_grad():
        model.encoder[0].weight.copy_(torch.eye(2))         # z = x
        model.encoder[0].bias.zero_()
        model.codebooks.copy_(torch.tensor([[[0.5, 0.0], [-1.0, 0.0]],
                                            [[0.25, 0.25], [0.0, -1.0]]]))
    return model


def test_residual_quantisation_and_eq2_terms_by_hand():
    model = _two_level_model()
    z = torch.tensor([[1.0, 0.0]])
    out = model.quantise(z, balanced=False)
    # level 0: |z-(.5,0)|² = .25 < |z-(-1,0)|² = 4 -> code 0, r1 = (.5, 0)
    # level 1: |r1-(.25,.25)|² = .125 < |r1-(0,-1)|² = 1.25 -> code 0
    assert out["codes"].tolist() == [[0, 0]]
    assert torch.allclose(out["residuals"][1], torch.tensor([[0.5, 0.0]]))
    assert torch.allclose(out["z_hat"], torch.tensor([[0.75, 0.25]]))
    codebook, commit = quantisation_losses(out["residuals"], out["chosen"], mu=0.25)
    # mean over the 2 elements: level 0 (.5² + 0)/2 = .125, level 1 (.25² + .25²)/2 = .0625
    assert torch.allclose(codebook, torch.tensor([0.125, 0.0625]))
    assert torch.allclose(commit, 0.25 * torch.tensor([0.125, 0.0625]))
    # the full loss: reconstruction + Σ_l (codebook + μ commitment)
    x = torch.tensor([[1.0, 0.0]])
    full = model(x, balanced=False)
    assert torch.equal(full["z"], x) and full["codes"].tolist() == [[0, 0]]
    total, parts = rqvae_loss(model, full)
    recon = ((full["recon"] - x) ** 2).mean().item()
    assert parts["codebook"] == pytest.approx(0.1875) and parts["commit"] == pytest.approx(0.046875)
    assert parts["recon"] == pytest.approx(recon, rel=1e-6)
    assert total.item() == pytest.approx(recon + 0.1875 + 0.046875, rel=1e-6)
    model.cfg.level_reduction = "mean"
    assert rqvae_loss(model, full)[1]["codebook"] == pytest.approx(0.09375)


def test_eq2_gradients_go_where_the_stop_gradients_say():
    model = _two_level_model()
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    out = model.quantise(z, balanced=False)
    codebook, commit = quantisation_losses(out["residuals"], out["chosen"], mu=0.25)
    codebook.sum().backward(retain_graph=True)
    assert z.grad is None or not z.grad.any()             # sg[r]: the codebook term spares z
    model.codebooks.grad = None
    commit.sum().backward()
    assert model.codebooks.grad is None or not model.codebooks.grad.any()   # sg[e]
    # d/dz of .25 * (mean((z-e0)²) + mean((z-e0-e1)²)) = .25 * ((z-e0) + (z-e0-e1)) = (.1875, -.0625)
    assert torch.allclose(z.grad, torch.tensor([[0.1875, -0.0625]]))


def test_straight_through_reaches_the_encoder():
    cfg = RQVAEConfig(hidden=(8,), latent_dim=4, n_levels=2, codebook_size=4)
    model = RQVAE(6, cfg)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    model.init_codebooks(x, torch.Generator().manual_seed(0))
    z = torch.randn(3, 4, requires_grad=True)
    model.quantise(z, balanced=False)["z_hat"].sum().backward()
    assert torch.equal(z.grad, torch.ones(3, 4))            # identity gradient through quantisation
    model.zero_grad()
    out = model(x)
    torch.nn.functional.mse_loss(out["recon"], out["target"]).backward()   # reconstruction only
    assert model.encoder[0].weight.grad.abs().sum() > 0


def test_info_nce_2x2_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    # logits [[1, 0], [0, 2]]: row 0 -log(e/(e+1)), row 1 -log(e²/(1+e²))
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-2))) / 2
    assert info_nce(q, h).item() == pytest.approx(expected, rel=1e-6)


def test_diversity_loss_4_codes_2_clusters_by_hand():
    book = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    table = ClusterTable(np.array([0, 0, 1, 1]))
    codes = torch.tensor([0, 2])
    targets = sample_cluster_targets(codes, table, torch.Generator().manual_seed(0))
    assert targets.tolist() == [1, 3]                        # the only other member of each cluster
    loss = diversity_loss(book[codes], book, codes, targets)
    # row 0: x=(2,0), logits [4, 0, -2, 0], own code masked, target 1 -> -log(1/(1+e^-2+1))
    # row 1: x=(-1,0), logits [-2, 0, 1, 0], own code masked, target 3 -> -log(1/(e^-2+1+1))
    assert loss.item() == pytest.approx(math.log(2 + math.exp(-2)), rel=1e-6)
    # the gradient reaches the code vectors
    book.requires_grad_(True)
    diversity_loss(book[codes], book, codes, targets).backward()
    assert book.grad.abs().sum() > 0


def test_cluster_target_sampler_is_uniform_over_the_other_members():
    labels = np.array([0, 1, 0, 0, 2, 1])                   # cluster 0 = {0, 2, 3}; 2 = {4} alone
    table = ClusterTable(labels)
    codes = torch.tensor([2] * 3000 + [4])
    t = sample_cluster_targets(codes, table, torch.Generator().manual_seed(1))
    assert t[-1] == -1                                      # no other member: ignored
    counts = np.bincount(t[:-1].numpy(), minlength=6)
    assert counts[2] == 0 and counts[[1, 4, 5]].sum() == 0 and abs(counts[0] - counts[3]) < 200
    fixed = sample_cluster_targets(torch.tensor([0, 0, 3]), table, uniform=torch.tensor([0.0, 0.99, 0.0]))
    assert fixed.tolist() == [2, 3, 0]
    # rows without a target contribute nothing
    book = torch.randn(6, 3)
    assert diversity_loss(book[[4]], book, torch.tensor([4]), torch.tensor([-1])).item() == 0


def test_sinkhorn_marginals_and_spreading():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(64, 8, generator=g) * 2 - 1
    plan = sinkhorn(cost, epsilon=0.05, iters=50)
    assert torch.allclose(plan.sum(0), torch.full((8,), 8.0, dtype=plan.dtype), atol=1e-6)   # B/N each
    assert torch.allclose(plan.sum(1), torch.ones(64, dtype=plan.dtype), atol=1e-2)        # 1 per item
    # every item is nearest to code 0: argmin would put all 64 there; Sinkhorn spreads them
    d = torch.rand(64, 8, generator=g) + 1.0
    d[:, 0] = torch.rand(64, generator=g) * 0.1
    assert d.argmin(1).eq(0).all()
    counts = torch.bincount(sinkhorn_assign(d, 0.003, 50), minlength=8)
    assert counts.max() <= 2 * 64 // 8 and (counts > 0).all()


def test_balanced_kmeans_equal_sizes():
    x = np.random.default_rng(0).normal(size=(256, 32))
    sizes = np.bincount(balanced_kmeans(x, 10, seed=0), minlength=10)
    assert set(sizes) <= {25, 26} and sizes.sum() == 256
    x2 = np.r_[np.zeros((8, 2)), np.ones((2, 2))]            # lopsided data, still equal sizes
    assert set(np.bincount(balanced_kmeans(x2, 4, seed=0))) <= {2, 3}
    assert np.array_equal(balanced_kmeans(x, 10, seed=3), balanced_kmeans(x, 10, seed=3))


def test_kmeans_init_uses_every_centre():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20, 3, generator=g) * 0.1 + i * 5 for i in range(4)])
    c = kmeans(x, 4, 20, g)
    assert torch.bincount(torch.cdist(x, c).argmin(1), minlength=4).tolist() == [20, 20, 20, 20]
    assert kmeans(x[:3], 5, 10, g).shape == (5, 3)          # fewer points than codes


def test_disambiguation_token_and_collision_report():
    codes = np.array([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    assert disambiguation_token(codes).tolist() == [0, 0, 1, 2, 0]
    rep = collision_report(codes)
    assert rep == {"distinct": 3, "collided_items": 3, "collision_rate": 0.6, "duplicate_rate": 0.4,
                   "max_group": 3}
    usage = code_usage(codes, [2, 3])
    assert [u["used"] for u in usage] == [2, 3] and usage[0]["entropy_bits"] == pytest.approx(0.971, abs=1e-3)


def test_resolve_collisions_moves_the_farther_item_to_the_nearest_free_code():
    book = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    codes = np.array([[0, 0], [0, 0], [0, 1], [1, 0]])   # items 0, 1 collide; prefix 0 uses codes 0, 1
    resid = np.array([[0.1, 0.9], [0.05, 0.0], [1.0, 0.0], [0.0, 0.0]])
    new, moved = resolve_collisions(codes, resid, book)
    # item 1 is nearer code 0 and keeps it; item 0 goes to the nearest code unused in its prefix: 2
    assert moved == 1 and new.tolist() == [[0, 2], [0, 0], [0, 1], [1, 0]]
    assert resolve_collisions(new, resid, book)[1] == 0
    with pytest.raises(ValueError, match="share their first 1 codes"):
        resolve_collisions(np.zeros((5, 2), np.int64), np.zeros((5, 2)), book)


@pytest.mark.parametrize("over, match", [
    ({"beta": 1e-4, "codebook_size": 8, "diversity_clusters": 10}, "diversity_clusters"),
    ({"sinkhorn_levels": (3,)}, "sinkhorn level 3"),
    ({"collision": "append"}, "collision"),
])
def test_config_validation(over, match):
    with pytest.raises(ConfigError, match=match):
        RQVAEConfig(**over).validate()
    RQVAEConfig(sinkhorn_levels=(-1,)).validate()


def _resolve_collisions_scan(codes: np.ndarray, last_residual: np.ndarray, last_codebook: np.ndarray
                       ) -> tuple[np.ndarray, int]:
    """The implementation before prefix groups came from one sort (commit cc7c0ea): it
    scanned every item once per colliding prefix group (quadratic in the items)."""
    from scipy.optimize import linear_sum_assignment

    codes = codes.copy()
    n_codes = len(last_codebook)
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if counts.max(initial=1) <= 1:
        return codes, 0
    _, prefix_inv = np.unique(codes[:, :-1], axis=0, return_inverse=True)
    prefix_inv = prefix_inv.reshape(-1)
    bad_prefixes = np.unique(prefix_inv[counts[inverse] > 1])
    moved = 0
    for p in bad_prefixes:
        members = np.flatnonzero(prefix_inv == p)
        if len(members) > n_codes:
            raise ValueError(f"{len(members)} items share their first {codes.shape[1] - 1} codes: "
                             f"more than the {n_codes} last-level codes can tell apart")
        d = ((last_residual[members][:, None, :] - last_codebook[None]) ** 2).sum(-1)
        own = d[np.arange(len(members)), codes[members, -1]]
        # keep, per used code, the member nearest to it
        order = np.lexsort((own, codes[members, -1]))
        sorted_codes = codes[members, -1][order]
        keep_sorted = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        movers = members[order[~keep_sorted]]
        free = np.setdiff1d(np.arange(n_codes), sorted_codes[keep_sorted])
        rows, cols = linear_sum_assignment(d[order[~keep_sorted]][:, free])
        codes[movers[rows], -1] = free[cols]
        moved += len(movers)
    return codes, moved


def test_resolve_collisions_equals_the_per_group_scan_it_replaced():
    """Many prefix groups, many collisions: the same codes and count as the scan."""
    rng = np.random.default_rng(3)
    for n, sizes in ((400, (8, 8, 32)), (3000, (24, 24, 48))):
        codes = np.stack([rng.integers(0, s, n) for s in sizes], 1)
        resid = rng.standard_normal((n, 4))
        book = rng.standard_normal((sizes[-1], 4))
        new, moved = resolve_collisions(codes, resid, book)
        ref, ref_moved = _resolve_collisions_scan(codes, resid, book)
        assert moved == ref_moved > 0 and np.array_equal(new, ref)
