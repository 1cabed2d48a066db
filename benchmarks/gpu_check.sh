#!/usr/bin/env bash
# GPU check (issue 15): wherever a CUDA GPU is present,
#  1. the fast path (AMP + channels_last, then + torch.compile) of three presets against timm's own models, both
#     timm eager fp32 and timm under the identical settings: CUDA-event timed, interleaved rounds, ratios with
#     95% bootstrap intervals, each variant's peak CUDA memory, compile times and logits against fp32;
#  2. the composed presets against timm at identical settings (fp16 AMP, channels_last, eager) at batch 1 and BATCH;
#  3. `explorer bench` (the CLI's and the Measure tab's own code path) of poolformer_s12 on CUDA, as JSON;
#  4. with FMNIST_DIR set (the folder of Fashion-MNIST's idx files): one epoch of fmnist_hybrid_wide in fp32,
#     bf16 and fp16 (loss scaling) through `explorer train --device cuda`, images/s and test accuracy of each.
# Without a GPU it says so and exits 0.
#
#   bash benchmarks/gpu_check.sh                 (BATCH=64, SECONDS_PER_MODEL=30 by default)
#   BATCH=256 FMNIST_DIR=/usr/share/datasets/fashion-mnist bash benchmarks/gpu_check.sh
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh      (default: python3, the one with torch on most images)
set -euo pipefail
cd "$(dirname "$0")/.."
python() { "${PYTHON:-python3}" "$@"; }
if ! python -c 'import torch' 2>/dev/null; then  # not "no GPU": a GPU machine's interpreter may be another one
  echo "gpu_check: ${PYTHON:-python3} cannot import torch; set PYTHON to the interpreter that has it" >&2
  exit 1
fi
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check"
  exit 0
fi
BATCH=${BATCH:-64}
SECONDS_PER_MODEL=${SECONDS_PER_MODEL:-30}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
python -c 'import sys, torch, timm; print("python", sys.version.split()[0], "torch", torch.__version__, "timm",
timm.__version__, "cuDNN", torch.backends.cudnn.version(), "TF32 matmul", torch.backends.cuda.matmul.allow_tf32)'

echo "== 1. fast path (+ compile) vs timm eager fp32 and timm at identical settings, batch $BATCH"
for model in poolformer_s12 convformer_s18 caformer_s18; do
  python benchmarks/bench_fast_path.py --models "$model" --device cuda --batch "$BATCH" --compile \
    --seconds "$SECONDS_PER_MODEL"
done

echo "== 2. composed presets vs timm at identical settings (fp16 AMP, channels_last, eager), batch 1 and $BATCH"
python benchmarks/bench_vs_timm.py --device cuda --dtype fp16 --channels-last --batches 1 "$BATCH" \
  --seconds "$((SECONDS_PER_MODEL / 3 + 1))"

echo "== 3. explorer bench poolformer_s12 --device cuda --dtype fp16 --channels-last --batch-size $BATCH"
python -m explorer bench poolformer_s12 --device cuda --dtype fp16 --channels-last --batch-size "$BATCH" --json |
  python -c "import json, sys; d = json.load(sys.stdin); s = d['stamp']
print(f\"{d['throughput']:.1f} img/s, median {d['latency_ms_median']:.2f} ms per batch of {s['batch_size']},\",
      f\"peak {d['peak_mem_bytes'] / 2**20:.1f} MiB ({s['peak_mem_rule']}), timer: {s['timer']},\",
      f\"{100 * d['peak_fraction']:.1f}% of the fp16 matmul peak, {s['device_name']}\")"

if [ -n "${FMNIST_DIR:-}" ]; then
  echo "== 4. one epoch of fmnist_hybrid_wide on CUDA (60,000 images, batch 128) in each precision"
  out=$(mktemp -d)
  for amp in none bf16 fp16; do
    python -m explorer train assets/fmnist/specs/fmnist_hybrid_wide.json --device cuda --amp "$amp" --epochs 1 \
      --data-dir "$FMNIST_DIR" --out "$out/$amp.safetensors" --quiet --json |
      python -c "import json, sys; d = json.load(sys.stdin); ex = d['train_examples'] * d['epochs']
print(f\"amp $amp ({d['amp'] or 'fp32'}): {ex / d['train_time_s']:.0f} img/s over the epoch ({d['train_time_s']} s,\",
      f\"first step {d['first_step_s']} s), test accuracy {100 * d['test_accuracy']:.2f}% on {d['test_n']} images\")"
  done
  rm -rf "$out"
fi
