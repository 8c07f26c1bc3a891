"""GPU timing on the right device, checked on the CPU with torch.cuda mocked: ``synchronize``
waits on the GPU it is given (``cuda:1``, not the current one), ``PeakMemory`` resets and reads
that GPU's peak, and the bench script and the evaluator drain the device of the model they time
before and after every clock."""

import json

import numpy as np
import pytest
import torch

from benchmarks import utils
from benchmarks.config import build_config
from benchmarks.context import build_context
from benchmarks.data.toy import toy_dataset, write_toy_recbole
from benchmarks.evaluation import evaluator as evaluator_module
from benchmarks.registry import METHODS

TINY_T5 = ["--d-model", "16", "--layers", "1", "--heads", "2", "--d-kv", "8", "--d-ff", "32"]


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as a machine with GPUs would answer, each call recorded with its device."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("sync", device)))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated",
                        lambda device=None: calls.append(("peak", device)) or 3 * 2 ** 20)
    return calls


def test_synchronize_waits_on_the_gpu_it_is_given(fake_cuda):
    utils.synchronize("cuda:1")
    utils.synchronize(torch.device("cuda", 0))
    utils.synchronize("cpu")
    assert fake_cuda == [("sync", torch.device("cuda", 1)), ("sync", torch.device("cuda", 0))]


def test_peak_memory_measures_the_named_gpu(fake_cuda):
    with utils.PeakMemory(device="cuda:1") as mem:
        pass
    assert fake_cuda == [("reset", "cuda:1"), ("peak", "cuda:1")] and mem.peak_cuda_mb == 3.0
    fake_cuda.clear()
    with utils.PeakMemory(device="cpu") as mem:      # a CPU cell on a GPU machine: no CUDA peak
        pass
    assert fake_cuda == [] and mem.peak_cuda_mb is None


def test_bench_generation_drains_the_models_device_around_every_clock(monkeypatch, tmp_path):
    from benchmarks import bench_generation

    seen = []
    monkeypatch.setattr(utils, "synchronize", lambda device: seen.append(str(device)))
    entry = write_toy_recbole(tmp_path / "toy")
    res = bench_generation.main(["--dataset", json.dumps(entry), "--identifier", "id", *TINY_T5,
                                 "--users", "12", "--batch", "6", "--beams", "10"])
    assert res["users"] == 12
    # 2 batches x 4 timed searches (ours, transformers', masked, widened), before and after each
    assert seen == ["cpu"] * 16


def test_the_evaluator_drains_the_models_device_and_measures_its_peak(monkeypatch):
    ds = toy_dataset()
    cls = METHODS.get("mf")
    model = cls(build_config(cls.Config, {**cls.smoke_config, "epochs": 1}),
                build_context(ds, seed=0, needs=frozenset(), progress=False))
    synced, measured = [], []
    monkeypatch.setattr(evaluator_module, "synchronize", lambda device: synced.append(device))

    class Recorded(utils.PeakMemory):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            measured.append(self.device)

    monkeypatch.setattr(evaluator_module, "PeakMemory", Recorded)
    ev = evaluator_module.Evaluator(ds)
    users = ds.eval_users("test")
    ev.rank(model, "test", users)
    assert synced and all(torch.device(d) == torch.device(model.device) for d in synced)
    ev.evaluate(model, splits=("test",), progress=False)
    assert measured == [model.device]
