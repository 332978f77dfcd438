"""TFLite-Micro-ready C array of a full-int8 .tflite, with an arena-size estimate.

`write_c_array(tflite, out)` writes ``out`` (.cc or .c: the model bytes, 16-byte aligned
as TFLM requires) and ``<out stem>.h`` (extern declarations, input/output quantization,
the arena estimate and the op list for a ``tflite::MicroMutableOpResolver``).

The arena estimate plans the activation tensors the way TFLM's GreedyMemoryPlanner does
(largest first, each at the lowest offset that does not overlap a tensor alive at the
same time, 16-byte aligned) and adds the per-tensor and per-op bookkeeping TFLM keeps in
the arena (measured TFLM structs: ~16 B per eval tensor, ~64 B per node, per-channel
output multipliers/shifts for conv ops) plus a 10 % margin for kernel scratch buffers.
It is an estimate: the firmware should check ``interpreter.arena_used_bytes()`` once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization.errors import ExportError

# TFLite builtin op -> MicroMutableOpResolver method (ops the student exports use, and
# common neighbours). An op outside this table has no TFLM kernel we can vouch for.
TFLM_RESOLVER = {
    "ADD": "AddAdd",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "EXPAND_DIMS": "AddExpandDims",
    "FULLY_CONNECTED": "AddFullyConnected",
    "LOGISTIC": "AddLogistic",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MUL": "AddMul",
    "PAD": "AddPad",
    "QUANTIZE": "AddQuantize",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "SOFTMAX": "AddSoftmax",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "TRANSPOSE": "AddTranspose",
}
_CONV_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
_ALIGN = 16
_EVAL_TENSOR_BYTES = 16
_NODE_BYTES = 64
_MARGIN = 0.10
_ITEMSIZE = {"INT8": 1, "UINT8": 1, "INT16": 2, "INT32": 4, "FLOAT32": 4, "INT64": 8, "BOOL": 1}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def analyze(tflite_path: Path) -> dict[str, Any]:
    """Ops, tensor types, I/O quantization and the arena estimate of a .tflite model."""
    schema = _schema()
    buf = bytearray(Path(tflite_path).read_bytes())
    model = schema.ModelT.InitFromPackedBuf(buf, 0)
    if len(model.subgraphs) != 1:
        raise ExportError(f"{tflite_path}: expected one subgraph, got {len(model.subgraphs)}")
    sg = model.subgraphs[0]
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}

    def op_name(op) -> str:
        code = model.operatorCodes[op.opcodeIndex]
        return op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def is_const(i: int) -> bool:
        data = model.buffers[sg.tensors[i].buffer].data
        return data is not None and len(data) > 0

    ops = [op_name(op) for op in sg.operators]
    unsupported = sorted({o for o in ops if o not in TFLM_RESOLVER})
    if unsupported:
        raise ExportError(
            f"{tflite_path}: op(s) {', '.join(unsupported)} have no TFLite-Micro kernel mapping"
        )
    float_acts = sorted(
        {
            sg.tensors[i].name.decode()
            for op in sg.operators
            for i in op.outputs
            if type_names[sg.tensors[i].type] == "FLOAT32"
        }
    )
    if float_acts:
        raise ExportError(
            f"{tflite_path}: not full int8 ({len(float_acts)} float32 activations, e.g. "
            f"{float_acts[0]}); the C array needs --int8 static quantization"
        )

    # Lifetimes of the non-constant tensors, in op order (graph inputs live from op 0,
    # outputs to the end).
    n_ops = len(sg.operators)
    first: dict[int, int] = {i: 0 for i in sg.inputs}
    last: dict[int, int] = {i: n_ops - 1 for i in sg.outputs}
    for k, op in enumerate(sg.operators):
        for i in op.outputs:
            first.setdefault(i, k)
            last[i] = max(last.get(i, k), k)
        for i in op.inputs:
            if i >= 0 and not is_const(i):
                first.setdefault(i, 0)
                last[i] = max(last.get(i, k), k)
    sizes = {}
    for i in first:
        t = sg.tensors[i]
        itemsize = _ITEMSIZE.get(type_names[t.type])
        if itemsize is None:
            raise ExportError(f"{tflite_path}: tensor {t.name!r} has type {type_names[t.type]}")
        sizes[i] = _align(int(np.prod(t.shape)) * itemsize)
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    for i in sorted(sizes, key=lambda j: (-sizes[j], j)):
        offset = 0
        for off, size, f, la in sorted(placed):
            overlaps_in_time = not (last[i] < f or first[i] > la)
            if overlaps_in_time and offset + sizes[i] > off and offset < off + size:
                offset = off + size
        placed.append((offset, sizes[i], first[i], last[i]))
    activations = max((off + size for off, size, _, _ in placed), default=0)
    per_channel = 0
    for op, name in zip(sg.operators, ops, strict=True):
        if name in _CONV_OPS:
            out_channels = int(sg.tensors[op.outputs[0]].shape[-1])
            per_channel += 2 * 4 * out_channels  # int32 multiplier + shift per channel
    bookkeeping = _EVAL_TENSOR_BYTES * len(sg.tensors) + _NODE_BYTES * n_ops + per_channel
    estimate = _align(int((activations + bookkeeping) * (1 + _MARGIN)) + 1024)

    def quant(i: int) -> dict[str, Any]:
        t = sg.tensors[i]
        q = t.quantization
        return {
            "shape": [int(v) for v in t.shape],
            "dtype": type_names[t.type].lower(),
            "scale": float(q.scale[0]) if q is not None and q.scale is not None else None,
            "zero_point": int(q.zeroPoint[0])
            if q is not None and q.zeroPoint is not None
            else None,
        }

    return {
        "ops": ops,
        "resolver": sorted({TFLM_RESOLVER[o] for o in ops}),
        "input": quant(sg.inputs[0]),
        "output": quant(sg.outputs[0]),
        "activation_bytes": activations,
        "bookkeeping_bytes": bookkeeping,
        "arena_bytes_estimate": estimate,
        "model_bytes": len(buf),
    }


def _identifier(stem: str) -> str:
    ident = re.sub(r"\W", "_", stem)
    return ident if not ident[:1].isdigit() else f"m_{ident}"


def _arena_lines(info: dict[str, Any], upper: str) -> str:
    """The arena defines: TFLM's measured minimum when the TFLM check ran, else the estimate."""
    est = (
        f"// Tensor arena estimate: {info['activation_bytes']} B activations (greedy plan) +\n"
        f"// {info['bookkeeping_bytes']} B TFLM bookkeeping + 10 % + 1 KiB.\n"
        f"#define {upper}_TENSOR_ARENA_ESTIMATE {info['arena_bytes_estimate']}"
    )
    check = info.get("check") or {}
    if not check.get("ran"):
        why = check.get("reason", "not run")
        return (
            f"{est}\n// Not measured in TFLite Micro ({why}): check\n"
            f"// interpreter.arena_used_bytes() on the target once.\n"
            f"#define {upper}_TENSOR_ARENA_SIZE {info['arena_bytes_estimate']}"
        )
    p = check["parity_vs_litert"]
    return (
        f"{est}\n// Measured in TFLite Micro {check['tflite_micro']} (reference kernels, x86_64):\n"
        f"// the smallest arena that allocates and runs. 64-bit host structs make it an upper\n"
        f"// bound for a 32-bit MCU's bookkeeping; optimized kernels (CMSIS-NN) may add scratch.\n"
        f"// Outputs vs ai-edge-litert on {p['n_windows']} windows: max {p['max_abs_diff']:g}\n"
        f"// {p['unit']}, {p['exact_fraction']:.1%} exactly equal.\n"
        f"#define {upper}_TENSOR_ARENA_SIZE {check['arena_bytes']}"
    )


