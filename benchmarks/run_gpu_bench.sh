#!/usr/bin/env bash
# Run the full-size ECGFounder LoRA throughput benchmark on a CUDA machine that has torch
# (and optionally peft wheels in .whl/) but no install of this project: the package is
# assembled under /tmp/ns with the namespace mapping pyproject.toml declares.
# Usage: bash benchmarks/run_gpu_bench.sh [OUT_DIR] [extra args for gpu_lora_throughput]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu}}; shift || true
mkdir -p "$out"
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
out=$(cd "$out" && pwd)
# Run from /tmp: with the repo root as cwd, `python -m` would import the unmapped source tree.
(cd /tmp && python3 -m anyecg_edge.benchmarks.gpu_lora_throughput --json "$out/gpu_lora.json" "$@") 2>&1 | tee "$out/gpu_lora.log"
