#!/usr/bin/env bash
# Run the AnyECG-Edge bench on a target device (Raspberry Pi 4/5, any aarch64/x86 Linux box)
# with exported models copied from the workstation, plus the runtimes' own native tools
# where they are installed. See benchmarks/target_hardware.md for the whole method.
#
#   benchmarks/run_on_device.sh MODELS_DIR [OUT_DIR]
#
# MODELS_DIR: exported models with their manifests, e.g. from `anyecg-edge demo`
#   (demo_out/exports/*.onnx|*.tflite + *.manifest.json) or `anyecg-edge export`.
# OUT_DIR: where bench.json, report.html/.md and the PNG plots go
#   (default: bench_<hostname>_<date>).
#
# Environment:
#   THREADS=1            inference threads (1 = the single-core number the README compares)
#   ITERATIONS=          timed calls per model (default: the bench's auto, 300-3000)
#   COMPARE=old.json     also show regressions against an earlier bench JSON
#   INSTALL=1            pip install "anyecg-edge[runtime]" into ./.venv-bench first
#   WHEEL=path.whl       install this wheel instead of the index package (with INSTALL=1)
#   ORT_PERF_TEST=path   onnxruntime_perf_test binary (default: from PATH)
#   LITERT_BENCH=path    LiteRT/TFLite benchmark_model binary (default: from PATH)
#   NATIVE_RUNS=1000     runs for the native tools
set -euo pipefail

MODELS_DIR=${1:?usage: run_on_device.sh MODELS_DIR [OUT_DIR]}
OUT_DIR=${2:-bench_$(hostname)_$(date +%Y%m%d_%H%M)}
THREADS=${THREADS:-1}
NATIVE_RUNS=${NATIVE_RUNS:-1000}
mkdir -p "$OUT_DIR"

if [[ "${INSTALL:-0}" == "1" ]]; then
    python3 -m venv .venv-bench
    # shellcheck disable=SC1091
    source .venv-bench/bin/activate
    python -m pip install --upgrade pip
    if [[ -n "${WHEEL:-}" ]]; then
        python -m pip install "${WHEEL}[runtime]"
    else
        python -m pip install "anyecg-edge[runtime]"
    fi
fi

if ! command -v anyecg-edge >/dev/null; then
    echo "error: anyecg-edge is not installed here (run with INSTALL=1, or pip install \"anyecg-edge[runtime]\")" >&2
    exit 2
fi

# Every export in MODELS_DIR that has its manifest: NAME=PATH, NAME = file stem.
models=()
shopt -s nullglob
for f in "$MODELS_DIR"/*.onnx "$MODELS_DIR"/*.tflite; do
    if [[ -f "$f.manifest.json" ]]; then
        models+=("--models" "$(basename "${f%.*}")-${f##*.}=$f")
    else
        echo "skipping $f: no $f.manifest.json next to it" >&2
    fi
done
if [[ ${#models[@]} -eq 0 ]]; then
    echo "error: no .onnx/.tflite exports with manifests in $MODELS_DIR" >&2
    exit 2
fi

{
    echo "# device"
    uname -a
    grep -m1 -E "^(Model|Hardware|model name)" /proc/cpuinfo || true
    nproc
    command -v vcgencmd >/dev/null && vcgencmd measure_temp && vcgencmd get_throttled || true
} | tee "$OUT_DIR/device.txt"

# 1. The same Python bench as on the workstation (device runtimes only: no torch needed).
args=(bench --threads "$THREADS" "${models[@]}" --stream-s 0 --json "$OUT_DIR/bench.json" --report "$OUT_DIR")
[[ -n "${ITERATIONS:-}" ]] && args+=(--iterations "$ITERATIONS")
[[ -n "${COMPARE:-}" ]] && args+=(--compare "$COMPARE")
anyecg-edge "${args[@]}" | tee "$OUT_DIR/bench.txt"

# 2. The runtimes' own benchmark tools (no Python in the loop), where installed.
ORT_PERF_TEST=${ORT_PERF_TEST:-$(command -v onnxruntime_perf_test || true)}
LITERT_BENCH=${LITERT_BENCH:-$(command -v benchmark_model || true)}
for f in "$MODELS_DIR"/*.onnx; do
    if [[ -n "$ORT_PERF_TEST" ]]; then
        echo "# onnxruntime_perf_test $f" | tee -a "$OUT_DIR/native.txt"
        # -I: generated input (free batch dim = 1); -m times -r N: N runs; -x: intra-op threads
        "$ORT_PERF_TEST" -e cpu -I -m times -r "$NATIVE_RUNS" -x "$THREADS" "$f" 2>&1 | tee -a "$OUT_DIR/native.txt"
    fi
done
for f in "$MODELS_DIR"/*.tflite; do
    if [[ -n "$LITERT_BENCH" ]]; then
        echo "# benchmark_model $f" | tee -a "$OUT_DIR/native.txt"
        "$LITERT_BENCH" --graph="$f" --num_threads="$THREADS" --num_runs="$NATIVE_RUNS" --warmup_runs=20 2>&1 | tee -a "$OUT_DIR/native.txt"
    fi
done
[[ -z "$ORT_PERF_TEST" && -z "$LITERT_BENCH" ]] && echo "(no onnxruntime_perf_test / benchmark_model on PATH: native tool runs skipped)"

echo "report: $OUT_DIR/report.html   rows: $OUT_DIR/bench.json"
