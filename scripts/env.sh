# Sourced by run_app.sh / run_tests.sh: create or reuse .venv and install requirements.txt + this package.
# Re-installs only when requirements.txt, pyproject.toml or the compiled DCN's source changed (a hash stamp in .venv).
# The compiled CPU deformable conv is built here too (about a minute); if it cannot be built the models use the
# PyTorch fast path and everything else works the same.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[fapn-lab] creating virtualenv in $VENV" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi
STAMP="$VENV/.fapn-lab-stamp"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/fapn_core/models/dcn_cpu.cpp" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[fapn-lab] installing requirements (torch/torchvision come from the local package cache)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
  echo "[fapn-lab] building the compiled CPU deformable conv" >&2
  "$VENV/bin/python" -m fapn_core.cli build-ext >&2 || echo "[fapn-lab] (continuing with the PyTorch DCN path)" >&2
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
