#!/usr/bin/env bash
# The issue-12 check on a small cohort: default recipe at every stage, default int8 exports.
# usage: benchmarks/int8_small_cohort.sh [OUT]   (~4 min on 2 cores; prints each parity verdict)
set -euo pipefail
OUT=${1:-int8_small_cohort}
A=${ANYECG:-anyecg-edge}
mkdir -p "$OUT" && cd "$OUT"
$A -q data synth --out cohort --visits 120 --seed 11
$A -q data build --mcmed cohort --out corpus
$A -q train lora --arch net1d-tiny --epochs 4 --corpus corpus --out teacher --threads 1
$A -q train distill --teacher teacher --corpus corpus --out student --threads 1
status=0
for fmt in onnx tflite; do
  $A -q export --model student --format "$fmt" --int8 --calib corpus --out "student_int8.$fmt" || status=$?
done
exit $status
