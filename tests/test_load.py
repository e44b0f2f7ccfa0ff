"""Many users at once against a real server (a short run of benchmarks/load_test.py): 8 concurrent Chromium
sessions, each with its own image and ground truth, each shown the numbers of its own image — with the bundled
semantic pair, the bundled Panoptic FPN pair and the bundled MaskFormer pair (a family of issue #29)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from fapn_core.checkpoints import bundled_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytestmark = [
    pytest.mark.skipif(not {"fpn_r18_semfpn", "fapn_r18_semfpn"} <= set(bundled_models()),
                       reason="bundled models missing from assets/models"),
    pytest.mark.skipif(not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()),
                       reason="Debian chromium not installed (.ci/run installs it)"),
]


# the semantic pair's run (the same server and caches, lighter models) is `slow`: `pytest -m slow tests/test_load.py`
@pytest.mark.parametrize("pair", ["panoptic", "maskformer", pytest.param("semantic", marks=pytest.mark.slow)])
def test_eight_concurrent_users_each_get_their_own_result(pair):
    from load_test import PAIRS, run

    if not set(PAIRS[pair]) <= set(bundled_models()):
        pytest.skip(f"bundled {pair} pair missing from assets/models")
    out = run(users=8, requests=16, pair=pair)
    assert out["failures"] == 0, out["errors"]
    assert out["requests"] == 16
