"""The README's promises a newcomer tries first: its ``python`` blocks run as written, and ``fapn --help`` works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs_as_written(code):
    """Each block runs in a fresh interpreter from the repository root, as a reader would paste it."""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    if "res.summary()" in code:  # the library example prints A's and B's numbers on the sample
        assert "'miou'" in run.stdout and "'band_miou_3px'" in run.stdout, run.stdout[-2000:]


def test_the_console_script_is_in_the_environment():
    """``fapn`` is installed beside the interpreter that runs the tests (``.venv/bin/fapn``)."""
    exe = Path(sys.executable).parent / "fapn"
    assert exe.is_file(), f"{exe} missing: the set-up installs the package with its console script"
    run = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "evaluate" in run.stdout and "train" in run.stdout, run.stderr[-2000:]
