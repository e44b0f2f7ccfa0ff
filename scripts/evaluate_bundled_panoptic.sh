#!/usr/bin/env bash
# Reproduce the README's Panoptic FPN table: the bundled FPN/FaPN panoptic pair on the same 200 held-out synthetic
# scenes (seed 2) as the semantic pair: COCO box/mask/Boundary AP by size, PQ things/stuff, the semantic head's bands.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-200}
OUT=${OUT:-runs/eval_bundled_panoptic}
"$PY" -m fapn_core.cli evaluate \
  --models assets/models/fpn_r18_panoptic.safetensors assets/models/fapn_r18_panoptic.safetensors \
  --data "synthetic:n=$N,seed=2,size=256x512" --out "$OUT" "$@"
