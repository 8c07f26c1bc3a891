"""Fixtures for the reader tests: the optional real datasets in ../shared/datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_datasets_dir() -> Path:
    """$GENREC_BENCH_SHARED, else <repo>/../shared/datasets (absent in a user's clone)."""
    env = os.environ.get("GENREC_BENCH_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.fixture
def shared():
    """Return a function folder_name -> Path that skips the test where the folder is absent."""
    def get(name: str) -> Path:
        path = shared_datasets_dir() / name
        if not path.is_dir():
            pytest.skip(f"shared dataset folder {path} not present")
        return path
    return get
