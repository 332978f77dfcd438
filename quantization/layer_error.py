"""Per-layer quantization error: which quantized activation loses most, fp32 vs int8/int16.

For every quantized activation tensor, on the same held-out windows:

* ``sqnr_db``: the tensor's *own* quantization loss, 10*log10(sum x^2 / sum (x - q(x))^2)
  with x the fp32 model's tensor and q(x) its fake-quantization with the tensor's scale and
  zero point (rounding + clipping to the calibrated range: what the quantized kernel's
  output rounding does to exact inputs). The table is sorted by it, worst first: the layer
  that loses most.
* ``cumulative_sqnr_db``: the quantized model's tensor against the fp32 model's same
  tensor (everything upstream included); it falls along the graph.
* ``clipped_fraction``: share of the fp32 values outside the tensor's representable range
  (a calibration range too small shows here first).

ONNX (QDQ): onnxruntime.quantization.qdq_loss_debug augments both models to output every
activation (`modify_model_output_intermediate_tensors`), runs them (`collect_activations`,
graph optimizations off: QDQ simulated in float) and pairs the tensors
(`create_activation_matching`); the SQNR (ORT's `compute_signal_to_quantization_noice_ratio`
definition) is accumulated here over chunks of windows so memory stays bounded. ORT's own
pre-/post-QDQ error is not used for ``sqnr_db``: the quantizer folds each Relu into the
uint8 QuantizeLinear, so "pre-QDQ" is the conv output before its Relu and the error
counts the Relu's zeroing (~3 dB on every layer). LiteRT: the fp32 and quantized .tflite
run in the LiteRT interpreter with ``experimental_preserve_all_tensors`` (no delegate, so
every tensor is kept); the quantizer rewrites the fp32 flatbuffer in place, so tensors are
paired by index and checked by name and shape.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization.errors import ExportError

# Windows used for the table (the first of the parity windows) and per ORT run.
DEFAULT_WINDOWS = 64
_CHUNK = 8
# LiteRT ops that move data without new rounding: their output shares the input's
# quantization, so a row for them would repeat the row of their input.
_LAYOUT_OPS = {"RESHAPE", "TRANSPOSE", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS"}
_INT_RANGES = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
}


@dataclass
class _Acc:
    """Sums for one tensor, accumulated window by window."""

    signal: float = 0.0  # sum x^2, x before the quantizer
    noise: float = 0.0  # sum (x - q(x))^2
    ref_signal: float = 0.0  # sum f^2, f the fp32 model's tensor
    ref_noise: float = 0.0  # sum (f - y)^2, y the quantized model's (dequantized) tensor
    clipped: int = 0
    count: int = 0

    def add(self, x: np.ndarray, qx: np.ndarray, f: np.ndarray, y: np.ndarray, clipped: int):
        x, qx, f, y = (np.asarray(a, dtype=np.float64).ravel() for a in (x, qx, f, y))
        self.signal += float(x @ x)
        self.noise += float((x - qx) @ (x - qx))
        self.ref_signal += float(f @ f)
        self.ref_noise += float((f - y) @ (f - y))
        self.clipped += int(clipped)
        self.count += f.size


def sqnr_db(signal: float, noise: float) -> float:
    """10*log10(signal / noise) with ORT's floor (float eps on both norms)."""
    eps = float(np.finfo(float).eps)
    return 20.0 * math.log10(max(math.sqrt(signal), eps) / max(math.sqrt(noise), eps))


def _row(acc: _Acc, **info: Any) -> dict[str, Any]:
    return {
        **info,
        "sqnr_db": round(sqnr_db(acc.signal, acc.noise), 2),
        "cumulative_sqnr_db": round(sqnr_db(acc.ref_signal, acc.ref_noise), 2),
        "rel_error": _sig(math.sqrt(acc.ref_noise / acc.ref_signal)) if acc.ref_signal else None,
        "clipped_fraction": _sig(acc.clipped / acc.count) if acc.count else None,
    }


def _sig(v: float) -> float:
    return float(f"{v:.4g}")


