#!/usr/bin/env bash
# `make test-armhf`: the device side on 32-bit Raspberry Pi OS's base (Debian 12 bookworm
# armhf, Python 3.11) under qemu-user emulation - as far as wheels allow.
#
#   benchmarks/arm64/armhf.sh [MODELS_DIR]    (as root; MODELS_DIR: .tflite exports with their
#                                              manifests; default: compare.py export's)
#
# PyPI has no armv7l wheels for numpy, scipy, onnxruntime or ai-edge-litert (measured by
# armhf_wheels.py), so this does what a 32-bit user can: numpy / scipy from Debian (apt),
# a venv that sees them, tflite-runtime (PyPI has a cp311 armv7l wheel) for the .tflite, and
# this tree without its dependencies. No ONNX (no runtime), no wfdb (needs numpy >= 1.26),
# so the record goes in as a .npy. predict runs on each .tflite on both sides and the
# probabilities are compared (the tolerance of compare.py's tflite row).
#
# Environment: ARMHF_ROOT (default /var/cache/anyecg-armhf), DEBIAN_MIRROR, PYTHON (host
# interpreter, default .venv/bin/python), OUT (default benchmarks/results/armhf_emulated.json).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${ARMHF_ROOT:-/var/cache/anyecg-armhf}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
OUT=${OUT:-$REPO/benchmarks/results/armhf_emulated.json}
MODELS=${1:-}
HOST_DATA=$(cd "$REPO/.." && pwd)/shared/data
INNER_REPO=/work/$(basename "$REPO")
WORK=/work/armhf-run

die() { echo "test-armhf: $*" >&2; exit 1; }
log() { echo "== test-armhf: $*" >&2; }
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc)"
case "$ROOT" in "$REPO"|"$REPO"/*) die "ARMHF_ROOT=$ROOT is inside the checkout" ;; esac
[[ -f $HOST_DATA/mitdb/100.hea ]] || die "$HOST_DATA/mitdb/100.hea missing (the record used)"

command -v qemu-arm-static >/dev/null && command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap
}
[[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-arm 2>/dev/null || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-arm ]] || die "binfmt handler qemu-arm not registered"

if [[ ! -f $ROOT/.anyecg-root-ok ]]; then
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    log "debootstrap armhf bookworm into $ROOT (~20 min)"
    rm -rf "$ROOT" && mkdir -p "$ROOT"
    debootstrap --arch=armhf \
        --include=python3,python3-venv,python3-pip,ca-certificates,python3-numpy,python3-scipy \
        bookworm "$ROOT" "$mirror" >"$ROOT.debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $ROOT.debootstrap.log"
    touch "$ROOT/.anyecg-root-ok"
fi
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

# /proc and /dev only, never the host /sys (see run.sh).
mounted=()
cleanup() { for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" || true; done; }
trap cleanup EXIT
mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc" && mounted+=("$ROOT/proc"); }
mountpoint -q "$ROOT/dev" || { mount --bind /dev "$ROOT/dev" && mounted+=("$ROOT/dev"); }

log "copying the working tree and the models"
rm -rf "$ROOT$INNER_REPO" "$ROOT$WORK" && mkdir -p "$ROOT$INNER_REPO" "$ROOT$WORK/host" "$ROOT$WORK/device"
(cd "$REPO" && git ls-files -co --exclude-standard -z \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT$INNER_REPO"
if [[ -z $MODELS ]]; then
    MODELS=$ROOT$WORK/models
    "$PYTHON" "$REPO/benchmarks/arm64/compare.py" export --out "$MODELS" --data "$HOST_DATA"
fi
cp "$MODELS"/*.tflite "$MODELS"/*.tflite.manifest.json "$ROOT$WORK/"
"$PYTHON" - "$HOST_DATA/mitdb/100.hea" "$ROOT$WORK/mitdb100_mv.npy" <<'EOF'
import sys, numpy as np
from anyecg_edge.io.records import read_record
rec = read_record(sys.argv[1], lead="MLII")
np.save(sys.argv[2], np.asarray(rec.signal_mv, dtype=np.float64))
print(f"{sys.argv[2]}: {rec.signal_mv.size} samples at {rec.fs} Hz", file=sys.stderr)
EOF

in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin \
    LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"; }
log "armv7l: what pip finds for .[edge,ble] (binary only)"
[[ -x $ROOT/opt/venv/bin/python ]] || in_root /usr/bin/python3 -m venv --system-site-packages /opt/venv
set +e
in_root python -m pip install --dry-run --only-binary=:all: "$INNER_REPO[runtime]" \
    >"$ROOT$WORK/pip_runtime.log" 2>&1
in_root python -m pip install --dry-run --only-binary=:all: "ai-edge-litert" \
    >"$ROOT$WORK/pip_litert.log" 2>&1
set -e
log "armv7l: Debian numpy/scipy + tflite-runtime + this tree (no deps)"
in_root python -m pip install -q --only-binary=:all: tflite-runtime "click>=8.1" "rich>=13" \
    || die "tflite-runtime install failed"
in_root python -m pip install -q --no-deps -e "$INNER_REPO" || die "installing the tree failed"
in_root python -m pip list --format=json >"$ROOT$WORK/pip_list.json"

for m in "$ROOT$WORK"/*.tflite; do
    name=$(basename "$m" .tflite)
    "$PYTHON" -m anyecg_edge predict --model "$m" --input "$ROOT$WORK/mitdb100_mv.npy" --fs 360 \
        --threads 1 --json "$ROOT$WORK/host/$name.json" >/dev/null
    in_root python -m anyecg_edge predict --model "$WORK/$name.tflite" \
        --input "$WORK/mitdb100_mv.npy" --fs 360 --threads 1 --json "$WORK/device/$name.json" \
        >/dev/null 2>"$ROOT$WORK/device/$name.stderr" || die "predict $name on armhf failed: $(tail -1 "$ROOT$WORK/device/$name.stderr")"
done
"$PYTHON" "$REPO/benchmarks/arm64/armhf_compare.py" --work "$ROOT$WORK" \
    --os "$(in_root sh -c '. /etc/os-release; echo $PRETTY_NAME')" --arch "$(in_root uname -m)" \
    --python "$(in_root python -c 'import platform; print(platform.python_version())')" \
    --out "$OUT"
