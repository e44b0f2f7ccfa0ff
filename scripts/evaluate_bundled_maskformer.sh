#!/usr/bin/env bash
# Reproduce the README's MaskFormer table: the bundled plain/FaPN MaskFormer pair on the same 200 held-out synthetic
# scenes (seed 2) as the semantic pair, with the same metrics.
MODELS="fpn_r18_maskformer fapn_r18_maskformer" OUT=${OUT:-runs/eval_bundled_maskformer} \
  exec bash "$(dirname "$0")/evaluate_bundled.sh" "$@"
