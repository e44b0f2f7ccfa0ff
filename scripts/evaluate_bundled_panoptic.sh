#!/usr/bin/env bash
# Reproduce the README's Panoptic FPN table: the bundled FPN/FaPN panoptic pair on the same 200 held-out synthetic
# scenes (seed 2) as the semantic pair: COCO box/mask/Boundary AP by size, PQ things/stuff, the semantic head's bands.
MODELS="fpn_r18_panoptic fapn_r18_panoptic" OUT=${OUT:-runs/eval_bundled_panoptic} \
  exec bash "$(dirname "$0")/evaluate_bundled.sh" "$@"
