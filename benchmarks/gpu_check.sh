#!/usr/bin/env bash
# GPU check (issue 15): wherever a CUDA GPU is present, the fast path (AMP + channels_last, then + torch.compile)
# against timm's own models under identical settings, for three presets: CUDA-event timed, interleaved rounds,
# ratios with 95% bootstrap intervals, and each variant's peak CUDA memory. Without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh                 (BATCH=64, SECONDS_PER_MODEL=30 by default)
#   BATCH=256 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for model in poolformer_s12 convformer_s18 caformer_s18; do
  python benchmarks/bench_fast_path.py --model "$model" --device cuda --batch "${BATCH:-64}" --compile \
    --seconds "${SECONDS_PER_MODEL:-30}"
done
