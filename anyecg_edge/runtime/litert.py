"""LiteRT (TensorFlow Lite) backend: `ai-edge-litert`, else `tflite-runtime` (numpy<2 devices).

Full-int8 models take an int8 input and give an int8 output; the affine parameters come
from the manifest (checked against the ones stored in the model file) and are applied
here, so callers always pass float32 windows and get float32 logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.runtime.base import Model, ModelError, ModelMetadata, dequantize, quantize
from anyecg_edge.runtime.manifest import load_manifest

# Relative tolerance between the manifest's and the model file's quant params: both are
# written by the exporter from the same float32 numbers, so they agree to float32 round-off.
_QUANT_RTOL = 1e-6


def import_interpreter() -> tuple[Any, str]:
    """The LiteRT Interpreter class and the name of the package that provided it."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            '.tflite models need a LiteRT runtime: pip install "anyecg-edge[runtime]" '
            "(ai-edge-litert), or tflite-runtime on numpy<2 devices"
        ) from None


class LiteRTModel(Model):
    backend = "litert"

    def __init__(
        self, path: str | Path, metadata: ModelMetadata, *, threads: int | None = None
    ) -> None:
        super().__init__(metadata, str(path))
        interpreter_cls, package = import_interpreter()
        self.backend = package
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        try:
            self.interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {package} cannot load it ({_one_line(exc)})") from None
        self.threads = threads
        self.precision = str(metadata.extra.get("precision") or "fp32")
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{path}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        self._in, self._out = inputs[0], outputs[0]
        shape = [int(v) for v in self._in["shape"]]
        if len(shape) != 3 or shape[1:] != [1, metadata.window_samples]:
            raise ModelError(
                f"{path}: input shape {shape} does not match the manifest's window "
                f"({metadata.window_samples} samples = {metadata.fs:g} Hz x {metadata.window_s:g} s)"
            )
        self._batch = shape[0]
        out_shape = [int(v) for v in self._out["shape"]]
        if len(out_shape) != 2 or out_shape[1] != len(metadata.labs):
            raise ModelError(
                f"{path}: output shape {out_shape} does not match the manifest's "
                f"{len(metadata.labs)} labs"
            )
        self._in_q = self._check_quant(path, "input", self._in, metadata.input_quant)
        self._out_q = self._check_quant(path, "output", self._out, metadata.output_quant)

    @staticmethod
    def _check_quant(
        path: Path | str, which: str, detail: dict, q: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        dtype = np.dtype(detail["dtype"])
        field = f"{which}_quant"
        if dtype == np.float32:
            if q is not None:
                raise ModelError(
                    f"{path}: the manifest's {field} says {q['dtype']}, the model's {which} is float32"
                )
            return None
        if q is None:
            raise ModelError(
                f"{path}: the model's {which} is {dtype.name} but the manifest has no {field} "
                "(scale/zero_point) to apply"
            )
        scale, zero_point = detail["quantization"]
        if (
            dtype.name != q["dtype"]
            or int(zero_point) != q["zero_point"]
            or abs(float(scale) - q["scale"]) > _QUANT_RTOL * abs(float(scale))
        ):
            raise ModelError(
                f"{path}: the manifest's {field} {q} does not match the model file's "
                f"{dtype.name} scale={float(scale)!r} zero_point={int(zero_point)}"
            )
        return q

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> LiteRTModel:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return cls(path, load_manifest(path), threads=threads)

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        if self._in_q is not None:
            x = quantize(x, self._in_q)
        b = self._batch
        out = []
        # The converted graph has a fixed batch (1); run it window by window.
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            if len(chunk) < b:  # pad the last chunk of a fixed batch > 1
                pad = np.zeros((b - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            self.interpreter.set_tensor(self._in["index"], np.ascontiguousarray(chunk))
            self.interpreter.invoke()
            out.append(self.interpreter.get_tensor(self._out["index"])[: len(x) - i].copy())
        logits = np.concatenate(out)
        if self._out_q is not None:
            return dequantize(logits, self._out_q)
        return logits.astype(np.float32)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
