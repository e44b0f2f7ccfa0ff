"""Many users at once (a short version of benchmarks/load_test.py): no cross-talk, models loaded once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fapn_core.checkpoints import bundled_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = pytest.mark.skipif(not {"fpn_r18_semfpn", "fapn_r18_semfpn"} <= set(bundled_models()),
                                reason="bundled models missing from assets/models")


def test_eight_concurrent_users_each_get_their_own_result():
    from load_test import run

    out = run(users=8, requests=16, verbose=False)
    assert out["failures"] == 0, out["errors"]
    assert out["requests"] == 16
    assert all(n == 1 for n in out["model_loads"].values())  # each checkpoint loaded once for all sessions
    # no (model, image) inference ran twice although 8 sessions rendered pages concurrently
    assert out["max_runs_per_inference"] <= 1
