"""Where a .tflite's outputs differ between x86_64 and aarch64: the same windows through the
same model under each LiteRT kernel set, on either machine, then compared.

    litert_arch.py windows --data DATA --out x.npy            host: calibration windows
    litert_arch.py run --x x.npy --out OUT.npz MODEL...       either side (device install)
    litert_arch.py compare --host H.npz --device D.npz [--json F]

Kernel sets (ai-edge-litert's op resolver): ``xnnpack`` (the default, what predict uses),
``builtin`` (LiteRT's optimized kernels without the XNNPACK delegate) and ``ref`` (the
reference kernels). Identical inputs on both sides: the windows are made once on the host,
so preprocessing cannot be the cause of a difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

RESOLVERS = {
    "xnnpack": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "ref": "BUILTIN_REF",
}


def windows(data: Path, out: Path, n: int) -> None:
    from anyecg_edge.quantization.windows import record_windows

    from anyecg_edge.runtime import ModelMetadata

    ws = record_windows([data / "cinc2021"], ModelMetadata(labs=["x"]))
    x = np.asarray(ws.x[:n], dtype=np.float32)
    np.save(out, x)
    print(f"{len(x)} windows -> {out}")


def _run_one(path: Path, x: np.ndarray, resolver: str) -> np.ndarray:
    """Float logits (n, n_labs) of ``path`` on ``x`` with one op resolver, one thread."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from anyecg_edge.runtime import dequantize, load_manifest, quantize

    meta = load_manifest(path)
    it = Interpreter(
        model_path=str(path),
        num_threads=1,
        experimental_op_resolver_type=getattr(OpResolverType, RESOLVERS[resolver]),
    )
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    xin = quantize(x, meta.input_quant) if meta.input_quant else x
    out = []
    for w in xin:
        it.set_tensor(i["index"], np.ascontiguousarray(w.reshape(i["shape"])))
        it.invoke()
        out.append(it.get_tensor(o["index"]).reshape(-1).copy())
    raw = np.stack(out)
    return dequantize(raw, meta.output_quant) if meta.output_quant else raw.astype(np.float32)


def run(models: list[Path], x_path: Path, out: Path) -> None:
    from anyecg_edge.runtime import load_manifest

    x = np.load(x_path)
    arrays: dict[str, np.ndarray] = {}
    for m in models:
        meta = load_manifest(m)
        for r in RESOLVERS:
            z = _run_one(m, x, r)
            arrays[f"{m.stem}|{r}|logits"] = z
            arrays[f"{m.stem}|{r}|p"] = meta.probabilities(z)
            print(f"{m.name} {r}: {z.shape}", file=sys.stderr)
    np.savez(out, **arrays)


def compare(host: Path, device: Path) -> dict[str, Any]:
    a, b = np.load(host), np.load(device)
    rows: dict[str, Any] = {}
    for k in sorted(a.files):
        if not k.endswith("|logits"):
            continue
        model, resolver, _ = k.split("|")
        zk, pk = k, k.replace("|logits", "|p")
        dz = np.abs(a[zk].astype(np.float64) - b[zk])
        dp = np.abs(a[pk] - b[pk])
        rows[f"{model}|{resolver}"] = {
            "windows": int(len(dz)),
            "max_abs_dlogit": float(dz.max()),
            "max_abs_dp": float(dp.max()),
            "windows_any_diff": int((dz.max(axis=1) > 0).sum()),
            "outputs_equal_frac": float((dz == 0).mean()),
        }
    # The same machine across kernel sets: how far apart the kernels themselves are.
    for side, arrs in (("host", a), ("device", b)):
        for k in sorted(arrs.files):
            if k.endswith("|xnnpack|p"):
                ref = k.replace("|xnnpack|", "|ref|")
                rows[f"{k.split('|')[0]}|{side}: xnnpack vs ref"] = {
                    "max_abs_dp": float(np.abs(arrs[k] - arrs[ref]).max())
                }
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("windows")
    w.add_argument("--data", type=Path, required=True)
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("-n", type=int, default=200)
    r = sub.add_parser("run")
    r.add_argument("--x", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("models", type=Path, nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("--host", type=Path, required=True)
    c.add_argument("--device", type=Path, required=True)
    c.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.cmd == "windows":
        windows(a.data, a.out, a.n)
    elif a.cmd == "run":
        run(a.models, a.x, a.out)
    else:
        rows = compare(a.host, a.device)
        for k, v in rows.items():
            print(f"{k:50s} " + " ".join(f"{kk}={vv:.3g}" for kk, vv in v.items()))
        if a.json:
            a.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
