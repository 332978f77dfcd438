"""Host vs emulated-arm64 comparison for `make test-arm64` (benchmarks/arm64/run.sh).

    compare.py export  --out MODELS --data DATA   host only (torch): int8 ONNX + LiteRT exports
    compare.py run     --models MODELS --data DATA --out DIR   predict / bench / stream calls
    compare.py compare --work WORK --result FILE ...   host/ vs device/ -> result JSON

`run` uses only the device install (no torch): it is the same script on both sides, so the
calls are the same. `compare` demands the same calls and |dp| <= 1e-3 on every probability;
timings are never compared (emulated timings mean nothing) and are left out of the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

P_TOL = 1e-3
SIM_FAULTS = "drop=0.02,disconnect=40,seed=7"
# Keys whose values depend on the machine, the wall clock or the install path: never compared.
_VOLATILE = {
    "record", "source", "model", "file", "weights", "created_utc", "machine", "settings",
    "preprocess", "headline", "stream", "speed", "iterations", "warmup", "threads", "batch",
    "source_info", "latency_ms", "compute_ms", "samples_ms", "address",
}  # fmt: skip
_VOLATILE_SUFFIX = ("_ms", "_s", "_mb", "_wps")
# Stream windows are compared by their place in the signal (t), events by kind: a slow
# emulated machine reconnects later in signal time, so gaps after a disconnect differ.
_EVENT_KINDS_EQUAL = ("connected", "disconnect", "reconnect")


def _cli(*args: str, stdout: Path | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "anyecg_edge", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if stdout is not None:
        stdout.write_text(proc.stdout)
    return {
        "args": list(args),
        "rc": proc.returncode,
        "stderr_tail": proc.stderr.strip().splitlines()[-3:],
    }


def export(models: Path, data: Path) -> None:
    """The stand-in student (quantization/standin.py) on CinC windows, exported like the tests."""
    from anyecg_edge.quantization.standin import save_standin
    from anyecg_edge.quantization.windows import record_windows

    from anyecg_edge.runtime import ModelMetadata

    models.mkdir(parents=True, exist_ok=True)
    cinc = data / "cinc2021"
    ws = record_windows([cinc], ModelMetadata(labs=["x"]))
    ckpt = save_standin(models / "standin" / "model.pt", ws.x)
    for fmt, name in (("onnx", "student_int8.onnx"), ("tflite", "student_int8.tflite")):
        res = _cli(
            "-q", "export", "--model", str(ckpt), "--format", fmt, "--int8",
            "--calib", str(cinc), "--out", str(models / name),
        )  # fmt: skip
        if res["rc"] != 0:
            sys.exit(f"export {fmt} failed: {' '.join(res['stderr_tail'])}")


def run(models: Path, data: Path, out: Path) -> None:
    """The same predict / bench / stream calls on either side; stdout files + calls.json."""
    out.mkdir(parents=True, exist_ok=True)
    records = [data / "mitdb" / "100.hea", data / "cinc2021" / "E07500.hea"]
    exports = [models / "student_int8.onnx", models / "student_int8.tflite"]
    calls: dict[str, Any] = {}
    for m in exports:
        for r in records:
            key = f"predict:{m.suffix[1:]}:{r.stem}"
            calls[key] = _cli(
                "predict", "--model", str(m), "--input", str(r), "--threads", "1", "--json",
                stdout=out / f"{key.replace(':', '_')}.json",
            )  # fmt: skip
    tfl = exports[1]
    for name, source, extra in (
        ("file", f"file:{records[0]}", ["--speed", "0"]),
        # --queue large: a slow (emulated) machine must not drop windows the host kept.
        ("sim-polar", f"sim-polar:{records[0]}", ["--speed", "5", "--faults", SIM_FAULTS]),
    ):
        key = f"stream:{name}"
        calls[key] = _cli(
            "stream", "--source", source, "--model", str(tfl), "--hop", "2", "--duration", "90",
            "--queue", "10000", "--smooth", "0", "--no-live", "--json", "--jsonl", str(out / f"stream_{name}.jsonl"),
            *extra, stdout=out / f"stream_{name}.json",
        )  # fmt: skip
    calls["bench"] = _cli(
        "bench", "--models", ",".join(f"{m.suffix[1:]}={m}" for m in exports), "--quick",
        "--threads", "1", "--stream-s", "0", "--json", str(out / "bench.json"),
    )  # fmt: skip
    (out / "calls.json").write_text(json.dumps(calls, indent=2))
    bad = [k for k, c in calls.items() if c["rc"] != 0]
    if bad:
        detail = ", ".join(f"{k} ({calls[k]['stderr_tail']})" for k in bad)
        sys.exit(f"calls failed: {detail}")


def _volatile(key: str) -> bool:
    k = key.lower()
    return k in _VOLATILE or k.endswith(_VOLATILE_SUFFIX) or k.startswith("p9")


def diff(a: Any, b: Any, path: str = "") -> tuple[list[str], float]:
    """Differences between two JSON trees (numbers within P_TOL) and the largest |d| seen."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        worst = 0.0
        for k in sorted(set(a) | set(b)):
            if _volatile(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only on {'host' if k in a else 'device'}")
                continue
            d, w = diff(a[k], b[k], f"{path}/{k}")
            out += d
            worst = max(worst, w)
        return out, worst
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items on host, {len(b)} on device"], 0.0
        out, worst = [], 0.0
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d, w = diff(x, y, f"{path}[{i}]")
            out += d
            worst = max(worst, w)
        return out, worst
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool | type(None)):
        if isinstance(b, bool):
            return [f"{path}: {a!r} vs {b!r}"], 0.0
        if math.isnan(a) and math.isnan(b):
            return [], 0.0
        d = abs(float(a) - float(b))
        return ([f"{path}: {a!r} vs {b!r}"] if not d <= P_TOL else []), d
    return ([f"{path}: {a!r} vs {b!r}"] if a != b else []), 0.0


