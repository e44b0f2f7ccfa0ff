"""Shared test helpers: where the official reference fixtures live, and small model builders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    """``../shared/fixtures/reference`` beside the checkout (CI always has it), or ``$FAPN_FIXTURES``."""
    env = os.environ.get("FAPN_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    d = fixtures_dir()
    if not (d / "README.md").is_file():
        pytest.skip(f"official reference fixtures not found at {d} (set FAPN_FIXTURES to their folder)")
    return d


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