def _table(rows: list[dict[str, Any]], *, fmt: str, n_windows: int, **extra: Any) -> dict:
    if not rows:
        raise ExportError(f"{fmt}: no quantized activation paired with the fp32 model")
    for i, r in enumerate(rows):
        r["position"] = i  # graph order, before sorting
    rows.sort(key=lambda r: (r["sqnr_db"], r["position"]))
    return {
        "format": fmt,
        "n_windows": n_windows,
        "sort": "sqnr_db ascending (the tensor's own quantization loss; worst first)",
        **extra,
        "worst": rows[0]["layer"],
        "layers": rows,
    }


def _fake_quant(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> tuple:
    lo, hi = _INT_RANGES[dtype]
    v = np.rint(x / scale) + zero_point
    clipped = int(((v < lo) | (v > hi)).sum())
    return (np.clip(v, lo, hi) - zero_point) * scale, clipped


# --- ONNX (QDQ) -------------------------------------------------------------------------


class _ChunkReader:
    """A CalibrationDataReader over one chunk of windows, as a single batch."""

    def __init__(self, x: np.ndarray, input_name: str) -> None:
        self._item: dict[str, np.ndarray] | None = {
            input_name: np.ascontiguousarray(x[:, None, :], dtype=np.float32)
        }

    def get_next(self) -> dict[str, np.ndarray] | None:
        item, self._item = self._item, None
        return item

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.get_next, None)


def _qdq_info(qdq_path: Path) -> dict[str, dict[str, Any]]:
    """Per activation quantized in the QDQ graph: scale, zero point, dtype, and the node
    that produces it (op type, name, layer label from its weight's initializer name)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(qdq_path)).graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    graph_inputs = {i.name for i in graph.input}
    info: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in inits:
            continue
        name = node.input[0]
        scale = numpy_helper.to_array(inits[node.input[1]])
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 else None
        if scale.size != 1:
            continue  # per-channel activations: not produced by this exporter
        dtype = "uint8" if zp is None else np.dtype(zp.dtype).name
        prod = producer.get(name)
        if prod is None:
            layer, op, node_name = ("input" if name in graph_inputs else name), "input", None
        else:
            layer, op, node_name = _onnx_layer(prod, inits, producer), prod.op_type, prod.name
        info[name] = {
            "tensor": name,
            "layer": layer,
            "op": op,
            "node": node_name,
            "dtype": dtype,
            "scale": float(scale.reshape(-1)[0]),
            "zero_point": 0 if zp is None else int(zp.reshape(-1)[0]),
        }
    return info


def _onnx_layer(node: Any, inits: dict, producer: dict) -> str:
    """A readable layer name: the module path of the node's weight (``blocks.1.pw.conv``),
    else the node name."""
    for inp in node.input[1:2]:
        src = producer.get(inp)
        weight = src.input[0] if src is not None and src.op_type == "DequantizeLinear" else inp
        for suffix in ("_quantized", "_DequantizeLinear_Output"):
            weight = weight.removesuffix(suffix)
        if weight in inits or (src is not None and src.input[0] in inits):
            return weight.removesuffix(".weight")
    return node.name


def onnx_layer_errors(
    float_path: Path, qdq_path: Path, x: np.ndarray, *, max_windows: int = DEFAULT_WINDOWS
) -> dict[str, Any]:
    """The table for a QDQ model and the fp32 model it was quantized from (same tensor names:
    ``float_path`` must be the graph that went into `quantize_static`)."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    x = np.asarray(x, dtype=np.float32)[:max_windows]
    info = _qdq_info(qdq_path)
    input_name = (
        ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
        .get_inputs()[0]
        .name
    )
    accs: dict[str, _Acc] = {}
    with tempfile.TemporaryDirectory(prefix="anyecg-layer-error-") as tmp:
        f_aug, q_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(float_path), str(f_aug))
        modify_model_output_intermediate_tensors(str(qdq_path), str(q_aug))
        for i in range(0, len(x), _CHUNK):
            chunk = x[i : i + _CHUNK]
            f_act = collect_activations(str(f_aug), _ChunkReader(chunk, input_name))
            q_act = collect_activations(str(q_aug), _ChunkReader(chunk, input_name))
            for name, m in create_activation_matching(q_act, f_act).items():
                if name not in info or "float" not in m:
                    continue
                post, ref = m["post_qdq"][0], m["float"][0]
                q = info[name]
                fq, clipped = _fake_quant(ref, q["scale"], q["zero_point"], q["dtype"])
                accs.setdefault(name, _Acc()).add(ref, fq, ref, post, clipped)
    order = list(info)  # graph order of the QuantizeLinear nodes
    rows = [_row(accs[n], **info[n]) for n in order if n in accs]
    return _table(
        rows,
        fmt="onnx",
        n_windows=len(x),
        tool="onnxruntime.quantization.qdq_loss_debug",
        reference="the fp32 ONNX graph given to quantize_static (ORT-preprocessed)",
        weights=_onnx_weights(float_path, qdq_path),
    )


