"""The training loop's memory settings: ``grad_accum`` (micro-batches per optimiser step, the
update equal to the whole batch's) and ``gradient_checkpointing`` (the transformer backbones'
activations recomputed in the backward pass, the gradients unchanged)."""

import numpy as np
import pytest
import torch

from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset
from benchmarks.errors import ConfigError
from benchmarks.evaluation import EvalConfig, Evaluator
from benchmarks.registry import METHODS
from benchmarks.utils import seed_everything

T5_SMALL = {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_kv": 16, "d_ff": 64}
CAUSAL_SMALL = {"hidden": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "intermediate": 64}


@pytest.fixture(scope="module")
def toy():
    return toy_dataset()


def _model(name, ds, tmp_path, **over):
    cls = METHODS.get(name)
    seed_everything(0)
    ctx = build_context(ds, seed=0, evaluator=Evaluator(ds, EvalConfig(ks=(5, 10))), needs=cls.needs,
                        cache=tmp_path / "cache", progress=False)
    return cls(build_config(cls.Config, {**cls.smoke_config, **over}), ctx)


def _count_losses(model) -> list[int]:
    calls = []
    loss = model.loss
    model.loss = lambda batch: (calls.append(1), loss(batch))[1]
    return calls


@pytest.mark.parametrize("name,over", [
    ("mf", {"epochs": 2, "batch_size": 64}),                                  # a mean over samples
    ("generative", {"epochs": 2, "batch_size": 32, "backbone_config": {**T5_SMALL, "dropout": 0.0}}),
])
def test_grad_accum_gives_the_whole_batch_update(toy, tmp_path, name, over):
    """Training with the batch cut into 2 or 3 micro-batches (3 cuts unevenly) ends at the same
    parameters as with whole batches, up to float error, with one optimiser step per batch."""
    ref = _model(name, toy, tmp_path, **over)
    ref_calls = _count_losses(ref)
    ref_log = ref.fit(None)
    for n in (2, 3):
        acc = _model(name, toy, tmp_path, **over, grad_accum=n)
        calls = _count_losses(acc)
        log = acc.fit(None)
        assert len(calls) > len(ref_calls), "the batches were not cut into micro-batches"
        assert [e["steps"] for e in log["epochs"]] == [e["steps"] for e in ref_log["epochs"]]
        np.testing.assert_allclose([e["loss"] for e in log["epochs"]], [e["loss"] for e in ref_log["epochs"]],
                                   rtol=1e-5)
        for (k, a), b in zip(ref.module.state_dict().items(), acc.module.state_dict().values()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{name} grad_accum={n}: {k}")


def test_grad_accum_below_one_is_a_config_error(toy, tmp_path):
    with pytest.raises(ConfigError, match=r"MFConfig: field 'grad_accum': expected an integer >= 1, got 0"):
        _model("mf", toy, tmp_path, grad_accum=0)


def _grads(model) -> tuple[dict, int]:
    """Gradients of one training batch's loss (dropout on, seeded) and how many linear-layer
    calls the step ran (the layers of a checkpointed block run again in the backward pass)."""
    runs = []
    for m in model.module.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda *a: runs.append(1))
    model.train()
    batch = next(iter(model.batches(np.random.default_rng(0))))
    seed_everything(1)
    model.loss(batch).backward()
    grads = {k: p.grad.clone() for k, p in model.module.named_parameters() if p.grad is not None}
    return grads, len(runs)


@pytest.mark.parametrize("name,over", [
    ("generative", {"backbone_config": T5_SMALL}),
    ("generative", {"backbone": "causal", "backbone_config": CAUSAL_SMALL}),
    ("setrec-causal", {"backbone_config": CAUSAL_SMALL}),
])
def test_a_checkpointed_step_gives_the_plain_gradients(toy, tmp_path, name, over):
    plain, plain_runs = _grads(_model(name, toy, tmp_path, **over))
    ckpt, ckpt_runs = _grads(_model(name, toy, tmp_path, **over, gradient_checkpointing=True))
    assert ckpt_runs > plain_runs, "no layer was recomputed: checkpointing is off"
    assert plain.keys() == ckpt.keys() and plain
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.parametrize("name,match", [
    ("sasrec", r"SASRecConfig: field 'gradient_checkpointing': the module has no transformers model"),
    ("setrec-t5", r"SETRecConfig: field 'gradient_checkpointing': not supported by SetT5: the position bias"),
])
def test_gradient_checkpointing_where_it_cannot_apply_is_a_config_error(toy, tmp_path, name, match):
    with pytest.raises(ConfigError, match=match):
        _model(name, toy, tmp_path, gradient_checkpointing=True)
