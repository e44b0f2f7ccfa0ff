#!/usr/bin/env bash
# The README's tables of the derived pairs (scripts/train_derived_pairs.sh): PointRend instance and PanopticFCN,
# FPN vs FaPN on the bundled Panoptic FPN pair's frozen bodies, on the same 200 held-out synthetic scenes (seed 2) as
# every bundled pair. Output: runs/eval_derived_<family>/.
set -euo pipefail
cd "$(dirname "$0")/.."
IN=${IN:-runs/derived}
FAMILIES=${FAMILIES:-"pointrend_rcnn panopticfcn"}
for family in $FAMILIES; do
  MODELS="$IN/fpn_r18_$family/fpn_r18_$family.safetensors $IN/fapn_r18_$family/fapn_r18_$family.safetensors" \
    OUT="runs/eval_derived_$family" bash "$(dirname "$0")/evaluate_bundled.sh" "$@"
done
