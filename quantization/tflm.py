"""TFLite Micro check of an int8 .tflite: runs it in TFLM's own reference kernels.

`check_tflm(model, windows)`:

* finds the smallest tensor arena that allocates and runs the model (TFLM's recording
  allocator gives the total; a probe one alignment step below must fail, else bisection);
* runs the preprocessed windows through TFLM and through ai-edge-litert on the same int8
  inputs and reports the output difference in int8 steps (max, mean, share exactly equal);
* names the operators TFLM has no kernel for (the model then does not run at all).

Every TFLM call runs in a child process (`python -m anyecg_edge.quantization.tflm`): TFLM
segfaults on an arena that is far too small, which must not take the export down with it.
The `tflite-micro` wheel exists for CPython 3.11 on Linux x86_64 only; elsewhere the check
says so in ``reason`` (the firmware build is where it then gets checked).
"""

from __future__ import annotations

import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization.errors import ExportError

_ALIGN = 16
_MAX_WINDOWS = 64
_PROBE_TIMEOUT_S = 120
_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")
_MISSING_OP_RE = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


def unavailable_reason() -> str | None:
    """Why tflite-micro cannot run here, or None when it can."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return (
            f"tflite-micro has wheels for Linux x86_64 only (this is {platform.system()} "
            f"{platform.machine()})"
        )
    if sys.version_info[:2] != (3, 11):
        return (
            f"tflite-micro has wheels for CPython 3.11 only (this is {platform.python_version()})"
        )
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return 'tflite-micro is not installed: pip install "anyecg-edge[export]"'
    return None


def model_ops(tflite_path: Path) -> list[str]:
    """Builtin operator names of a .tflite, in graph order (one subgraph)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(Path(tflite_path).read_bytes()), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for sg in model.subgraphs:
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            out.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM"))
    return out


def _worker(model: Path, arena: int, inputs: Path | None, outputs: Path | None) -> int:
    """Child process: allocate with ``arena`` bytes, invoke (zeros, or every window in
    ``inputs``), print TFLM's allocation record; exit 0 when it ran."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        interp = runtime.Interpreter.from_bytes(model.read_bytes(), arena_size=arena)
        shape = tuple(int(v) for v in interp.get_input_details(0)["shape"])
        dtype = interp.get_input_details(0)["dtype"]
        xs = np.load(inputs) if inputs is not None else np.zeros((1, *shape), dtype)
        ys = []
        for x in xs:
            interp.set_input(np.asarray(x, dtype).reshape(shape), 0)
            interp.invoke()
            ys.append(np.array(interp.get_output(0)))
        sys.stdout.flush()
        interp.print_allocations()
    except RuntimeError as exc:
        print(f"tflm error: {exc}", flush=True)
        return 3
    if outputs is not None:
        np.save(outputs, np.stack(ys))
    return 0


def _probe(
    model: Path, arena: int, inputs: Path | None = None, outputs: Path | None = None
) -> tuple[bool, str]:
    cmd = [sys.executable, "-m", "anyecg_edge.quantization.tflm", str(model), str(arena)]
    if inputs is not None and outputs is not None:
        cmd += [str(inputs), str(outputs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {_PROBE_TIMEOUT_S} s"
    # TFLM's C++ logging goes to stdout; keep both streams for the messages we parse.
    return proc.returncode == 0, proc.stdout + proc.stderr


def _litert_outputs(model: Path, xq: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    ys = []
    for x in xq:
        interp.set_tensor(inp["index"], x.reshape(inp["shape"]))
        interp.invoke()
        ys.append(interp.get_tensor(out["index"]).copy())
    return np.stack(ys)


def _quantize_inputs(model: Path, windows: np.ndarray) -> np.ndarray:
    """The windows as the model's input tensor type (int8: q = round(x/scale) + zp)."""
    from ai_edge_litert.interpreter import Interpreter

    d = Interpreter(model_path=str(model)).get_input_details()[0]
    x = np.asarray(windows, np.float32).reshape(len(windows), *d["shape"][1:])
    if d["dtype"] == np.float32:
        return x
    scale, zp = d["quantization"]
    info = np.iinfo(d["dtype"])
    return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(d["dtype"])


