"""torch -> LiteRT (.tflite) with litert-torch (no TensorFlow), full int8 with ai-edge-quantizer.

The static recipe (`static_wi8_ai8`) quantizes every supported op to int8 weights and
activations, input and output tensors included (what TFLite-Micro needs). Calibration
runs the float model on real windows and records each tensor's range. The quantizer's
default range update is a moving average of per-window extremes (factor 0.95): on
student-s it set the logit range to +-6.5 while held-out logits reach +-15, and the clipped
outputs gave max logit errors of 24. So `minmax` uses the global min/max over all
calibration windows instead (max error 2.2, the same as ONNX Runtime's QDQ export), and
`percentile` (the default) cuts 0.005 % of all calibration values on each side of every
activation (a histogram over the min/max range, as ONNX Runtime's asymmetric percentile):
the bulk gets the int8 steps instead of the rarest spikes. It replaced the 0.1 % / 99.9 %
quantiles of the per-window extremes (ranges set by each window's largest spike): on the
demo student (256 calibration windows) relative logit error 0.038 -> 0.026 and call
agreement 0.986 -> 0.992; on the 120-visit student 0.164 -> 0.128. 99.99 beat 99.999
(0.029 / 0.991) and 99.9 (0.035 / 0.990) on the demo student.

16x8 (`static_wi8_ai16`: int16 activations and I/O, int8 weights; symmetric activation
ranges) is the option for models whose int8 activations lose too much. With 65536 levels
resolution is no longer the limit and clipping is: on student-s (470 calibration windows,
119 later-record windows) minmax gave max |dlogit| 0.13 vs 0.26 for percentile (int8:
0.53 / 0.40), call agreement 99.8 % (int8 98.7 %); so 16x8 defaults to minmax.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization.calib_progress import HISTOGRAM, tick
from anyecg_edge.quantization.errors import ExportError

from anyecg_edge.native_stderr import native_stderr_to_debug

log = logging.getLogger(__name__)

CALIB_METHODS = ("minmax", "percentile")
_PERCENTILE = 99.99  # % of all calibration values inside the range (see the module doc)
# ai-edge-quantizer recipes by activation bits (weights int8, per channel, in both).
RECIPES = {8: "static_wi8_ai8", 16: "static_wi8_ai16"}


@contextlib.contextmanager
def _quiet_logs():
    """Root-logger INFO lines and debug-only warnings off (the debug log keeps the lines)."""
    root = logging.getLogger()
    level = root.level
    if not log.isEnabledFor(logging.DEBUG):
        root.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _quiet():
    """litert-torch and the quantizer print progress (stdout/stderr, root-logger INFO lines,
    tqdm bars) and debug-only warnings; keep them for the debug log."""
    buf = io.StringIO()
    try:
        with (
            _quiet_logs(),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
            native_stderr_to_debug(),  # C++ lines: absl, oneDNN, XNNPACK
        ):
            yield
    finally:
        if buf.getvalue().strip():
            log.debug("%s", buf.getvalue().strip())


def export_fp32(module: Any, path: Path, window_samples: int) -> Path:
    import torch

    # torchao (pulled in by litert-torch) warns about CUDA/triton kernels at import.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # converter's C++ INFO lines
    with _quiet():
        import litert_torch

    example = (torch.zeros(1, 1, window_samples),)
    try:
        with _quiet():
            edge_model = litert_torch.convert(module.eval(), example)
            edge_model.export(str(path))
    except Exception as exc:  # converter errors come in many types
        raise ExportError(f"{path}: litert-torch conversion failed ({_one_line(exc)})") from None
    return path


def _signature(path: Path) -> tuple[str, str]:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=str(path)).get_signature_list()
    if len(sigs) != 1:
        raise ExportError(f"{path}: expected one signature, got {sorted(sigs)}")
    key, sig = next(iter(sigs.items()))
    if len(sig["inputs"]) != 1:
        raise ExportError(f"{path}: expected one input, got {sig['inputs']}")
    return key, sig["inputs"][0]


def _value_percentile_ranges(
    fp32_path: Path,
    qsvs: dict[str, dict],
    data: list[dict[str, np.ndarray]],
    percentile: float,
    bins: int = 2048,
) -> dict[str, dict]:
    """Per-tensor activation ranges that cut (100 - percentile) / 2 % of all calibration
    values on each side, from a histogram over the min/max range (ONNX Runtime's asymmetric
    percentile, so both formats calibrate alike). Per-window extremes (the old rule) keep
    every window's largest spike: ranges several times the bulk, int8 steps too coarse."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "preserve_all_tensors is for debugging"
        interp = Interpreter(model_path=str(fp32_path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    index = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    names = [
        n
        for n, q in qsvs.items()
        if n in index and np.size(q["min"]) == 1 and np.size(q["max"]) == 1
    ]
    lo_hi = {n: (float(np.min(qsvs[n]["min"])), float(np.max(qsvs[n]["max"]))) for n in names}
    hist = {n: np.zeros(bins, np.int64) for n in names}
    input_index = interp.get_input_details()[0]["index"]
    tick(0, len(data), HISTOGRAM)
    for done, item in enumerate(data, 1):
        interp.set_tensor(input_index, next(iter(item.values())))
        interp.invoke()
        for n in names:
            lo, hi = lo_hi[n]
            if hi > lo:
                hist[n] += np.histogram(interp.get_tensor(index[n]), bins=bins, range=(lo, hi))[0]
        tick(done, len(data), HISTOGRAM)
    cut = (100.0 - percentile) / 200.0
    out = dict(qsvs)
    for n in names:
        lo, hi = lo_hi[n]
        total = hist[n].sum()
        if hi <= lo or total == 0:
            continue
        edges = np.linspace(lo, hi, bins + 1)
        cdf = np.cumsum(hist[n]) / total
        new_lo = float(edges[int(np.searchsorted(cdf, cut))])
        new_hi = float(edges[int(np.searchsorted(cdf, 1.0 - cut)) + 1])
        q = qsvs[n]
        out[n] = {
            **q,
            "min": np.full_like(q["min"], min(new_lo, 0.0)),
            "max": np.full_like(q["max"], max(new_hi, 0.0)),
        }
    return out


# ai-edge-quantizer draws its own tqdm bar for a calibrate() call of >= 100 op steps
# (ops x windows); below that it prints nothing.
_QUANTIZER_BAR_MIN_OPS = 100


def _calibrate_per_window(
    calib: Any, fp32_path: Path, key: str, data: list[dict[str, np.ndarray]], rm: Any
) -> None:
    """Feed the calibrator one window per call, so the calibration bar advances per window.
    The ranges are those of one call over all windows: the global min/max update is
    order-free and the calibrator keeps its ranges between calls (checked tensor by tensor
    on the stand-in student: 98 tensors, equal). One window of a graph under
    `_QUANTIZER_BAR_MIN_OPS` ops prints nothing, so its calls run outside `_quiet` (which
    redirects stderr and would swallow the bar's redraws); larger graphs keep `_quiet`."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    n_ops = sum(len(g.operators) for g in fu.read_model(str(fp32_path)).subgraphs)
    quiet = _quiet if n_ops >= _QUANTIZER_BAR_MIN_OPS else _quiet_logs
    tick(0, len(data))
    for done, item in enumerate(data, 1):
        with quiet():
            calib.calibrate({key: [item]}, rm)
        tick(done, len(data))


def quantize_static_int8(
    fp32_path: Path,
    out: Path,
    calib_x: np.ndarray,
    *,
    method: str = "percentile",
    activation_bits: int = 8,
    float_head: bool = False,
) -> dict[str, Any]:
    """Full-integer .tflite: int8 weights, int8 (``activation_bits`` 8, recipe
    `static_wi8_ai8`) or int16 (16: `static_wi8_ai16`, "16x8") activations and I/O; returns
    settings incl. input/output quant params."""
    from ai_edge_quantizer import calibrator, quantizer, recipe, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    if method not in CALIB_METHODS:
        raise ExportError(
            f"--calib-method {method!r} is not available for tflite; expected one of "
            f"{', '.join(CALIB_METHODS)}"
        )
    if activation_bits not in RECIPES:
        raise ExportError(f"activation bits {activation_bits}: expected one of 8, 16")
    recipe_name = RECIPES[activation_bits]
    make_recipe = getattr(recipe, recipe_name)
    key, input_name = _signature(fp32_path)
    rm = recipe_manager.RecipeManager()
    rm.load_quantization_recipe(make_recipe())
    float_head = float_head and activation_bits == 8
    if float_head:
        _keep_fully_connected_float(rm)
    # Global min/max over every window; percentile then narrows it from a value histogram.
    update = qsv_utils.min_max_update
    data = [{input_name: w[None, None, :].astype(np.float32)} for w in calib_x]
    with _quiet():
        calib = calibrator.Calibrator(str(fp32_path), num_threads=1, qsv_update_func=update)
    _calibrate_per_window(calib, fp32_path, key, data, rm)
    qsvs = calib.get_model_qsvs()
    if method == "percentile":
        qsvs = _value_percentile_ranges(fp32_path, qsvs, data, _PERCENTILE)
    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(rm.get_quantization_recipe())
    with _quiet():
        result = qt.quantize(qsvs, enable_progress_report=False)
    result.export_model(str(out), overwrite=True)
    float_ops: list[str] = []
    if float_head:
        _float_output(out)
        float_ops = ["FULLY_CONNECTED (the head)"]
    io_quant = io_quant_params(out)
    return {
        "scheme": "static",
        "recipe": recipe_name,
        "calibration_method": method,
        "activation_type": f"int{activation_bits}",
        "weight_type": "int8",
        "per_channel": True,
        "fp32_ops": float_ops,
        **io_quant,
    }


def _keep_fully_connected_float(rm: Any) -> None:
    """Leave FULLY_CONNECTED ops in float (the student's only one is its head), as the ONNX
    export keeps its head in fp32: an int8 head plus int8 logits cost ~1.5 % of the logit
    spread in error (measured on the demo student), the float head 160 x n_labs MACs."""
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName

    rm.add_quantization_config(
        regex=".*",
        operation_name=TFLOperationName.FULLY_CONNECTED,
        algorithm_key=AlgorithmName.NO_QUANTIZE,
    )


def _float_output(path: Path) -> None:
    """Drop the QUANTIZE op the quantizer puts after a float head at the graph output, so the
    model returns float32 logits (int8 input kept). In place."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    graph = model.subgraphs[0]
    out_idx = graph.outputs[0]
    for k, op in enumerate(graph.operators):
        if out_idx not in list(op.outputs):
            continue
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        src = int(op.inputs[0])
        if builtin != schema.BuiltinOperator.QUANTIZE or (
            graph.tensors[src].type != schema.TensorType.FLOAT32
        ):
            return  # the head was quantized after all: keep the model as it is
        graph.outputs[0] = src
        del graph.operators[k]
        for sig in model.signatureDefs:
            for item in sig.outputs:
                if item.tensorIndex == out_idx:
                    item.tensorIndex = src
        fu.write_model(model, str(path))
        return


def quantize_dynamic_int8(fp32_path: Path, out: Path) -> dict[str, Any]:
    """Dynamic-range int8 (weights int8, float I/O and activations): no calibration."""
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    with _quiet():
        result = qt.quantize(enable_progress_report=False)
    result.export_model(str(out), overwrite=True)
    return {"scheme": "dynamic", "recipe": "dynamic_wi8_afp32", "weight_type": "int8"}


def io_quant_params(path: Path) -> dict[str, dict[str, Any] | None]:
    """The input/output tensors' affine params as stored in the model file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    out: dict[str, dict[str, Any] | None] = {}
    for name, details in (
        ("input_quant", interp.get_input_details()[0]),
        ("output_quant", interp.get_output_details()[0]),
    ):
        dtype = np.dtype(details["dtype"])
        if dtype == np.float32:
            out[name] = None
            continue
        scale, zero_point = details["quantization"]
        out[name] = {"scale": float(scale), "zero_point": int(zero_point), "dtype": dtype.name}
    return out


def _one_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
