#!/usr/bin/env bash
# Every CPU table of docs/performance.md, one after another on an otherwise idle machine (~20 min on 2 cores).
# Output: runs/bench/*.md (the tables as printed) and *.err (progress).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench}
mkdir -p "$OUT"
"$PY" -m fapn_core.cli bench dcn --sizes 512x1024 > "$OUT/dcn_512.md" 2> "$OUT/dcn_512.err"
"$PY" -m fapn_core.cli bench dcn --sizes 1024x2048 --no-backward > "$OUT/dcn_1024.md" 2> "$OUT/dcn_1024.err"
"$PY" -m fapn_core.cli bench models > "$OUT/models.md" 2> "$OUT/models.err"
"$PY" -m fapn_core.cli bench models --models fpn_r18_semfpn fapn_r18_semfpn --sizes 512x1024 --zero-offsets \
  > "$OUT/models_zero_offsets.md" 2> "$OUT/models_zero_offsets.err"
"$PY" -m fapn_core.cli bench models --models fpn_r18_semfpn fapn_r18_semfpn --sizes 512x1024 --channels-last \
  > "$OUT/models_channels_last.md" 2> "$OUT/models_channels_last.err"
FAPN_DCN_IMPL=fast "$PY" -m fapn_core.cli bench models --models fpn_r18_semfpn fapn_r18_semfpn --sizes 512x1024 \
  > "$OUT/models_fast_path.md" 2> "$OUT/models_fast_path.err"
"$PY" -m fapn_core.cli bench train > "$OUT/train.md" 2> "$OUT/train.err"
"$PY" -m fapn_core.cli bench rcnn > "$OUT/rcnn.md" 2> "$OUT/rcnn.err"
echo "tables in $OUT/"
