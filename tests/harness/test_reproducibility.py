"""Two runs of the same cell compute the same numbers: torch's deterministic kernels are on
after ``seed_everything`` (CPU), so the backward of a row lookup does not race on > 1 thread."""

import hashlib
from pathlib import Path

import pytest
import torch

from benchmarks.utils import DETERMINISTIC_ENV, deterministic_kernels, seed_everything
from tests.test_contract import _fit


@pytest.fixture(autouse=True)
def _restore_mode():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before, warn_only=True)


def _params_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in module.state_dict().values():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the default is left alone where CUDA is available")
def test_seed_everything_turns_the_deterministic_kernels_on(monkeypatch):
    monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
    torch.use_deterministic_algorithms(False)
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()


def test_the_environment_variable_forces_the_setting(monkeypatch):
    monkeypatch.setenv(DETERMINISTIC_ENV, "0")
    seed_everything(0)
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv(DETERMINISTIC_ENV, "1")
    assert deterministic_kernels() and torch.are_deterministic_algorithms_enabled()
    assert not deterministic_kernels(False)


def test_row_lookup_gradients_do_not_race_on_two_threads(monkeypatch):
    # SETRec's shape: the item token table [items + 1, tokens, d] looked up by histories [B, H]
    # (409,600 gradient elements: the multi-threaded atomic path without deterministic kernels;
    # measured without them: 9 distinct gradients in 10 repeats, or fewer on a busy machine)
    monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
    seed_everything(0)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1350, 5, 64, generator=gen, requires_grad=True)
    hist = torch.randint(1350, (128, 10), generator=gen)
    weight = torch.randn(128, 10, 5, 64, generator=gen)
    grads = set()
    for _ in range(20):
        table.grad = None
        (table[hist] * weight).sum().backward()
        grads.add(hashlib.sha256(table.grad.numpy().tobytes()).hexdigest())
    assert len(grads) == 1


def test_two_sasrec_fits_on_two_threads_are_identical_to_the_bit(tmp_path, monkeypatch):
    from benchmarks.data.toy import toy_dataset

    monkeypatch.delenv(DETERMINISTIC_ENV, raising=False)
    torch.set_num_threads(2)
    ds = toy_dataset()
    a, log_a = _fit("sasrec", ds, 0, tmp_path / "a")
    b, log_b = _fit("sasrec", ds, 0, tmp_path / "b")
    numbers = lambda log: [(e["loss"], e.get("valid_ndcg10")) for e in log["epochs"]]   # noqa: E731
    assert numbers(log_a) == numbers(log_b)                 # (the log's timings differ, of course)
    assert _params_hash(a.module) == _params_hash(b.module)
