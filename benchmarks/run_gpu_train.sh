#!/usr/bin/env bash
# End-to-end LoRA training of the full-size ECGFounder through the real CLI on a GPU:
# synthetic MC-MED-shaped cohort -> corpus -> `train lora` (bf16, torch.compile) -> evaluate.
# The trainer logs segments/s and GPU memory; this measures the whole training path
# (CorpusDataset + DataLoader + fused LoRA + optimizer + periodic evaluation), not a kernel.
# Usage: VISITS=600 BATCH=1024 STEPS=60 bash benchmarks/run_gpu_train.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu_train}}
visits=${VISITS:-600}; batch=${BATCH:-1024}; steps=${STEPS:-60}; arch=${ARCH:-ecgfounder}; workers=${WORKERS:-8}
device=${DEVICE:-cuda}; precision=${PRECISION:-bf16}; compile=${COMPILE:---compile}
mkdir -p "$out"; out=$(cd "$out" && pwd)
source benchmarks/gpu_env.sh
work=${WORK:-/tmp/anyecg_gpu_train}; rm -rf "$work"; mkdir -p "$work"
cd /tmp
cli() { python3 -m anyecg_edge "$@"; }
t0=$(date +%s)
cli data synth --out "$work/cohort" --visits "$visits" --seed 0 --segments-per-visit 3 5 --segment-s 120 150 --no-defects
t1=$(date +%s)
cli data build --mcmed "$work/cohort" --out "$work/corpus" --workers "$(nproc)" --policy visit --no-progress
t2=$(date +%s)
cli -v train lora --arch "$arch" --corpus "$work/corpus" --out "$work/run" --device "$device" \
  --precision "$precision" $compile --batch-size "$batch" --workers "$workers" --max-steps "$steps" \
  --log-every 10 --patience 0 2>&1 | tee "$out/train_lora.log"
t3=$(date +%s)
echo "{\"synth_s\": $((t1-t0)), \"build_s\": $((t2-t1)), \"train_s\": $((t3-t2))}" > "$out/stage_times.json"
cp "$work/corpus/manifest.json" "$out/corpus_manifest.json"
find "$work/run" -maxdepth 1 \( -name "*.json" -o -name "train_log.jsonl" \) -exec cp {} "$out/" \;
ls -la "$work/run"
