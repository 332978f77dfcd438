"""Export stage 4: the manifest the device reads and the parity report (what was checked,
against what, and with which calibration)."""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from anyecg_edge.quantization.parity import unchecked_limits
from anyecg_edge.quantization.windows import WindowSet

from anyecg_edge.runtime import MANIFEST_FORMAT, ModelMetadata, file_sha256

_TOOLS = (
    "anyecg-edge",
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "litert-torch",
    "ai-edge-quantizer",
    "ai-edge-litert",
    "numpy",
)


def tool_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _TOOLS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def preprocessing_spec(meta: ModelMetadata) -> dict[str, Any]:
    """What a non-Python device must reproduce before the model (DESIGN.md section 3)."""
    import importlib

    from anyecg_edge.signal.reference import baseline_kernel

    # The module (its constants), not the function the package re-exports under that name.
    pp = importlib.import_module("anyecg_edge.signal.preprocess")

    return {
        "function": "anyecg_edge.signal.preprocess",
        "fs": meta.fs,
        "window_s": meta.window_s,
        "window_samples": meta.window_samples,
        "resample": "polyphase (scipy.signal.resample_poly) to fs",
        "mains_notch_hz": meta.mains_hz,
        "notch_q": pp._NOTCH_Q,
        "bandpass_hz": list(pp._BANDPASS_HZ),
        "bandpass_order": pp._BANDPASS_ORDER,
        "zero_phase": True,
        "baseline_median_kernel_samples": baseline_kernel(meta.fs),
        "zscore_eps": pp._ZSCORE_EPS,
        "quality_gate": "anyecg_edge.signal.assess_quality on raw mV, before preprocessing",
        "input_layout": "(batch, 1, window_samples) float32",
    }


def build_manifest(
    meta: ModelMetadata,
    model_out: Path,
    *,
    fmt: str,
    precision: str,
    quant: dict[str, Any] | None,
    io_quant: dict[str, Any],
    folded: bool,
    tflm: dict[str, Any] | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The manifest written beside the model file (its ``parity`` section comes later)."""
    return {
        "format": MANIFEST_FORMAT,
        **{k: v for k, v in meta.to_dict().items() if k not in {"extra"}},
        **meta.extra,
        **io_quant,
        "preprocessing": preprocessing_spec(meta),
        "model_file": model_out.name,
        "model_sha256": file_sha256(model_out),
        "model_bytes": model_out.stat().st_size,
        "runtime": "onnxruntime" if fmt == "onnx" else "litert",
        "precision": precision,
        "input": {"name": "x", "shape": ["batch", 1, meta.window_samples], "dtype": "float32"},
        "bn_folded": folded,
        "quantization": quant,
        **({"tflm": tflm} if tflm is not None else {}),
        "source": source,
        "tools": tool_versions(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parity_record(
    manifest: dict[str, Any],
    model_out: Path,
    ckpt: Path,
    *,
    fmt: str,
    backend: str,
    report: dict[str, Any],
    failures: list[str],
    tol: dict[str, float],
    held_ws: WindowSet,
    calib_ws: WindowSet | None,
    calibration: dict[str, Any] | None,
    calib_notes: list[str],
    layers: dict[str, Any] | None,
    allow_degraded: bool,
    seconds: float,
) -> dict[str, Any]:
    """``<model>.parity.json``: the device runtime's file vs the torch fp32 model."""
    return {
        "model": str(model_out),
        "model_sha256": manifest["model_sha256"],
        "model_bytes": manifest["model_bytes"],
        "format": fmt,
        "runtime": backend,
        "precision": manifest["precision"],
        "quantization": manifest["quantization"],
        "reference": {
            "backend": "torch",
            "precision": "fp32",
            "checkpoint": str(ckpt),
            "bn_folded": False,
        },
        "heldout": held_ws.stats()
        | {
            "sources": held_ws.sources,
            "labels": held_ws.labels is not None,
            "records_shared_with_calibration": 0
            if calib_ws is None
            else len(set(calib_ws.groups) & set(held_ws.groups)),
        },
        "calibration": calibration,
        "calibration_warnings": calib_notes,
        **report,
        "layer_errors": layers,
        "tolerance": tol,
        "failures": failures,
        "unchecked_limits": unchecked_limits(report, tol),
        "passed": not failures,
        "allow_degraded": allow_degraded,
        "seconds": round(seconds, 2),
    }


def manifest_parity(
    ppath: Path, report: dict[str, Any], passed: bool, layers: dict[str, Any] | None
) -> dict[str, Any]:
    """The manifest's short ``parity`` section, pointing at the full report."""
    return {
        "file": ppath.name,
        "passed": passed,
        "n_windows": report["n_windows"],
        "agreement": report["calls"]["agreement"],
        "n_labs_called": report["calls"]["n_labs_called"],
        "mean_auroc_delta": report["auroc"]["mean_delta"],
        "max_abs_logit_error": report["logits"]["max_abs_error"],
        "worst_layer": None if layers is None else layers["worst"],
    }


def parity_failure_message(
    model_out: Path, ppath: Path, report: dict[str, Any], failures: list[str], *,
    fmt: str, precision: str,
) -> str:  # fmt: skip
    """One line for `ParityError`: what failed, that the model is gone, where to look."""
    return (
        f"{model_out}: parity vs the torch fp32 model failed on {report['n_windows']} "
        f"held-out windows: {'; '.join(failures)}. Removed the model; see {ppath} "
        "(--allow-degraded keeps it"
        + (
            "; --activations int16 quantizes activations to 16 bits where int8 cannot hold)"
            if fmt == "tflite" and precision == "int8"
            else ")"
        )
    )
