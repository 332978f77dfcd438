"""Inference runtimes for the device side (no torch): one `Model` interface.

`load_model(path, threads=...)` picks the backend by file type: `.onnx` -> ONNX Runtime,
`.tflite` -> ai-edge-litert (or tflite-runtime on numpy<2 devices). Each export has a
manifest next to it (`<model file>.manifest.json`) with lab names, thresholds,
calibration, preprocessing and int8 I/O parameters; the model is refused without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from anyecg_edge.runtime.base import (
    Model,
    ModelError,
    ModelMetadata,
    dequantize,
    quantize,
    sigmoid,
)
from anyecg_edge.runtime.manifest import (
    MANIFEST_FORMAT,
    file_sha256,
    load_manifest,
    manifest_path,
    parity_path,
)

# Module names in order of preference; tflite_runtime is the numpy<2 fallback (older Pi OS).
_RUNTIME_MODULES = {
    "onnxruntime": "onnxruntime",
    "ai-edge-litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
}

#: File suffixes the device runtimes load.
DEVICE_SUFFIXES = (".onnx", ".tflite")


def available_runtimes() -> list[str]:
    """Names of the inference runtimes importable in this environment (without importing them)."""
    return [name for name, mod in _RUNTIME_MODULES.items() if importlib.util.find_spec(mod)]


def load_model(path: str | Path, *, threads: int | None = None) -> Model:
    """Load an exported model (+ its manifest) with the runtime its file type needs.

    ``threads``: intra-op threads (None: the runtime's default, usually all cores).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from anyecg_edge.runtime.onnx import OnnxModel

        return OnnxModel.load(path, threads=threads)
    if suffix == ".tflite":
        from anyecg_edge.runtime.litert import LiteRTModel

        return LiteRTModel.load(path, threads=threads)
    raise ModelError(
        f"{path}: unknown model type {suffix or '(no suffix)'!r}; the device runtimes load "
        ".onnx and .tflite files made by `anyecg-edge export`"
    )


__all__ = [
    "DEVICE_SUFFIXES",
    "MANIFEST_FORMAT",
    "Model",
    "ModelError",
    "ModelMetadata",
    "available_runtimes",
    "dequantize",
    "file_sha256",
    "load_manifest",
    "load_model",
    "manifest_path",
    "parity_path",
    "quantize",
    "sigmoid",
]
