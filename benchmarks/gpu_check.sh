#!/usr/bin/env bash
# GPU training throughput check: ResNet-50 @224 and Inception-v3 @299, batch 256, bf16 autocast +
# channels_last + torch.compile against fp32 eager; prints a markdown table (benchmarks/gpu_bench.py).
# On a machine without CUDA it says so and exits 0.
#
#   benchmarks/gpu_check.sh                      # from the project root
#   PYTHON=/path/to/python BATCH=128 benchmarks/gpu_check.sh --json benchmarks/results/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); nothing measured."
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec "$PYTHON" benchmarks/gpu_bench.py --batch "${BATCH:-256}" --warmup "${WARMUP:-5}" --steps "${STEPS:-15}" "$@"
