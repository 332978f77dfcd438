#!/usr/bin/env bash
# `make test-arm64`: the device side on a Debian 12 arm64 userland (Raspberry Pi OS 64-bit's
# base, Python 3.11) under qemu user-mode emulation, compared with this host.
#
#   benchmarks/arm64/run.sh            (as root: debootstrap, chroot and binfmt need it)
#
# 1. builds (first run, ~7 min) or reuses a cached arm64 root at $ARM64_ROOT;
# 2. makes int8 ONNX / LiteRT exports on the host and runs predict / bench / stream
#    (file: and sim-polar: with faults) on them here (benchmarks/arm64/compare.py run);
# 3. installs the working tree's .[edge,ble] + pytest into a venv inside the root, runs the
#    `device` test subset there, then the same predict / bench / stream calls;
# 4. compares (same calls, |dp| within the per-format tolerance in compare.py; LiteRT's
#    reference kernels bit for bit) and writes benchmarks/results/arm64_emulated.{json,md};
#    exits non-zero on any difference or failed test.
#
# Environment: ARM64_ROOT (default /var/cache/anyecg-arm64), DEBIAN_MIRROR (default: the first
# Debian URI apt uses here), RESULT (result file), PYTEST_ARGS (extra pytest arguments),
# PYTHON (host interpreter with the export toolchain, default .venv/bin/python), HOST_MODELS
# (reuse a folder from `compare.py export` instead of exporting again).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
ROOT=${ARM64_ROOT:-/var/cache/anyecg-arm64}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
RESULT=${RESULT:-$REPO/benchmarks/results/arm64_emulated.json}  # + .md beside it
# Inside the root the tree sits at the same relative place as here, so tests find
# ../shared/data exactly as on the host.
INNER_REPO=/work/$(basename "$REPO")
INNER_DATA=/work/shared/data
HOST_DATA=$(cd "$REPO/.." && pwd)/shared/data

die() { echo "test-arm64: $*" >&2; exit 1; }
log() { echo "== test-arm64: $*" >&2; }

