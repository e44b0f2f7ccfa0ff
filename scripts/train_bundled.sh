#!/usr/bin/env bash
# Reproduce a bundled FPN/FaPN pair (assets/models/): same recipe, same data, same seed for both. The semantic FPN
# pair by default; MODELS / LR / STEPS / OUT choose another (scripts/train_bundled_maskformer.sh).
# CPU (2 cores): the two runs go side by side with one thread each. On a CUDA machine pass DEVICE=cuda
# (and THREADS is ignored). Runs resume from runs/bundled/<model>/train_state.pt when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"fpn_r18_semfpn fapn_r18_semfpn"}
STEPS=${STEPS:-1200}
LR=${LR:-1e-3}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-1}
OUT=${OUT:-runs/bundled}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/synth_train}
# The training split is rendered once to disk (seed 0) so that both runs read identical images cheaply.
if [ ! -f "$DATA/dataset.json" ]; then
  "$PY" -m fapn_core.cli make-synthetic "$DATA" --n 3000 --seed 0 --size 256x512 --split train
fi
common=(--data "folder:$DATA" --val-data "synthetic:n=48,seed=1,size=256x512"
        --steps "$STEPS" --batch-size 8 --crop 192x192 --scale 0.75x1.25 --lr "$LR" --weight-decay 1e-4
        --warmup 100 --seed 0 --workers 0 --threads "$THREADS" --device "$DEVICE" --eval-every 200
        --val-images 48 --ckpt-every 50)
mkdir -p "$OUT"
for model in $MODELS; do
  "$PY" -m fapn_core.cli train --model "$model" --out "$OUT/$model" "${common[@]}" \
      > "$OUT/$model.stdout" 2>&1 &
done
wait
for model in $MODELS; do
  cp "$OUT/$model/$model.safetensors" "$OUT/$model/$model.json" assets/models/
done
echo "bundled models written to assets/models/"
