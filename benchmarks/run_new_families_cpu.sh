#!/usr/bin/env bash
# The new families' CPU tables of docs/performance.md (MaskFormer Swin-L and R101 at 640×640, PointRend instance
# and PanopticFCN R50 at 800×1333, FaPN vs FPN, random weights, with time per stage; PointRend's subdivision per
# detection count), one after another on an otherwise idle machine.
# Output: runs/bench/*.md (the tables as printed) and *.err (progress).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench}
REPEATS=${REPEATS:-2}
mkdir -p "$OUT"
"$PY" -m fapn_core.cli bench maskformer --repeats "$REPEATS" > "$OUT/maskformer_swinl.md" 2> "$OUT/maskformer_swinl.err"
"$PY" -m fapn_core.cli bench maskformer --maskformer-models fpn_r101_maskformer fapn_r101_maskformer \
  --repeats "$REPEATS" > "$OUT/maskformer_r101.md" 2> "$OUT/maskformer_r101.err"
"$PY" -m fapn_core.cli bench rcnn --rcnn-models fpn_r50_pointrend_rcnn fapn_r50_pointrend_rcnn --repeats "$REPEATS" \
  > "$OUT/pointrend_rcnn.md" 2> "$OUT/pointrend_rcnn.err"
"$PY" -m fapn_core.cli bench panopticfcn --repeats "$REPEATS" > "$OUT/panopticfcn.md" 2> "$OUT/panopticfcn.err"
"$PY" -m fapn_core.cli bench subdivision --repeats "$REPEATS" > "$OUT/pointrend_subdivision.md" \
  2> "$OUT/pointrend_subdivision.err"
echo "tables in $OUT/"