[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc); run it as root"
[[ -x $PYTHON ]] || die "$PYTHON missing: run 'make install' first"
case "$ROOT" in "$REPO"|"$REPO"/*) die "ARM64_ROOT=$ROOT is inside the checkout; put it outside" ;; esac

# --- tools -------------------------------------------------------------------------------
missing=()
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 2>/dev/null || true
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || die "binfmt handler qemu-aarch64 not registered"

# --- the arm64 root (cached) ---------------------------------------------------------------
if [[ ! -f $ROOT/.anyecg-root-ok ]]; then
    if [[ -z ${DEBIAN_MIRROR:-} ]]; then
        DEBIAN_MIRROR=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
            /etc/apt/sources.list.d/ 2>/dev/null | head -1 | tr -d ' ' || true)
        DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    fi
    log "debootstrap arm64 bookworm into $ROOT from $DEBIAN_MIRROR (~7 min)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --arch=arm64 --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$ROOT" "$DEBIAN_MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $ROOT.debootstrap.log"
    touch "$ROOT/.anyecg-root-ok"
fi
# pip inside needs the host's CA bundle (proxies that re-sign) and name resolution.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

# --- mounts: /proc and /dev only. Never the host /sys: onnxruntime/XNNPACK read the host's CPU
# list through it under emulation and segfault. --------------------------------------------
mounted=()
cleanup() {
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]; a bind left by an interrupted run may point at a folder since
    # replaced (findmnt: ".../deleted", empty inside), so it is always made anew.
    mkdir -p "$2"
    if mountpoint -q "$2"; then umount -l "$2"; fi
    mount --bind "$1" "$2" && mounted+=("$2")
    if [[ ${3:-} == ro ]]; then mount -o remount,bind,ro "$2"; fi
}
mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc" && mounted+=("$ROOT/proc"); }
bind /dev "$ROOT/dev"
mountpoint -q "$ROOT/dev/pts" || { mount -t devpts devpts "$ROOT/dev/pts" && mounted+=("$ROOT/dev/pts"); }
require_data=0
if [[ -d $HOST_DATA ]]; then
    bind "$HOST_DATA" "$ROOT$INNER_DATA" ro
    [[ -n $(ls -A "$ROOT$INNER_DATA") ]] || die "$ROOT$INNER_DATA is empty after the bind"
    require_data=1  # the recordings are there: a test that skips for their absence fails
fi

# --- a fresh copy of the working tree (tracked + untracked, not ignored) -----------------------
tree=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD 2>/dev/null || tree="$tree+dirty"
log "copying the working tree to $ROOT$INNER_REPO"
rm -rf "$ROOT$INNER_REPO"
mkdir -p "$ROOT$INNER_REPO"
(cd "$REPO" && git ls-files -co --exclude-standard -z \
    | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT$INNER_REPO"
WORK=/work/arm64-run
rm -rf "$ROOT$WORK"
mkdir -p "$ROOT$WORK"

# --- host side: exports + reference outputs ---------------------------------------------------
log "host: exports and reference outputs"
if [[ -n ${HOST_MODELS:-} ]]; then  # exports made earlier by `compare.py export`
    cp -r "$HOST_MODELS" "$ROOT$WORK/models"
else
    "$PYTHON" "$REPO/benchmarks/arm64/compare.py" export --out "$ROOT$WORK/models" --data "$HOST_DATA"
fi
"$PYTHON" "$REPO/benchmarks/arm64/compare.py" run --models "$ROOT$WORK/models" \
    --data "$HOST_DATA" --out "$ROOT$WORK/host"
# The .tflite under each LiteRT kernel set on the same windows (litert_arch.py): the
# reference kernels must agree bit for bit across the two machines.
"$PYTHON" "$REPO/benchmarks/arm64/litert_arch.py" windows --data "$HOST_DATA" \
    --out "$ROOT$WORK/windows.npy" -n 100
"$PYTHON" "$REPO/benchmarks/arm64/litert_arch.py" run --x "$ROOT$WORK/windows.npy" \
    --out "$ROOT$WORK/host/kernels.npz" "$ROOT$WORK/models/student_int8.tflite"

# --- device side ------------------------------------------------------------------------------
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin \
    LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 "$@"; }
log "arm64: pip install .[edge,ble] + pytest (~5 min the first time)"
[[ -x $ROOT/opt/venv/bin/python ]] || in_root /usr/bin/python3 -m venv /opt/venv
# onnx: only the stream tests' tiny stand-in model needs it (not part of the device extras).
# Editable, as on the host: the tests' rootdir holds anyecg_edge/, which would shadow a
# regular install that maps training/, quantization/, benchmarks/ into the package.
in_root python -m pip install -q -e "$INNER_REPO[edge,ble]" pytest pytest-timeout hypothesis onnx \
    || die "pip install inside the arm64 root failed"
in_root python -m pip list --format=json >"$ROOT$WORK/pip_list.json"
log "arm64: pytest -m device"
set +e
# Only the files that carry the marker: collecting the others imports torch.
device_tests=$(cd "$REPO" && grep -l "pytest.mark.device" tests/test_*.py | tr '\n' ' ')
in_root sh -c "cd $INNER_REPO && ANYECG_REQUIRE_DATA=$require_data python -m pytest -m device -q -p no:cacheprovider \
    --junitxml=$WORK/junit.xml ${PYTEST_ARGS:-} $device_tests" 2>&1 | tee "$ROOT$WORK/pytest.log"
pytest_rc=${PIPESTATUS[0]}
set -e
log "arm64: predict / bench / stream on the host's exports"
in_root python "$INNER_REPO/benchmarks/arm64/compare.py" run --models "$WORK/models" \
    --data "$INNER_DATA" --out "$WORK/device"
in_root python "$INNER_REPO/benchmarks/arm64/litert_arch.py" run --x "$WORK/windows.npy" \
    --out "$WORK/device/kernels.npz" "$WORK/models/student_int8.tflite"

# --- compare + result file --------------------------------------------------------------------
"$PYTHON" "$REPO/benchmarks/arm64/compare.py" compare --work "$ROOT$WORK" --pytest-rc "$pytest_rc" \
    --arch "$(in_root uname -m)" --os "$(in_root sh -c '. /etc/os-release; echo $PRETTY_NAME')" \
    --python "$(in_root python -c 'import platform; print(platform.python_version())')" \
    --tree "$tree" --result "$RESULT"
