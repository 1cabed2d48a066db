#!/usr/bin/env bash
# Reproduce assets/fmnist/: one checkpoint per token-mixer family under the same budget, then RESULTS.md.
# One command:  bash scripts/reproduce_fmnist_table.sh [OUT_DIR]
#
# The shipped table's budget: 1 epoch per family (468 steps of batch 128), seed 0, 1 CPU thread, every family with
# the same stem, widths, depths and recipe (assets/fmnist/specs/). Deterministic on one machine for a given seed
# and thread count. Set FAMILY_EPOCHS to change the shared budget, THREADS for more CPU threads, JOBS to train
# that many families side by side. LONG_EPOCHS=N also trains the hybrid (LONG_SPEC) for N epochs as an extra row.
# Needs Fashion-MNIST: Debian's dataset-fashion-mnist, FASHION_MNIST_DIR=DIR holding the idx files, or network
# access for torchvision (add --download to the explorer train lines).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-assets/fmnist}"
FAMILY_EPOCHS="${FAMILY_EPOCHS:-1}"
THREADS="${THREADS:-1}"
JOBS="${JOBS:-1}"
LONG_EPOCHS="${LONG_EPOCHS:-}"
LONG_SPEC="${LONG_SPEC:-hybrid}"
mkdir -p "$OUT"
printf '%s\n' identity random pooling sepconv attention spatial_mlp hybrid | xargs -P "$JOBS" -I{} \
  explorer train "assets/fmnist/specs/fmnist_{}.json" --dataset fashion-mnist --epochs "$FAMILY_EPOCHS" \
    --seed 0 --threads "$THREADS" --out "$OUT/fmnist_{}.safetensors"
if [ -n "$LONG_EPOCHS" ]; then
  explorer train "assets/fmnist/specs/fmnist_${LONG_SPEC}.json" --dataset fashion-mnist --epochs "$LONG_EPOCHS" \
    --seed 0 --threads "$THREADS" --out "$OUT/fmnist_${LONG_SPEC}_${LONG_EPOCHS}ep.safetensors"
fi
python scripts/fmnist_results_table.py "$OUT" > "$OUT/RESULTS_TABLE.md"  # RESULTS.md = this table + recipe + findings
cat "$OUT/RESULTS_TABLE.md"
