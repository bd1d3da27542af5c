"""Shared test set-up: the offline data mirror and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["GPTLAB_DATA_DIR"])
    if not (path / "README.md").exists():
        pytest.fail(f"offline data mirror not found at {path}; set GPTLAB_DATA_DIR")
    return path
