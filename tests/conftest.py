"""Suite-wide fixtures: an isolated cache, quiet progress, the optional ../shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("GENREC_BENCH_SHARED",
                             Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder (datasets, features) and no data search path,
    unless it sets one itself."""
    monkeypatch.setenv("GENREC_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("GENREC_BENCH_DATA", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present (the suite never needs it at run time)")
    return SHARED


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests train tiny models on toy data: intra-op threads buy nothing there, and on a
    machine whose cores are busy (CI runners, shared boxes) they oversubscribe and make a
    seconds-long training run take minutes (measured here: 5 s -> 93 s on 2 busy cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
