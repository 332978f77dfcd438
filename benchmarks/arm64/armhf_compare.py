"""armhf (32-bit Raspberry Pi OS base) vs x86_64 host: predict on the same .tflite exports and
record (benchmarks/arm64/armhf.sh), plus what pip found for armv7l. Writes JSON + markdown."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from compare import P_TOL, TOLERANCE_WHY, _calls, diff, write_result  # noqa: E402


def _last_error(log: Path) -> str:
    lines = (
        [x for x in log.read_text().splitlines() if x.startswith("ERROR")] if log.is_file() else []
    )
    return lines[-1] if lines else "(no error: resolved)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--os", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--python", required=True)
    a = ap.parse_args()
    tol = P_TOL["tflite"]
    rows: dict[str, Any] = {}
    failures: list[str] = []
    for h in sorted((a.work / "host").glob("*.json")):
        d = a.work / "device" / h.name
        if not d.is_file():
            failures.append(f"{h.stem}: no device output")
            continue
        ha, da = json.loads(h.read_text()), json.loads(d.read_text())
        flips: list[str] = []
        diffs, worst = diff(ha, da, tol=tol, flips=flips)
        same, n = _calls(ha, da)
        rows[h.stem] = {
            "backend_device": da.get("model", {}).get("backend"),
            "calls_equal": same,
            "labs": n,
            "max_abs_dp": worst,
            "calls_near_threshold": flips,
            "differences": diffs[:20],
        }
        failures += [f"{h.stem}{x}" for x in diffs[:5]]
    pip = {
        p["name"].lower(): p["version"] for p in json.loads((a.work / "pip_list.json").read_text())
    }
    doc = {
        "what": "32-bit Raspberry Pi OS base (Debian 12 armhf) under qemu-user: predict with "
        "int8 .tflite exports on MIT-BIH 100 (MLII, as .npy) vs the x86_64 host",
        "date": dt.date.today().isoformat(),
        "device": {"arch": a.arch, "os": a.os, "python": a.python},
        "host": {"arch": platform.machine(), "python": sys.version.split()[0]},
        "install": {
            "numpy, scipy": "Debian's python3-numpy / python3-scipy (apt), seen by a "
            "--system-site-packages venv: PyPI has no armv7l wheel",
            "tflite runtime": "tflite-runtime from PyPI (cp311 armv7l wheel): ai-edge-litert "
            "has no armv7l wheel",
            "anyecg-edge": "this tree, --no-deps",
            "pip .[runtime] --only-binary": _last_error(a.work / "pip_runtime.log"),
            "pip ai-edge-litert --only-binary": _last_error(a.work / "pip_litert.log"),
            "not installed": "onnxruntime (no armv7l wheel: no ONNX on 32-bit), wfdb "
            "(needs numpy>=1.26 / pandas>=2.2.3 / scipy>=1.13, newer than Debian 12's: "
            "records as .npy / CSV), bleak / bumble (not tried here)",
        },
        "packages": {k: pip[k] for k in sorted(pip)},
        "tolerance_abs": tol,
        "tolerance_why": TOLERANCE_WHY["tflite"],
        "predict": rows,
        "failures": failures,
        "passed": bool(rows) and not failures,
    }
    md = [
        f"# 32-bit Raspberry Pi OS (armhf) under emulation — {doc['date']}: "
        + ("PASSED" if doc["passed"] else "FAILED"),
        "",
        f"Device: {a.os}, {a.arch}, Python {a.python} (qemu-user on {doc['host']['arch']}). "
        "`benchmarks/arm64/armhf.sh`; PyPI's armv7l wheels in `armhf_wheels.json`.",
        "",
        "How it was installed:",
        "",
    ]
    md += [f"- {k}: {v}" for k, v in doc["install"].items()]
    md += [
        "",
        "| model | runtime on armhf | same call (labs) | max abs prob diff vs x86_64 |",
        "| --- | --- | --- | --- |",
    ]
    for k, r in rows.items():
        md.append(
            f"| {k} | {r['backend_device']} {pip.get('tflite-runtime', '')} | "
            f"{r['calls_equal']} / {r['labs']} | {r['max_abs_dp']:.2e} |"
        )
    if failures:
        md += ["", "Failures:", ""] + [f"- {x}" for x in failures]
    write_result(a.out, doc, "\n".join(md) + "\n")
    print(("armhf passed" if doc["passed"] else "armhf FAILED") + f": {a.out}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