def _load(path: Path) -> Any:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def _bench_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    keep = ("runtime", "precision", "role", "arch", "size_bytes", "params", "macs", "backend")
    return [
        {k: v for k, v in r.items() if k in keep or k.startswith("parity_")} for r in doc["rows"]
    ]


def _stream_diff(a: list[dict], b: list[dict], exact: bool) -> tuple[list[str], float, dict]:
    """Windows matched by signal time t (all of them when ``exact``), event kinds compared."""
    wa = {round(r["t"], 3): r for r in a if "labs" in r}
    wb = {round(r["t"], 3): r for r in b if "labs" in r}
    out: list[str] = []
    if exact and set(wa) != set(wb):
        out.append(f": windows at t {sorted(set(wa) ^ set(wb))[:5]} on one side only")
    shared = sorted(set(wa) & set(wb))
    if len(shared) < max(1, len(wa) // 2):
        out.append(f": only {len(shared)} of {len(wa)} host windows also on the device")
    worst = 0.0
    for t in shared:
        d, w = diff(wa[t], wb[t], f"[t={t}]")
        out += d
        worst = max(worst, w)
    ea = [r["event"] for r in a if "event" in r]
    eb = [r["event"] for r in b if "event" in r]
    if exact and ea != eb:
        out.append(f": events {ea} vs {eb}")
    for kind in _EVENT_KINDS_EQUAL:
        if ea.count(kind) != eb.count(kind):
            out.append(f": {ea.count(kind)} {kind} events on host, {eb.count(kind)} on device")
    if ("gap" in ea) != ("gap" in eb):
        out.append(": gap events on one side only")
    info = {"windows_host": len(wa), "windows_device": len(wb), "windows_compared": len(shared)}
    info["events_host"] = {k: ea.count(k) for k in sorted(set(ea))}
    info["events_device"] = {k: eb.count(k) for k in sorted(set(eb))}
    return out, worst, info


def compare(args: argparse.Namespace) -> int:
    work: Path = args.work
    host, dev = work / "host", work / "device"
    outputs: dict[str, Any] = {}
    failures: list[str] = []
    for f in sorted(host.iterdir()):
        if f.name == "calls.json" or f.suffix not in (".json", ".jsonl"):
            continue
        g = dev / f.name
        if not g.is_file():
            failures.append(f"{f.name}: missing on the device")
            continue
        a, b = _load(f), _load(g)
        info: dict[str, Any] = {}
        if f.name == "stream_sim-polar.json":
            # Its counts follow the reconnect timing (wall clock); the .jsonl is compared.
            keep = ("rejected", "errors", "dropped", "interrupted")
            a, b = {k: a[k] for k in keep}, {k: b[k] for k in keep}
        if f.suffix == ".jsonl":
            d, worst, info = _stream_diff(a, b, exact=not f.name.startswith("stream_sim"))
        else:
            if f.name == "bench.json":
                a, b = _bench_rows(a), _bench_rows(b)
            d, worst = diff(a, b)
        outputs[f.name] = {"equal": not d, "max_abs_diff": worst, **info, "differences": d[:20]}
        failures += [f"{f.name}{x}" for x in d[:5]]
    calls_h = json.loads((host / "calls.json").read_text())
    calls_d = json.loads((dev / "calls.json").read_text())
    for k, c in calls_h.items():
        if calls_d.get(k, {}).get("rc") != c["rc"]:
            failures.append(
                f"{k}: exit {c['rc']} on host, {calls_d.get(k, {}).get('rc')} on device"
            )
    pytest_summary = _junit(work / "junit.xml")
    if args.pytest_rc != 0 or not pytest_summary.get("passed"):
        failures.append(f"device tests: exit {args.pytest_rc}, {pytest_summary}")
    pip = {
        p["name"].lower(): p["version"] for p in json.loads((work / "pip_list.json").read_text())
    }
    result = {
        "what": "make test-arm64: the device side on an emulated aarch64 Debian 12 root "
        "(qemu-user-static), compared with the x86_64 host; functional only, no timings",
        "date": dt.date.today().isoformat(),
        "device": {"arch": args.arch, "os": args.os, "python": args.python},
        "host": {
            "arch": _host_arch(),
            "python": sys.version.split()[0],
        },
        "packages": {k: pip[k] for k in sorted(pip)},
        "tests": pytest_summary,
        "calls": {k: {"args": c["args"], "rc": c["rc"]} for k, c in calls_h.items()},
        "tolerance_abs": P_TOL,
        "outputs": outputs,
        "failures": failures,
        "passed": not failures,
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=2) + "\n")
    n = pytest_summary.get("passed", 0)
    worst = max((o["max_abs_diff"] for o in outputs.values()), default=0.0)
    if failures:
        print(f"test-arm64 FAILED ({len(failures)}): " + "; ".join(failures[:8]), file=sys.stderr)
        print(f"  result: {args.result}", file=sys.stderr)
        return 1
    print(
        f"test-arm64 passed: {n} device tests on {args.arch}, {len(outputs)} outputs equal to the "
        f"host's (max |d| {worst:.2e} <= {P_TOL}); result: {args.result}"
    )
    return 0


def _host_arch() -> str:
    import platform

    return platform.machine()


def _junit(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"error": f"{path.name} missing"}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    files = sorted(
        {c.get("classname", "").split(".")[0] for c in suite.iter("testcase") if c.get("classname")}
    )
    return {
        "collected": total,
        "passed": total - failed - skipped,
        "failed": failed,
        "skipped": skipped,
        "modules": files,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", type=Path, required=True)
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--result", type=Path, required=True)
    c.add_argument("--pytest-rc", type=int, required=True)
    c.add_argument("--arch", required=True)
    c.add_argument("--os", required=True)
    c.add_argument("--python", required=True)
    a = ap.parse_args()
    if a.cmd == "export":
        export(a.out, a.data)
    elif a.cmd == "run":
        run(a.models, a.data, a.out)
    else:
        return compare(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
