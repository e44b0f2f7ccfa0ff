#!/usr/bin/env bash
# The bundled MaskFormer pair: plain vs FaPN pixel decoder on R18 with a small transformer decoder
# (128 wide, 3 layers, 50 queries), the semantic pair's data, crops, batch and seed; lr 5e-4, 1500 steps.
MODELS="fpn_r18_maskformer fapn_r18_maskformer" LR=${LR:-5e-4} STEPS=${STEPS:-1500} OUT=${OUT:-runs/bundled_maskformer} \
  exec bash "$(dirname "$0")/train_bundled.sh" "$@"
