"""Inference runtimes for the device side (no torch): one `Model` interface.

Backends (ONNX Runtime, ai-edge-litert, tflite-runtime) arrive with issue 6; this module
already reports which of them are importable here.
"""

from __future__ import annotations

import importlib.util

from anyecg_edge.runtime.base import Model, ModelError, ModelMetadata, sigmoid

# Module names in order of preference; tflite_runtime is the numpy<2 fallback (older Pi OS).
_RUNTIME_MODULES = {
    "onnxruntime": "onnxruntime",
    "ai-edge-litert": "ai_edge_litert",
    "tflite-runtime": "tflite_runtime",
}


def available_runtimes() -> list[str]:
    """Names of the inference runtimes importable in this environment (without importing them)."""
    return [name for name, mod in _RUNTIME_MODULES.items() if importlib.util.find_spec(mod)]


__all__ = ["Model", "ModelError", "ModelMetadata", "available_runtimes", "sigmoid"]
