#!/usr/bin/env bash
# Reproduce the README's FPN vs FaPN table: both bundled models on 200 held-out synthetic scenes (seed 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-200}
OUT=${OUT:-runs/eval_bundled}
"$PY" -m fapn_core.cli evaluate \
  --models assets/models/fpn_r18_semfpn.safetensors assets/models/fapn_r18_semfpn.safetensors \
  --data "synthetic:n=$N,seed=2,size=256x512" --out "$OUT" "$@"
