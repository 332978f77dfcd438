"""Which of the device install's binary packages have 32-bit ARM (armhf / armv7l) wheels for
CPython 3.11 on PyPI - 32-bit Raspberry Pi OS (bookworm: Debian 12, glibc 2.36, Python 3.11).

    python benchmarks/arm64/armhf_wheels.py --out benchmarks/results/armhf_wheels_<date>.json

Asks pip itself (``pip install --dry-run --only-binary=:all: --platform ...``, one package at a
time, no dependencies): the answer is what `pip install` on such a Pi would find on PyPI.
The package list is the set of packages that ship compiled code in the aarch64 install of
``.[edge,ble]`` (make test-arm64), plus the fallback runtimes a 32-bit user could turn to.
Raspberry Pi OS also points pip at piwheels.org; that index cannot be reached from here, so
it is not part of the answer (the result says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# glibc 2.36 (bookworm) accepts manylinux_2_17 .. 2_36 and the plain linux tag piwheels uses.
_PLATFORMS = ["linux_armv7l", "manylinux2014_armv7l"] + [
    f"manylinux_2_{v}_armv7l" for v in range(17, 37)
]
# requirement -> why it is here. The first group is the aarch64 install's binary packages.
PACKAGES = {
    "numpy>=1.24": "base",
    "scipy>=1.10": "base",
    "onnxruntime>=1.17": "runtime extra (int8 ONNX)",
    "ai-edge-litert>=1.2": "runtime extra (int8 .tflite)",
    "pandas": "edge extra, via wfdb",
    "matplotlib": "edge extra, via wfdb",
    "contourpy": "edge extra, via wfdb -> matplotlib",
    "kiwisolver": "edge extra, via wfdb -> matplotlib",
    "pillow": "edge extra, via wfdb -> matplotlib",
    "fonttools": "edge extra, via wfdb -> matplotlib",
    "soundfile": "edge extra, via wfdb",
    "aiohttp": "edge extra, via wfdb",
    "yarl": "edge extra, via wfdb -> aiohttp",
    "multidict": "edge extra, via wfdb -> aiohttp",
    "frozenlist": "edge extra, via wfdb -> aiohttp",
    "propcache": "edge extra, via wfdb -> aiohttp",
    "charset-normalizer": "edge extra, via wfdb -> requests",
    "dbus-fast": "ble extra, via bleak",
    "cryptography": "ble extra, via bumble",
    "cffi": "ble extra, via bumble -> cryptography",
    "protobuf": "ble extra, via bumble",
    "libusb-package": "ble extra, via bumble",
    "websockets": "ble extra, via bumble",
    "tflite-runtime": "fallback: the .tflite interpreter before ai-edge-litert",
}


def probe(req: str, python_version: str = "3.11") -> dict[str, str | None]:
    """The wheel pip would pick for ``req`` on armv7l CPython ``python_version`` (or None)."""
    plat = [a for p in _PLATFORMS for a in ("--platform", p)]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--no-deps", "--only-binary=:all:", "--python-version", python_version,
            "--implementation", "cp", *plat, "--target", str(Path(tmp) / "t"),
            "--report", str(report), "--quiet", req,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not report.is_file():
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"wheel": None, "version": None, "pip_says": last}
        item = json.loads(report.read_text())["install"][0]
        url = item["download_info"]["url"]
        return {"wheel": url.rsplit("/", 1)[-1], "version": item["metadata"]["version"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--python-version", default="3.11")
    a = ap.parse_args()
    rows = {}
    for req, why in PACKAGES.items():
        rows[req] = {"why": why, **probe(req, a.python_version)}
        w = rows[req]["wheel"] or f"NONE ({rows[req]['pip_says']})"
        print(f"{req:24s} {w}", file=sys.stderr)
    missing = [r for r, v in rows.items() if v["wheel"] is None]
    doc = {
        "what": "armv7l (32-bit Raspberry Pi OS) wheels on PyPI for CPython "
        f"{a.python_version}, as pip resolves them (--only-binary, --platform armv7l tags)",
        "date": dt.date.today().isoformat(),
        "index": "PyPI only (piwheels.org, which Raspberry Pi OS also uses, unreachable here)",
        "platform_tags": _PLATFORMS,
        "packages": rows,
        "without_armv7l_wheel": missing,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{len(missing)} of {len(rows)} without an armv7l wheel: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