def check_tflm(
    tflite_path: str | Path, windows: np.ndarray, *, max_windows: int = _MAX_WINDOWS
) -> dict[str, Any]:
    """Arena, op support and parity against ai-edge-litert of ``tflite_path`` in TFLM.

    ``windows``: preprocessed (z-scored) windows, shape (n, samples) or (n, 1, samples).
    Returns ``{"ran": False, "reason": ...}`` where TFLM cannot run here; raises ExportError
    when the model does not run in TFLM (unsupported ops, allocation failure).
    """
    model = Path(tflite_path)
    ops = model_ops(model)
    reason = unavailable_reason()
    if reason is not None:
        return {"ran": False, "reason": reason, "ops": sorted(set(ops))}
    if len(windows) == 0:
        raise ExportError("the TFLite-Micro check needs at least one window")
    windows = np.asarray(windows)[:max_windows]
    from importlib.metadata import version

    big = max(4 << 20, 10 * model.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="anyecg-tflm-") as tmp:
        ok, log = _probe(model, big)
        if not ok:
            missing = sorted(set(_MISSING_OP_RE.findall(log)))
            if missing:
                raise ExportError(
                    f"{model.name}: TFLite Micro has no kernel for {', '.join(missing)}"
                )
            tail = " | ".join(line for line in log.strip().splitlines()[-3:])
            raise ExportError(f"{model.name}: TFLite Micro could not run it: {tail}")
        m = _TOTAL_RE.search(log)
        if m is None:
            raise ExportError(f"{model.name}: TFLite Micro printed no arena total")
        recorded = int(m.group(1))
        arena = _smallest_arena(model, recorded)
        xq = _quantize_inputs(model, windows)
        inputs, outputs = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(inputs, xq)
        ok, log = _probe(model, arena, inputs, outputs)
        if not ok:
            tail = " | ".join(log.strip().splitlines()[-3:])
            raise ExportError(f"{model.name}: TFLite Micro failed on the windows: {tail}")
        y_tflm = np.load(outputs)
    y_litert = _litert_outputs(model, xq)
    parity = _parity(y_tflm.reshape(len(xq), -1), y_litert.reshape(len(xq), -1))
    return {
        "ran": True,
        "tflite_micro": version("tflite-micro"),
        "ops": sorted(set(ops)),
        "unsupported_ops": [],
        "arena_bytes": arena,
        "arena_bytes_recorded": recorded,
        "arena_note": "smallest arena that allocates and runs in TFLM's reference kernels on "
        "x86_64 (64-bit pointers: an upper bound for a 32-bit MCU's bookkeeping; "
        "optimized kernels such as CMSIS-NN may add scratch)",
        "parity_vs_litert": parity,
    }


def _parity(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    if a.dtype != b.dtype:
        raise ExportError(f"TFLM output is {a.dtype}, ai-edge-litert's {b.dtype}")
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    unit = "int8 steps" if np.issubdtype(a.dtype, np.integer) else "float"
    return {
        "n_windows": int(len(a)),
        "output_dtype": str(a.dtype),
        "unit": unit,
        "max_abs_diff": float(d.max()),
        "mean_abs_diff": float(d.mean()),
        "exact_fraction": float((d == 0).mean()),
    }


def _smallest_arena(model: Path, recorded: int) -> int:
    """Smallest arena (16-byte steps) that allocates and invokes, starting from TFLM's own
    recorded total: usually it is that total and one probe below proves it."""
    hi = -(-recorded // _ALIGN) * _ALIGN
    if not _probe(model, hi)[0]:
        # The record can miss alignment padding: walk up (bounded) until it runs.
        for step in range(1, 65):
            if _probe(model, hi + step * _ALIGN)[0]:
                hi += step * _ALIGN
                break
        else:
            raise ExportError(f"{model.name}: no arena up to {hi + 64 * _ALIGN} B allocates")
    if not _probe(model, hi - _ALIGN)[0]:
        return hi
    lo = 0  # an empty arena never allocates
    while hi - lo > _ALIGN:
        mid = (lo + hi) // 2 // _ALIGN * _ALIGN
        if mid <= lo:
            break
        if _probe(model, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi


def summary_line(res: dict[str, Any]) -> str:
    """One line for the CLI."""
    if not res.get("ran"):
        return f"TFLite Micro: not run ({res['reason']})"
    p = res["parity_vs_litert"]
    steps = "int8 step" if p["unit"] == "int8 steps" else "abs"
    return (
        f"TFLite Micro {res['tflite_micro']}: arena {res['arena_bytes']} B (smallest that "
        f"allocates), ops {', '.join(res['ops'])}; vs ai-edge-litert on {p['n_windows']} "
        f"windows: max {p['max_abs_diff']:g} {steps}, {p['exact_fraction']:.1%} exactly equal"
    )


if __name__ == "__main__":  # child process of _probe
    args = sys.argv[1:]
    if len(args) not in (2, 4):
        sys.exit("usage: python -m anyecg_edge.quantization.tflm MODEL ARENA [IN.npy OUT.npy]")
    sys.exit(
        _worker(
            Path(args[0]),
            int(args[1]),
            Path(args[2]) if len(args) == 4 else None,
            Path(args[3]) if len(args) == 4 else None,
        )
    )
