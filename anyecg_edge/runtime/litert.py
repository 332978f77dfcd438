"""LiteRT (TensorFlow Lite) backend: `ai-edge-litert`, else `tflite-runtime` (numpy<2 devices).

Full-int8 models take an int8 input and give an int8 output; the affine parameters come
from the manifest (checked against the ones stored in the model file) and are applied
here, so callers always pass float32 windows and get float32 logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.native_stderr import native_stderr_to_debug
from anyecg_edge.runtime.base import (
    ModelError,
    ModelMetadata,
    RuntimeModel,
    dequantize,
    one_line,
    quantize,
    run_in_batches,
)

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


class LiteRTModel(RuntimeModel):
    backend = "litert"

    def __init__(
        self, path: str | Path, metadata: ModelMetadata, *, threads: int | None = None
    ) -> None:
        super().__init__(metadata, str(path))
        interpreter_cls, package = import_interpreter()
        self.backend = package
        self._check_threads(threads)
        try:
            # (LiteRT prints "Created TensorFlow Lite XNNPACK delegate" from C++ here)
            with native_stderr_to_debug():
                self.interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: {package} cannot load it ({one_line(exc)})") from None
        self.threads = threads
        self.precision = str(metadata.extra.get("precision") or "fp32")
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        self._check_io_counts(path, len(inputs), len(outputs))
        self._in, self._out = inputs[0], outputs[0]
        shape = [int(v) for v in self._in["shape"]]
        self._check_io_shapes(path, shape, [int(v) for v in self._out["shape"]])
        self._batch = shape[0]
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

    def _invoke(self, chunk: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._in["index"], np.ascontiguousarray(chunk))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out["index"]).copy()

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows, dtype=np.float32)
        if self._in_q is not None:
            x = quantize(x, self._in_q)
        # The converted graph has a fixed batch (1): chunks of it, the last one padded.
        logits = run_in_batches(x, self._batch, self._invoke)
        if self._out_q is not None:
            return dequantize(logits, self._out_q)
        return logits.astype(np.float32)
