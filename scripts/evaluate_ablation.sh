#!/usr/bin/env bash
# Evaluate the seven-neck ablation (scripts/train_ablation.sh) on the README's 200 held-out synthetic scenes (seed 2)
# for every trained seed, then print the combined table (scripts/ablation_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
N=${N:-200}
ROOT=${ROOT:-runs/ablation}
MODELS=(fpn_r18_semfpn fpn_extra_conv_r18_semfpn fam_r18_semfpn fam_se_r18_semfpn fapn_r18_semfpn
        deconv_fsm_r18_semfpn fam_noref_fsm_r18_semfpn)
for run in "$ROOT"/seed*/; do
  if [ -f "$run/eval/summary.json" ] && [ -z "${FORCE:-}" ]; then
    echo "already evaluated: $run (FORCE=1 to redo)" >&2
    continue
  fi
  ckpts=()
  for m in "${MODELS[@]}"; do
    if [ -f "$run/$m/$m.safetensors" ]; then ckpts+=("$run/$m/$m.safetensors"); fi
  done
  if [ "${#ckpts[@]}" -ne "${#MODELS[@]}" ]; then
    echo "skipping $run: ${#ckpts[@]} of ${#MODELS[@]} necks trained" >&2
    continue
  fi
  "$PY" -m fapn_core.cli evaluate --models "${ckpts[@]}" --data "synthetic:n=$N,seed=2,size=256x512" \
    --out "$run/eval" "$@" > "$run/eval.log" 2>&1
done
"$PY" scripts/ablation_table.py "$ROOT"
