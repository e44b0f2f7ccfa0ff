#!/usr/bin/env bash
# One short script for a lent CUDA machine: the gpu-marked tests, the DCN and model benchmarks with AMP, and
# FaPN-R18 frames per second at 512×1024. Writes everything to $OUT (or ./gpu_check).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
source scripts/env.sh
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -m pytest -q -m gpu tests/test_gpu.py > "$OUT/gpu_tests.txt" 2>&1
fapn bench dcn --device cuda --repeats 10 > "$OUT/bench_dcn.md" 2>&1
fapn bench models --device cuda --repeats 10 > "$OUT/bench_models_fp32.md" 2>&1
fapn bench models --device cuda --amp --repeats 10 > "$OUT/bench_models_amp.md" 2>&1
fapn bench train --device cuda --repeats 5 > "$OUT/bench_train.md" 2>&1
tail -n 30 "$OUT"/*.txt "$OUT"/*.md
