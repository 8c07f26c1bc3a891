"""No traditional baseline reads a validation or test interaction while training."""

import numpy as np
import pytest
import torch

from baselines.bert4rec import cloze_mask
from baselines.caser import sequence_windows
from benchmarks.config import build_config
from benchmarks.data.dataset import Dataset
from benchmarks.protocol import Context
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything

N_TRAIN_ITEMS, N_ITEMS = 12, 16          # items 13..16 occur ONLY in validation / test
SMALL = {"caser": {"dim": 8, "n_h": 2, "n_v": 2}, "hgn": {"dim": 8},
         "bert4rec": {"hidden": 8, "inner": 16, "n_layers": 1}, "lightgcn": {"dim": 8},
         "mf": {"dim": 8}, "sasrec": {"hidden": 8, "inner": 16, "n_layers": 1},
         "hstu": {"hidden": 8, "dqk": 4, "dv": 4, "n_blocks": 1, "n_negatives": 8}}


def _dataset(held_out_shift: int = 0) -> Dataset:
    """8 users walking items 1..12 in training; their validation / test targets are items
    13..16 (rotated by ``held_out_shift`` to alter the held-out data only)."""
    rng = np.random.default_rng(0)
    train = [rng.integers(1, N_TRAIN_ITEMS + 1, size=int(rng.integers(4, 9))) for _ in range(8)]
    held = lambda u, k: np.array([N_TRAIN_ITEMS + 1 + (u + k + held_out_shift) % 4])
    return Dataset(name="held-out", n_items=N_ITEMS, item_ids=[str(i) for i in range(1, N_ITEMS + 1)],
                   user_ids=[f"u{u}" for u in range(8)], train=train,
                   valid=[held(u, 0) for u in range(8)], test=[held(u, 1) for u in range(8)])


def _model(name, ds, **overrides):
    seed_everything(0)
    cls = METHODS.get(name)
    cfg = build_config(cls.Config, {**SMALL[name], "batch_size": 4, **overrides})
    return cls(cfg, Context(ds, None, "cpu", 0, progress=False))


def _positive_items(name, batch) -> torch.Tensor:
    """The parts of a training batch that come from interactions (not sampled negatives)."""
    if name in ("caser", "hgn"):
        _, seq, tgt, _ = batch
        return torch.cat([seq.flatten(), tgt.flatten()])
    if name == "bert4rec":
        inp, win, _ = batch
        return torch.cat([inp[inp <= N_ITEMS], win.flatten()])
    if name in ("lightgcn", "mf"):
        return batch[1]
    return batch[0].flatten()                         # sasrec, hstu: (windows, ...)


@pytest.mark.parametrize("name", ["caser", "hgn", "bert4rec", "lightgcn", "hstu"])
def test_training_batches_hold_no_held_out_item(name):
    ds = _dataset()
    model = _model(name, ds)
    seen = torch.cat([_positive_items(name, b) for b in model.batches(np.random.default_rng(0))])
    assert seen.numel() and int(seen.max()) <= N_TRAIN_ITEMS


def test_lightgcn_graph_has_no_edge_to_held_out_items():
    ds = _dataset()
    adj = _model("lightgcn", ds).module.adj.to_dense()
    held_out_nodes = ds.n_users + np.arange(N_TRAIN_ITEMS, N_ITEMS)   # items 13..16
    assert not adj[held_out_nodes].any() and not adj[:, held_out_nodes].any()
    # and exactly the distinct training pairs are edges (both directions)
    pairs = {(u, int(i)) for u, s in enumerate(ds.train) for i in s}
    assert int((adj > 0).sum()) == 2 * len(pairs)


@pytest.mark.parametrize("name", ["caser", "hgn", "bert4rec", "lightgcn", "mf", "sasrec", "hstu"])
def test_training_ignores_validation_and_test_targets(name):
    # same training sequences, different held-out targets -> the same trained parameters
    states = []
    for shift in (0, 1):
        model = _model(name, _dataset(shift), epochs=2)
        model.fit()                                   # no validator: training data only
        states.append(model.module.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), f"{name}: {key} differs"


def test_sequence_windows_are_the_training_prefixes():
    users, inputs, targets = sequence_windows([np.array([1, 2, 3, 4]), np.array([7])], L=2, T=2)
    assert users.tolist() == [0, 0, 0]                # a one-item sequence has no target
    assert inputs.tolist() == [[0, 1], [1, 2], [2, 3]]
    assert targets.tolist() == [[2, 3], [3, 4], [4, 0]]


def test_cloze_mask_masks_real_items_only():
    windows = np.array([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12, 13],
                        [0] * 10 + [3, 4]])
    for seed in range(20):
        rng = np.random.default_rng(seed)
        m = cloze_mask(windows, rng, 0.5, 0.0)
        assert not (m & (windows == 0)).any()
        assert m.sum(1).tolist() == [4, 1]   # round(0.5 * 9) = 4 (half to even); max(1, round(1))
        last = cloze_mask(windows, rng, 0.5, 1.0)
        assert last.sum(1).tolist() == [1, 1] and last[:, -1].all()
