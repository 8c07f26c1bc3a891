"""The training loop's bookkeeping without per-step host waits: the epoch loss summed on the
device gives the per-step ``float(loss)`` mean exactly, a non-finite loss is one error naming
its epoch and step, and the best state is a host copy restored exactly."""

import numpy as np
import pytest
import torch

from benchmarks import training
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


def _mf(ds, **over):
    cls = METHODS.get("mf")
    seed_everything(0)
    ctx = build_context(ds, seed=0, needs=frozenset(), progress=False)
    return cls(build_config(cls.Config, {**cls.smoke_config, "batch_size": 32, **over}), ctx)


def _record_losses(model, poison: tuple[int, int] | None = None) -> list[list[float]]:
    """Wrap ``model.loss``: per epoch, the float of every step's loss; ``poison`` = (epoch, step),
    1-based, makes that step's loss NaN."""
    per_epoch: list[list[float]] = []
    loss, batches = model.loss, model.batches

    def epoch_batches(rng):
        per_epoch.append([])
        return batches(rng)

    def recorded(batch):
        value = loss(batch)
        if poison == (len(per_epoch), len(per_epoch[-1]) + 1):
            value = value * float("nan")
        per_epoch[-1].append(float(value.detach()))
        return value

    model.batches, model.loss = epoch_batches, recorded
    return per_epoch


def test_the_epoch_loss_is_the_per_step_float_mean_exactly(toy):
    model = _mf(toy, epochs=3)
    seen = _record_losses(model)
    log = model.fit(None)
    assert [e["steps"] for e in log["epochs"]] == [len(s) for s in seen] and len(seen[0]) > 2
    for entry, steps in zip(log["epochs"], seen):
        total = 0.0
        for value in steps:            # what the loop did before: a Python float per step
            total += value
        assert entry["loss"] == total / len(steps)


@pytest.mark.parametrize("every", [100, 2])
def test_a_non_finite_loss_names_its_epoch_and_step(toy, monkeypatch, every):
    """Looked for at the epoch's end (every=100 > the epoch's steps) or every 2 steps: either
    way the error names where the loss first went non-finite, and with the frequent check the
    loop stops within 2 steps of it."""
    monkeypatch.setattr(training, "FINITE_CHECK_EVERY", every)
    model = _mf(toy, epochs=3)
    seen = _record_losses(model, poison=(2, 3))
    with pytest.raises(FloatingPointError, match=r"^mf: loss became nan at epoch 2, step 3$"):
        model.fit(None)
    assert len(seen) == 2
    if every == 2:
        assert len(seen[1]) == 4
    else:
        assert len(seen[1]) == model.n_batches()


def test_the_best_state_is_a_host_copy_restored_exactly(toy):
    model = _mf(toy, epochs=4, patience=10)
    states = []
    scores = iter([0.1, 0.3, 0.2, 0.25])    # the best validation is epoch 2's

    def validator(m):
        states.append({k: v.clone() for k, v in m.module.state_dict().items()})
        return next(scores)

    log = model.fit(validator)
    assert log["best_epoch"] == 2
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, states[1][k]), k
        assert not torch.equal(v, states[3][k]), k     # the last epoch's state was replaced
    copy = training._state_copy(model.module)
    assert all(v.device.type == "cpu" for v in copy.values())
    name, param = next(iter(model.module.named_parameters()))
    with torch.no_grad():
        param.add_(1.0)
    assert not torch.equal(copy[name], param)     # a copy, not a view of the parameters
