"""LightGCN's graph, propagation and scoring cache."""

import numpy as np
import torch

from baselines.lightgcn import normalized_adjacency
from benchmarks.config import build_config
from benchmarks.data.toy import toy_dataset
from benchmarks.protocol import Context, UserBatch
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything


def test_normalized_adjacency_matches_hand_computed():
    # users 0, 1; items 1, 2; edges u0-i1, u0-i2, u1-i1 (u0-i1 given twice: counts once)
    adj = normalized_adjacency(2, 2, np.array([0, 0, 1, 0]), np.array([1, 2, 1, 1])).to_dense()
    # nodes: u0 = 0, u1 = 1, i1 = 2, i2 = 3; degrees 2, 1, 2, 1
    s = 2 ** -0.5
    expected = torch.tensor([[0, 0, 1 / 2, s],
                             [0, 0, s, 0],
                             [1 / 2, s, 0, 0],
                             [s, 0, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(adj, expected)


def test_isolated_nodes_get_no_edges():
    # item 3 and user 2 have no interaction: zero rows and columns, no division by zero
    adj = normalized_adjacency(3, 3, np.array([0, 1]), np.array([1, 2])).to_dense()
    assert torch.isfinite(adj).all()
    assert not adj[2].any() and not adj[:, 2].any()          # user 2
    assert not adj[3 + 2].any() and not adj[:, 3 + 2].any()  # item 3


def _model(**overrides):
    ds = toy_dataset()
    seed_everything(0)
    cls = METHODS.get("lightgcn")
    cfg = build_config(cls.Config, {"dim": 8, "n_layers": 2, **overrides})
    return ds, cls(cfg, Context(ds, None, "cpu", 0, progress=False))


def test_propagation_is_the_layer_mean_of_dense_products():
    ds, model = _model()
    net = model.module
    a = net.adj.to_dense()
    e0 = torch.cat([net.user.weight, net.item.weight[1:]]).detach()
    e1 = a @ e0
    e2 = a @ e1
    mean = (e0 + e1 + e2) / 3
    users, items = net.propagate()
    torch.testing.assert_close(users, mean[:ds.n_users])
    torch.testing.assert_close(items[1:], mean[ds.n_users:])
    assert not items[0].any()


def test_scoring_cache_follows_the_weights():
    ds, model = _model(epochs=2, batch_size=64)
    model.fit()                                       # ends in eval mode
    users = torch.arange(5)
    batch = UserBatch(users, torch.from_numpy(ds.history_matrix("test", users.numpy())))
    first = model.score(batch)
    u, i = model.module.propagate()
    torch.testing.assert_close(first, u[users] @ i.T)
    assert model._cache is not None
    # new weights (as when the best state is restored) -> the cache is rebuilt
    state = {k: v + 0.5 for k, v in model.module.state_dict().items()}
    model.module.load_state_dict(state)
    u, i = model.module.propagate()
    torch.testing.assert_close(model.score(batch), u[users] @ i.T)
    # resuming training drops the cache
    model.train()
    assert model._cache is None


def test_sparse_product_gradient_matches_dense():
    _, model = _model()
    net = model.module
    users, items = net.propagate()
    (users.pow(2).sum() + items.pow(3).sum()).backward()
    sparse_grads = [net.user.weight.grad.clone(), net.item.weight.grad.clone()]
    net.zero_grad()
    a = net.adj.to_dense()
    e = torch.cat([net.user.weight, net.item.weight[1:]])
    total, layer = e, e
    for _ in range(net.n_layers):
        layer = a @ layer
        total = total + layer
    total = total / (net.n_layers + 1)
    (total[:net.n_users].pow(2).sum() + total[net.n_users:].pow(3).sum()).backward()
    torch.testing.assert_close(sparse_grads[0], net.user.weight.grad)
    torch.testing.assert_close(sparse_grads[1], net.item.weight.grad)
