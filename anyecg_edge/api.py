"""The public Python API: from a 1-D numpy array in mV to per-lab estimates.

    import anyecg_edge as ae
    model = ae.load_model("student_int8.tflite")        # .onnx / .tflite / .pt / run folder
    result = ae.estimate(model, signal_mv, fs=130.0)    # 1-D array in mV, >= one 10 s window

``result.labs["potassium"]`` has ``probability``, ``abnormal`` (None when the lab is not
calibrated), ``status``, ``threshold``, ``unit``, ``interval`` (calibration uncertainty)
and ``spread`` (window-to-window variation); ``result.quality`` says which windows the
signal-quality gate used; ``result.to_dict()`` is exactly what ``anyecg-edge predict
--json`` prints for the same signal. Research estimates, not diagnoses.

The lower level: :meth:`anyecg_edge.runtime.Model.predict` takes *preprocessed* windows;
:func:`anyecg_edge.predict.predict_record` takes an :class:`anyecg_edge.io.Record`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.io import Record, RecordError
from anyecg_edge.io.records import to_millivolts
from anyecg_edge.predict import RecordPrediction, predict_record
from anyecg_edge.runtime import DEVICE_SUFFIXES, Model, ModelError
from anyecg_edge.runtime import load_model as load_device_model

__all__ = ["Estimate", "LabEstimate", "estimate", "load_model"]

#: File names a training run folder holds its torch checkpoint under, in order.
_RUN_CHECKPOINTS = ("model.pt", "model.pth")


def load_model(path: str | Path, *, threads: int | None = None) -> Model:
    """Load a model for inference, picking the backend by file type.

    ``path``: an ``.onnx`` / ``.tflite`` export (its ``.manifest.json`` next to it; no
    torch needed), a torch checkpoint ``.pt`` / ``.pth``, or a training run folder holding
    ``model.pt`` (both need the ``train`` extra). ``threads``: inference threads (None:
    the runtime's default, usually all cores). Raises :class:`ModelError` (one line).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DEVICE_SUFFIXES:
        return load_device_model(path, threads=threads)
    if path.is_dir():
        found = [path / n for n in _RUN_CHECKPOINTS if (path / n).is_file()]
        if not found:
            raise ModelError(f"{path}: folder has no model.pt (expected a training output folder)")
        path, suffix = found[0], found[0].suffix
    if suffix in {".pt", ".pth"}:
        try:
            import torch

            from anyecg_edge.training.torch_model import TorchModel
        except ImportError as exc:
            raise ModelError(
                f"{path}: torch checkpoints need torch ({exc.name} missing): "
                'pip install "anyecg-edge[train]", or export to .onnx/.tflite for a device'
            ) from None
        if threads is not None:
            torch.set_num_threads(threads)
        return TorchModel.load(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or run folder")
    raise ModelError(
        f"{path}: unknown model type {suffix!r}; expected .onnx, .tflite, .pt/.pth or a folder"
    )


@dataclass(frozen=True)
class LabEstimate:
    """One lab's estimate (the entry ``predict --json`` prints under ``labs``)."""

    name: str
    entry: Mapping[str, Any]

    @property
    def probability(self) -> float:
        """Calibrated P(abnormal), mean over the accepted windows."""
        return float(self.entry["probability"])

    @property
    def abnormal(self) -> bool | None:
        """The call at the threshold; None when the lab is not calibrated."""
        return self.entry["abnormal"]

    @property
    def status(self) -> str:
        """'abnormal', 'normal' or 'not calibrated'."""
        return str(self.entry["status"])

    @property
    def threshold(self) -> float | None:
        return self.entry["threshold"]

    @property
    def interval(self) -> tuple[float, float] | None:
        """Range of the probability over the bootstrap calibrations (calibration
        uncertainty, at ``interval_level``); None without bootstrap calibrations."""
        iv = self.entry["interval"]
        return None if iv is None else (float(iv[0]), float(iv[1]))

    @property
    def interval_level(self) -> float | None:
        return self.entry.get("interval_level")

    @property
    def spread(self) -> dict[str, Any]:
        """Window-to-window variation: n_windows, std, min, max (not a confidence interval)."""
        return dict(self.entry["spread"])

    @property
    def unit(self) -> str | None:
        return self.entry.get("unit")

    @property
    def display_name(self) -> str:
        return str(self.entry.get("display_name") or self.name)

    @property
    def reference_range(self) -> list[float | None] | None:
        return self.entry.get("reference_range")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.entry)


@dataclass(frozen=True)
class Estimate:
    """Per-lab estimates of one signal; ``to_dict()`` equals ``predict --json``."""

    prediction: RecordPrediction

    @property
    def labs(self) -> dict[str, LabEstimate]:
        """Per lab (manifest order); empty when no window passed the quality gate."""
        return {k: LabEstimate(k, v) for k, v in self.prediction.labs.items()}

    @property
    def status(self) -> str:
        """'ok', or 'rejected' when no window passed the signal-quality gate."""
        return "ok" if self.prediction.n_used else "rejected"

    @property
    def quality(self) -> dict[str, Any]:
        """windows_total, windows_used, reasons (rejection codes) and each window's report."""
        return self.to_dict()["quality"]

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.prediction.model)

    def to_dict(self) -> dict[str, Any]:
        return self.prediction.to_dict()


def estimate(
    model: Model | str | Path,
    signal_mv: Any,
    fs: float,
    *,
    units: str = "mV",
    lead: str = "unnamed",
    source: str = "<array>",
    hop_s: float | None = None,
    mains_hz: float | None | str = "model",
) -> Estimate:
    """Estimate per-lab abnormality from one ECG lead given as a numpy array.

    ``model``: a loaded :class:`Model` (:func:`load_model`) or a path to load.
    ``signal_mv``: 1-D samples of one lead in mV (NaN marks missing samples), at least one
    window long (10 s for the project's models). ``fs``: its sampling rate in Hz.
    ``units``: the array's unit if not mV ("uV", "V"), or "auto" to infer it from the
    amplitude (refused when ambiguous). ``lead``/``source`` only label the result.
    ``hop_s``: window hop (default: the window length). ``mains_hz``: notch frequency
    ("model": the manifest's; None: none).

    Each 10 s window is gated for quality, preprocessed like the training corpus and
    scored; the estimate is the mean over the accepted windows (as ``predict``).
    Raises :class:`anyecg_edge.io.RecordError` / :class:`ModelError` (one line).
    """
    if not isinstance(model, Model):
        model = load_model(model)
    x = np.asarray(signal_mv)
    if x.ndim == 2 and 1 in x.shape:
        x = x.reshape(-1)  # a (1, n) or (n, 1) array is one lead
    if x.ndim != 1:
        raise RecordError(f"{source}: signal_mv must be 1-D (one lead), got shape {x.shape}")
    if x.dtype.kind not in "iuf":
        raise RecordError(f"{source}: signal_mv must be numeric, got dtype {x.dtype}")
    try:
        fs = float(fs)
    except (TypeError, ValueError):
        raise RecordError(f"{source}: fs must be a number in Hz, got {fs!r}") from None
    mv, note = to_millivolts(x.astype(np.float64), units, fs, source=source, lead=lead)
    record = Record(signal_mv=mv, fs=fs, lead=lead, source=source, units="mV", note=note)
    return Estimate(predict_record(record, model, hop_s=hop_s, mains_hz=mains_hz))
