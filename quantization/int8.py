"""Export stage 3: static int8 (or LiteRT 16x8) of the fp32 graph with real calibration
windows: the calibration method (default, option or `auto` measured on held-out
calibration records), the quantizer per format, and the per-layer error table."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization import layer_error, litert_export, onnx_export
from anyecg_edge.quantization.errors import ExportError, WindowsError
from anyecg_edge.quantization.export_checkpoint import torch_logits
from anyecg_edge.quantization.parity import check_tolerance, metric_values, parity_report
from anyecg_edge.quantization.windows import WindowSet, split_heldout

from anyecg_edge.runtime import ModelMetadata

log = logging.getLogger("anyecg_edge.quantization.export")  # the export's messages, one logger

# Share of the calibration records that `--calib-method auto` holds out to compare methods.
SELECTION_FRACTION = 0.25
# The methods `auto` compares. ORT's entropy is left out: on student-s it took 54 s (13x
# percentile, > 2x the whole export) and kept 76 % call agreement on the selection windows
# (minmax 98.5 %, percentile 99.0 %); `--calib-method entropy` still runs it.
AUTO_METHODS = ("minmax", "percentile")
# Per trial of `auto`, beside agreement and call flips (keys as in the tolerance).
_TRIAL_METRICS = (
    "mean_abs_logit_error",
    "rel_mean_abs_logit_error",
    "max_abs_logit_error",
    "mean_auroc_delta",
)


def default_calib_method(fmt: str, activations: str = "int8") -> str:
    """The measured default (quantization/README.md): percentile for int8 in both formats,
    minmax for LiteRT 16x8 (int16 has resolution to spare; clipping is what hurts)."""
    return "minmax" if activations == "int16" else "percentile"


def calib_methods(fmt: str) -> tuple[str, ...]:
    """The calibration methods a format's quantizer offers."""
    return onnx_export.CALIB_METHODS if fmt == "onnx" else litert_export.CALIB_METHODS


class Quantizer:
    """One format's static quantization with fixed options; called per calibration method."""

    def __init__(
        self,
        fmt: str,
        raw: Path,
        *,
        quantize_head: bool,
        reduce_range: bool,
        activation_bits: int,
    ) -> None:
        self.fmt, self.raw = fmt, raw
        self.quantize_head, self.reduce_range = quantize_head, reduce_range
        self.activation_bits = activation_bits

    @property
    def methods(self) -> tuple[str, ...]:
        return calib_methods(self.fmt)

    @property
    def suffix(self) -> str:
        return self.raw.suffix

    def __call__(
        self, x: np.ndarray, dst: Path, method: str, *, keep_float: Path | None = None
    ) -> dict[str, Any]:
        if self.fmt == "onnx":
            return onnx_export.quantize_static_int8(
                self.raw,
                dst,
                x,
                method=method,
                quantize_head=self.quantize_head,
                reduce_range=self.reduce_range,
                keep_float=keep_float,
            )
        return litert_export.quantize_static_int8(
            self.raw,
            dst,
            x,
            method=method,
            activation_bits=self.activation_bits,
            # TFLite Micro (c-array) needs full int8; elsewhere the head stays float, as in ONNX.
            float_head=not self.quantize_head and self.fmt == "tflite",
        )


@dataclass
class StaticInt8:
    """What a static quantization gives the manifest and the parity report."""

    quant: dict[str, Any]
    io_quant: dict[str, Any]
    calibration: dict[str, Any]
    layers: dict[str, Any] | None


def quantize_static(
    quantize: Quantizer,
    final: Path,
    tmp_dir: Path,
    *,
    module: Any,
    fused: Any,
    meta: ModelMetadata,
    calib_ws: WindowSet,
    held_ws: WindowSet,
    precision: str,
    tol: dict[str, float],
    calib_method: str | None,
    activations: str,
    layer_windows: int,
) -> StaticInt8:
    """Quantize ``quantize.raw`` into ``final`` with the chosen calibration method; the
    per-layer error table on ``layer_windows`` held-out windows (0: none)."""
    if calib_method == "auto":
        calibration = select_calib_method(quantize, module, meta, calib_ws, precision, tol, tmp_dir)
        method, chosen_by = calibration["method"], "auto"
    else:
        method = calib_method or default_calib_method(quantize.fmt, activations)
        chosen_by = "default" if calib_method is None else "option"
        calibration = {"method": method}
    quant = quantize(calib_ws.x, final, method, keep_float=tmp_dir / "float-ref.onnx")
    io_quant = {k: quant.pop(k) for k in ("input_quant", "output_quant") if k in quant}
    calibration = {
        "method": method,
        "chosen_by": chosen_by,
        "n_windows": len(calib_ws),
        "n_records": len(set(calib_ws.groups)),
        **{k: v for k, v in calibration.items() if k != "method"},
    }
    layers = None
    if layer_windows > 0:
        try:
            layers = layer_table(quantize.fmt, tmp_dir, quantize.raw, final, held_ws.x, fused,
                                 layer_windows)  # fmt: skip
        except ExportError as exc:  # a diagnostic: never fails the export itself
            log.warning("per-layer error table skipped: %s", exc)
            layers = {"error": str(exc)}
    return StaticInt8(quant, io_quant, calibration, layers)