def _onnx_weights(float_path: Path, qdq_path: Path) -> list[dict[str, Any]]:
    """SQNR of each quantized weight (``create_weight_matching`` + ``compute_weight_error``),
    worst first; biases (int32, negligible error) left out."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        compute_weight_error,
        create_weight_matching,
    )

    graph = onnx.load(str(qdq_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    weights = set()
    for node in graph.node:
        src = producer.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type != "DequantizeLinear" and src and src.op_type == "DequantizeLinear":
            weights.add(src.input[0].removesuffix("_quantized"))
    errors = compute_weight_error(create_weight_matching(str(float_path), str(qdq_path)))
    rows = [
        {"layer": name.removesuffix(".weight"), "tensor": name, "sqnr_db": round(float(v), 2)}
        for name, v in errors.items()
        if name in weights
    ]
    return sorted(rows, key=lambda r: r["sqnr_db"])


# --- LiteRT -----------------------------------------------------------------------------


def _interpreter(path: Path) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "for debugging purposes only"
        interp = Interpreter(
            model_path=str(path),
            num_threads=1,
            experimental_preserve_all_tensors=True,
            # The default XNNPACK delegate keeps only its subgraph's outputs.
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    interp.allocate_tensors()
    return interp


def litert_layer_errors(
    float_path: Path,
    quant_path: Path,
    x: np.ndarray,
    *,
    max_windows: int = DEFAULT_WINDOWS,
    module_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The table for a quantized .tflite and the fp32 .tflite it was quantized from.

    ``module_names``: the torch model's weight layers (conv / linear modules) in order; when
    their count matches the quantized model's conv / fully-connected ops, the rows are
    labelled with them (the converter's tensor names are not unique)."""
    x = np.asarray(x, dtype=np.float32)[:max_windows]
    f_int, q_int = _interpreter(float_path), _interpreter(quant_path)
    f_det, q_det = f_int.get_tensor_details(), q_int.get_tensor_details()
    pair = _tensor_pairing(f_det, q_det)
    q_in, f_in = q_int.get_input_details()[0], f_int.get_input_details()[0]
    ops = q_int._get_ops_details()  # the public API has no op list
    weight_ops = [op for op in ops if op["op_name"] in _WEIGHT_OPS]
    names = list(module_names) if module_names and len(module_names) == len(weight_ops) else None
    label = {op["index"]: names[k] for k, op in enumerate(weight_ops)} if names else {}
    # (tensor index, row info) in graph order: the input, then each computing op's output.
    targets: list[tuple[int, dict[str, Any]]] = [
        (q_in["index"], {"layer": "input", "op": "input", "node": None})
    ]
    for op in ops:
        if op["op_name"] in _LAYOUT_OPS:
            continue
        idx = int(op["outputs"][0])
        node = f"{op['op_name']} #{op['index']}"
        targets.append((idx, {"layer": label.get(op["index"], node), "op": op["op_name"],
                              "node": node}))  # fmt: skip
    params: dict[int, tuple[float, int, str]] = {}
    for idx, _ in targets:
        if idx not in pair:
            continue  # no fp32 counterpart (e.g. a QUANTIZE/DEQUANTIZE the quantizer added)
        fd, qd = f_det[pair[idx]], q_det[idx]
        dtype = np.dtype(qd["dtype"]).name
        scale, zp = qd["quantization"]
        if dtype in _INT_RANGES and scale > 0 and np.dtype(fd["dtype"]) == np.float32:
            params[idx] = (float(scale), int(zp), dtype)
    accs = {idx: _Acc() for idx in params}
    s_in, z_in, dt_in = params.get(q_in["index"], (None, 0, "float32"))
    for w in x:
        f_int.set_tensor(f_in["index"], w[None, None, :])
        f_int.invoke()
        if s_in is None:
            q_int.set_tensor(q_in["index"], w[None, None, :])
        else:
            lo, hi = _INT_RANGES[dt_in]
            v = np.clip(np.rint(w / s_in) + z_in, lo, hi).astype(dt_in)
            q_int.set_tensor(q_in["index"], v[None, None, :])
        q_int.invoke()
        for idx, (scale, zp, dtype) in params.items():
            ref = f_int.get_tensor(pair[idx])
            fq, clipped = _fake_quant(ref, scale, zp, dtype)
            y = (q_int.get_tensor(idx).astype(np.float64) - zp) * scale
            accs[idx].add(ref, fq, ref, y, clipped)
    rows = []
    for idx, meta in targets:
        if idx in params:
            scale, zp, dtype = params[idx]
            row_info = {"tensor": q_det[idx]["name"], **meta, "dtype": dtype}
            rows.append(_row(accs[idx], **row_info, scale=scale, zero_point=zp))
    weights = []
    for op in weight_ops:
        idx = int(op["inputs"][1])
        qd = q_det[idx]
        qp = qd["quantization_parameters"]
        if np.dtype(qd["dtype"]).kind != "i" or not len(qp["scales"]):
            continue  # float weights (not quantized)
        shape = [1] * len(qd["shape"])
        shape[qp["quantized_dimension"]] = -1 if len(qp["scales"]) > 1 else 1
        if idx not in pair:
            continue
        w = q_int.get_tensor(idx).astype(np.float64)
        deq = (w - qp["zero_points"].reshape(shape)) * qp["scales"].reshape(shape)
        ref = f_int.get_tensor(pair[idx]).astype(np.float64)
        layer = label.get(op["index"], f"{op['op_name']} #{op['index']}")
        sq = sqnr_db(float((ref**2).sum()), float(((ref - deq) ** 2).sum()))
        weights.append({"layer": layer, "tensor": qd["name"], "sqnr_db": round(sq, 2)})
    weights.sort(key=lambda r: r["sqnr_db"])
    return _table(
        rows,
        fmt="tflite",
        weights=weights,
        n_windows=len(x),
        tool="ai-edge-litert Interpreter(experimental_preserve_all_tensors=True)",
        reference="the fp32 .tflite given to ai-edge-quantizer",
        labels="torch module names" if names else "op name #index",
    )


_WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def _tensor_pairing(f_det: list[dict], q_det: list[dict]) -> dict[int, int]:
    """Quantized tensor index -> fp32 tensor index. Same list: index by index (names and
    shapes checked). Otherwise (the quantizer added or dropped tensors, e.g. around a layer
    kept in float) by (name, shape) where that key is unique in both models."""

    def key(d: dict) -> tuple[str, tuple[int, ...]]:
        return d["name"], tuple(int(v) for v in d["shape"])

    if len(f_det) == len(q_det) and all(
        key(f) == key(q) for f, q in zip(f_det, q_det, strict=True)
    ):
        return {i: i for i in range(len(q_det))}
    f_keys = [key(d) for d in f_det]
    q_keys = [key(d) for d in q_det]
    f_unique = {k: i for i, k in enumerate(f_keys) if f_keys.count(k) == 1}
    return {i: f_unique[k] for i, k in enumerate(q_keys) if k in f_unique and q_keys.count(k) == 1}


def weight_module_names(module: Any) -> list[str]:
    """The conv / linear modules of a torch model in registration order (their order of
    execution in a sequential CNN like the students)."""
    import torch

    kinds = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)
    return [name for name, m in module.named_modules() if isinstance(m, kinds)]


def worst_layers(table: dict[str, Any] | None, n: int = 5) -> list[dict[str, Any]]:
    """The first ``n`` rows (worst first)."""
    return [] if not table else list(table["layers"][:n])
