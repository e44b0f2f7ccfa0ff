#!/usr/bin/env bash
# PanopticFCN and PointRend-instance FPN/FaPN pairs on the bundled Panoptic FPN pair's trained bodies: each model
# starts from fpn/fapn_r18_panoptic (--init: backbone and neck; PointRend also RPN and box head), keeps them frozen
# (--train-only) and trains only its own heads on the synthetic benchmark, one recipe, seed 0, the two necks side by
# side with one thread each. What FaPN vs FPN then compares is the bodies the Panoptic FPN pair learned, read by a
# box-free head (PanopticFCN) or refined at points (PointRend). Output: runs/derived/<model>/<model>.safetensors.
# Runs resume from their train_state.pt when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/derived}
STEPS=${STEPS:-600}
DEVICE=${DEVICE:-auto}
FAMILIES=${FAMILIES:-"pointrend_rcnn panopticfcn"}
# the bundled pair's widths (so its weights fit) and its short-schedule sampling
common=(--data "synthetic:n=3000,seed=0,size=256x512" --steps "$STEPS" --batch-size 4 --crop 192x256
        --scale 0.75x1.25 --lr 6e-4 --weight-decay 1e-4 --warmup 50 --seed 0 --workers 0 --threads 1
        --device "$DEVICE" --ckpt-every 25 --set stem_out_channels=48 --set neck_channels=96)
declare -A extra=(
  [pointrend_rcnn]="--train-only roi_heads.mask_head --set box_fc_dim=256 --set mask_conv_dims=64
                    --set rpn_pre_nms_topk_train=1000
                    --set rpn_post_nms_topk_train=500 --set roi_batch_size_per_image=256"
  [panopticfcn]="--train-only top_block,semantic_fpn,feature_encoder,position_head,kernel_head,thing_generator,stuff_generator
                 --set head_conv_dims=64"
)
mkdir -p "$OUT"
for family in $FAMILIES; do
  pids=()
  for neck in fpn fapn; do
    model="${neck}_r18_${family}"
    # shellcheck disable=SC2086
    "$PY" -m fapn_core.cli train --model "$model" --init "${neck}_r18_panoptic" --out "$OUT/$model" \
        "${common[@]}" ${extra[$family]} > "$OUT/$model.stdout" 2>&1 &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "a $family run failed: see $OUT/*_$family.stdout" >&2; exit 1; }
  done
done
echo "checkpoints in $OUT/*/"