def runtime_model(path: Path, meta: ModelMetadata, quant: dict[str, Any], precision: str) -> Any:
    """A quantized candidate through the device runtime's model class (no manifest file)."""
    cand = replace(
        meta,
        input_quant=quant.get("input_quant"),
        output_quant=quant.get("output_quant"),
        extra={**meta.extra, "precision": precision},
    )
    if path.suffix == ".onnx":
        from anyecg_edge.runtime.onnx import OnnxModel

        return OnnxModel(path, cand, threads=1)
    from anyecg_edge.runtime.litert import LiteRTModel

    return LiteRTModel(path, cand, threads=1)


def select_calib_method(
    quantize: Quantizer,
    module: Any,
    meta: ModelMetadata,
    calib_ws: WindowSet,
    precision: str,
    tol: dict[str, float],
    tmp_dir: Path,
) -> dict[str, Any]:
    """`--calib-method auto`: quantize with each of `AUTO_METHODS` on 75 % of the calibration
    records,
    measure parity on the other 25 % (never on the parity held-out set, so the final
    report stays unbiased), keep the method with the fewest broken limits, then the fewest
    call flips, then the smallest mean |dlogit|. Returns the choice and every trial."""
    try:
        fit_ws, sel_ws = split_heldout(calib_ws, SELECTION_FRACTION)
    except WindowsError as exc:
        raise ExportError(f"--calib-method auto: {exc}") from None
    ref = torch_logits(module, sel_ws.x)
    trials = []
    for method in AUTO_METHODS:
        t = time.perf_counter()
        dst = tmp_dir / f"candidate-{method}{quantize.suffix}"
        q = quantize(fit_ws.x, dst, method)
        test = runtime_model(dst, meta, q, precision).predict_logits(sel_ws.x[:, None, :])
        rep = parity_report(ref, test, meta)
        values = metric_values(rep)  # the report's numbers under the tolerance keys
        trials.append(
            {
                "method": method,
                "failures": check_tolerance(rep, tol),
                "agreement": values["agreement"],
                "n_disagree": rep["calls"]["n_disagree"],
                **{k: values[k] for k in _TRIAL_METRICS},
                "seconds": round(time.perf_counter() - t, 2),
            }
        )

    def score(t: dict[str, Any]) -> tuple:
        return (len(t["failures"]), t["n_disagree"], t["mean_abs_logit_error"])

    best = min(trials, key=score)
    log.info(
        "--calib-method auto: %s (%s)",
        best["method"],
        ", ".join(f"{t['method']} {t['n_disagree']} flips" for t in trials),
    )
    return {
        "method": best["method"],
        "selection": {
            "candidates": list(AUTO_METHODS),
            "not_tried": [m for m in quantize.methods if m not in AUTO_METHODS],
            "fit_windows": len(fit_ws),
            "selection_windows": len(sel_ws),
            "selection_records": len(set(sel_ws.groups)),
            "rule": "fewest broken limits, then fewest call flips, then mean |dlogit|",
            "trials": trials,
        },
    }


def layer_table(
    fmt: str,
    tmp_dir: Path,
    raw: Path,
    final: Path,
    x: np.ndarray,
    fused: Any,
    n_windows: int,
) -> dict[str, Any]:
    """The per-layer quantization-error table (`layer_error`), worst layer first."""
    if fmt == "onnx":
        return layer_error.onnx_layer_errors(
            tmp_dir / "float-ref.onnx", final, x, max_windows=n_windows
        )
    return layer_error.litert_layer_errors(
        raw,
        final,
        x,
        max_windows=n_windows,
        module_names=layer_error.weight_module_names(fused),
    )
