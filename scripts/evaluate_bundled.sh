#!/usr/bin/env bash
# Reproduce a README table of bundled FPN/FaPN models on 200 held-out synthetic scenes (seed 2): the semantic pair by
# default; MODELS (bundled names or checkpoint files) / OUT choose another (scripts/evaluate_bundled_panoptic.sh,
# scripts/evaluate_bundled_maskformer.sh, scripts/evaluate_derived_pairs.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-200}
MODELS=${MODELS:-"fpn_r18_semfpn fapn_r18_semfpn"}
OUT=${OUT:-runs/eval_bundled}
paths=()
for m in $MODELS; do  # a bundled name, or a checkpoint file
  if [ -f "$m" ]; then paths+=("$m"); else paths+=("assets/models/$m.safetensors"); fi
done
"$PY" -m fapn_core.cli evaluate --models "${paths[@]}" --data "synthetic:n=$N,seed=2,size=256x512" --out "$OUT" "$@"