def write_c_array(tflite_path: Path, out: Path, info: dict[str, Any] | None = None) -> list[Path]:
    """Write ``out`` (.cc/.c) and ``<stem>.h``; returns both paths.

    ``info``: :func:`analyze` of ``tflite_path`` when the caller already has it (it is
    computed here otherwise).
    """
    if info is None:
        info = analyze(tflite_path)
    data = Path(tflite_path).read_bytes()
    name = _identifier(out.stem)
    upper = name.upper()
    header = out.with_suffix(".h")
    cpp = out.suffix.lower() == ".cc"
    align = "alignas(16)" if cpp else "_Alignas(16)"
    lines = [", ".join(f"0x{b:02x}" for b in data[i : i + 12]) for i in range(0, len(data), 12)]
    body = ",\n  ".join(lines)
    inp, outp = info["input"], info["output"]
    resolver = "\n".join(f"//   resolver.{m}();" for m in info["resolver"])
    header.write_text(
        f"""// Generated by `anyecg-edge export --format c-array` from {Path(tflite_path).name}.
// Full-int8 model for TensorFlow Lite Micro. Research use only.
#ifndef {upper}_H_
#define {upper}_H_

#ifdef __cplusplus
extern "C" {{
#endif

extern const unsigned char g_{name}_model[];
extern const unsigned int g_{name}_model_len;

#ifdef __cplusplus
}}
#endif

// Input {inp["dtype"]} {inp["shape"]}: q = round(x / scale) + zero_point, x = the
// preprocessed (z-scored) window, see {Path(tflite_path).name}.manifest.json.
#define {upper}_INPUT_SCALE {inp["scale"]!r}f
#define {upper}_INPUT_ZERO_POINT {inp["zero_point"]}
// Output {outp["dtype"]} {outp["shape"]}: logit = scale * (q - zero_point).
#define {upper}_OUTPUT_SCALE {outp["scale"]!r}f
#define {upper}_OUTPUT_ZERO_POINT {outp["zero_point"]}

{_arena_lines(info, upper)}

// Ops ({len(info["resolver"])}): tflite::MicroMutableOpResolver<{len(info["resolver"])}> resolver;
{resolver}

#endif  // {upper}_H_
"""
    )
    out.write_text(
        f"""// Generated by `anyecg-edge export --format c-array` from {Path(tflite_path).name}
// ({len(data)} bytes). Research use only.
#include "{header.name}"

{align} const unsigned char g_{name}_model[] = {{
  {body}
}};
const unsigned int g_{name}_model_len = {len(data)};
"""
    )
    return [out, header]
