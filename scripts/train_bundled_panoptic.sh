#!/usr/bin/env bash
# Reproduce the bundled FPN/FaPN Panoptic FPN pair (assets/models/): same recipe, data and seed for both.
# CPU (2 cores): the two runs go side by side with one thread each; on a CUDA machine pass DEVICE=cuda.
# Runs resume from runs/panoptic/<model>/train_state.pt when interrupted (the schedule is a function of the step).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-1000}
SEED=${SEED:-0}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-1}
OUT=${OUT:-runs/panoptic_s$SEED}
PY=${PY:-.venv/bin/python}
# R18 (48-channel stem: 48/96/192/384), 96-channel neck, light heads: the pair stays under 60 MB in float16.
# Short-schedule RPN/ROI sampling (1000 pre-NMS / 500 post-NMS proposals, 256 ROIs per image) for CPU training.
common=(--data "synthetic:n=3000,seed=0,size=256x512"
        --steps "$STEPS" --batch-size 4 --crop 192x256 --scale 0.75x1.25 --lr 6e-4 --weight-decay 1e-4
        --warmup 100 --seed "$SEED" --workers 0 --threads "$THREADS" --device "$DEVICE" --ckpt-every 25
        --set stem_out_channels=48 --set neck_channels=96 --set box_fc_dim=256 --set mask_conv_dims=64
        --set head_conv_dims=64 --set rpn_pre_nms_topk_train=1000 --set rpn_post_nms_topk_train=500
        --set roi_batch_size_per_image=256)
mkdir -p "$OUT"
for model in fpn_r18_panoptic fapn_r18_panoptic; do
  "$PY" -m fapn_core.cli train --model "$model" --out "$OUT/$model" "${common[@]}" \
      > "$OUT/$model.stdout" 2>&1 &
done
wait
if [ "${INSTALL:-1}" = 1 ]; then
  for model in fpn_r18_panoptic fapn_r18_panoptic; do
    cp "$OUT/$model/$model.safetensors" "$OUT/$model/$model.json" assets/models/
  done
  echo "bundled panoptic models written to assets/models/"
fi
