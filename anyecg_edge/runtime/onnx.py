"""ONNX Runtime backend (CPU): float32 input (n, 1, samples) -> logits (n, n_labs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anyecg_edge.runtime.base import Model, ModelError, ModelMetadata
from anyecg_edge.runtime.manifest import load_manifest


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            'ONNX models need onnxruntime: pip install "anyecg-edge[runtime]"'
        ) from None
    return onnxruntime


class OnnxModel(Model):
    backend = "onnxruntime"

    def __init__(
        self, path: str | Path, metadata: ModelMetadata, *, threads: int | None = None
    ) -> None:
        super().__init__(metadata, str(path))
        ort = _import_ort()
        opts = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ModelError(f"threads must be >= 1, got {threads}")
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelError(f"{path}: onnxruntime cannot load it ({_one_line(exc)})") from None
        self.threads = threads
        self.precision = str(metadata.extra.get("precision") or "fp32")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{path}: expected 1 input and 1 output, got {len(inputs)} and {len(outputs)}"
            )
        self._input = inputs[0].name
        shape = inputs[0].shape
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"{path}: input type {inputs[0].type}, expected tensor(float)")
        if len(shape) != 3 or shape[1:] != [1, metadata.window_samples]:
            raise ModelError(
                f"{path}: input shape {shape} does not match the manifest's window "
                f"({metadata.window_samples} samples = {metadata.fs:g} Hz x {metadata.window_s:g} s)"
            )
        self._batch = shape[0] if isinstance(shape[0], int) else None
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or out_shape[1] != len(metadata.labs):
            raise ModelError(
                f"{path}: output shape {out_shape} does not match the manifest's "
                f"{len(metadata.labs)} labs"
            )

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> OnnxModel:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return cls(path, load_manifest(path), threads=threads)

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        if self._batch is None or self._batch == x.shape[0]:
            return self.session.run(None, {self._input: x})[0].astype(np.float32)
        # A fixed-batch export: run it window by window.
        out = [self.session.run(None, {self._input: x[i : i + 1]})[0] for i in range(len(x))]
        return np.concatenate(out).astype(np.float32)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
