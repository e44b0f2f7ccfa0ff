#!/usr/bin/env bash
# The seven-neck ablation (the paper's Table 1 at R18 on the synthetic benchmark): one shorter recipe for all
# necks (600 steps, batch 8, 160×160 crops), same data, same seed (SEED=0 default; SEED=1 … for more runs).
# CPU (2 cores): two runs at a time with one thread each, about 50 minutes per seed here; DEVICE=cuda on a GPU.
# Runs resume from runs/ablation/seed<SEED>/<model>/train_state.pt when interrupted.
# Then: scripts/evaluate_ablation.sh for the table.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
SEED=${SEED:-0}
DEVICE=${DEVICE:-auto}
THREADS=${THREADS:-1}
JOBS=${JOBS:-2}
OUT=${OUT:-runs/ablation/seed$SEED}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/synth_train}
if [ ! -f "$DATA/dataset.json" ]; then
  "$PY" -m fapn_core.cli make-synthetic "$DATA" --n 3000 --seed 0 --size 256x512 --split train
fi
mkdir -p "$OUT"
# Alignment necks first: they take about twice as long, so two slots finish close together.
MODELS=(fapn_r18_semfpn fam_se_r18_semfpn fam_r18_semfpn fam_noref_fsm_r18_semfpn
        fpn_r18_semfpn fpn_extra_conv_r18_semfpn deconv_fsm_r18_semfpn)
export PY DATA STEPS SEED DEVICE THREADS OUT
printf '%s\n' "${MODELS[@]}" | xargs -P "$JOBS" -I{} bash -c '
  "$PY" -m fapn_core.cli train --model {} --out "$OUT/{}" --data "folder:$DATA" \
    --val-data "synthetic:n=24,seed=1,size=256x512" --steps "$STEPS" --batch-size 8 --crop 160x160 \
    --scale 0.75x1.25 --lr 1e-3 --weight-decay 1e-4 --warmup 50 --seed "$SEED" --workers 0 \
    --threads "$THREADS" --device "$DEVICE" --eval-every "$STEPS" --val-images 24 --ckpt-every 50 \
    > "$OUT/{}.stdout" 2>&1 && echo "done {}"'
echo "ablation checkpoints in $OUT/<model>/"
