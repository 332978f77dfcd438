"""ONNX Runtime backend (CPU): float32 input (n, 1, samples) -> logits (n, n_labs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anyecg_edge.runtime.base import (
    ModelError,
    ModelMetadata,
    RuntimeModel,
    one_line,
    run_in_batches,
)


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(
            'ONNX models need onnxruntime: pip install "anyecg-edge[runtime]"'
        ) from None
    return onnxruntime


class OnnxModel(RuntimeModel):
    backend = "onnxruntime"

    def __init__(
        self, path: str | Path, metadata: ModelMetadata, *, threads: int | None = None
    ) -> None:
        super().__init__(metadata, str(path))
        ort = _import_ort()
        opts = ort.SessionOptions()
        self._check_threads(threads)
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ModelError(f"{path}: onnxruntime cannot load it ({one_line(exc)})") from None
        self.threads = threads
        self.precision = str(metadata.extra.get("precision") or "fp32")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        self._check_io_counts(path, len(inputs), len(outputs))
        self._input = inputs[0].name
        shape = inputs[0].shape
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"{path}: input type {inputs[0].type}, expected tensor(float)")
        self._check_io_shapes(path, shape, outputs[0].shape)
        self._batch = shape[0] if isinstance(shape[0], int) else None

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(windows, dtype=np.float32)
        # A fixed-batch export takes chunks of its batch size (the last one padded).
        logits = run_in_batches(
            x, self._batch, lambda chunk: self.session.run(None, {self._input: chunk})[0]
        )
        return logits.astype(np.float32)
