"""The one `Model` interface every inference backend implements (no torch here).

A backend turns preprocessed windows (n, 1, samples) float32 into raw logits; this base
class owns what is common: metadata from the manifest, calibration and thresholds.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from anyecg_edge.fileio import file_sha256


class ModelError(ValueError):
    """A model file or its manifest is missing, malformed or inconsistent."""


@dataclass
class ModelMetadata:
    """What the device needs to run a model: read from the manifest next to it."""

    labs: list[str]
    fs: float = 500.0
    window_s: float = 10.0
    mains_hz: float | None = 50.0
    units: dict[str, str] = field(default_factory=dict)
    # Probability at or above which a lab is flagged abnormal, strictly inside (0, 1); only
    # calibrated labs have one (the others report "abnormal": null, "not calibrated").
    thresholds: dict[str, float] = field(default_factory=dict)
    # Monotone Platt scaling per lab: p = sigmoid(a * logit + b), a > 0. Missing -> identity.
    calibration: dict[str, list[float]] = field(default_factory=dict)
    # Per lab: was it calibrated on enough validation data? Missing (older manifests): a lab
    # is calibrated when it has a threshold.
    calibrated: dict[str, bool] = field(default_factory=dict)
    # Per calibrated lab: [a, b] refits on validation sets resampled by visit; the spread of
    # the probability over them is the reported interval (``uncertainty`` says the level).
    calibration_bootstrap: dict[str, list[list[float]]] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    # How a raw window becomes the model input (documentation for other runtimes; the
    # Python device path runs `anyecg_edge.signal.preprocess` with fs/mains_hz above).
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # Affine int8 quantization of the model's input/output tensors, when the model file
    # has integer I/O (full-int8 LiteRT): {"scale": s, "zero_point": z, "dtype": "int8"};
    # real = s * (q - z). The runtime applies them; None means float32 I/O.
    input_quant: dict[str, Any] | None = None
    output_quant: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def window_samples(self) -> int:
        return int(round(self.fs * self.window_s))

    def is_calibrated(self, lab: str) -> bool:
        """Does the lab have a validated decision rule (a threshold not marked uncalibrated)?
        Only such labs get an abnormal/normal call."""
        return self.calibrated.get(lab, True) and lab in self.thresholds

    @property
    def all_calibrated(self) -> bool:
        return all(self.is_calibrated(lab) for lab in self.labs)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, n_labs) from raw logits: ``sigmoid(a * z + b)`` per
        lab, identity where a lab has no calibration."""
        ab = np.array([self.calibration.get(lab, [1.0, 0.0]) for lab in self.labs], np.float64)
        return sigmoid(np.asarray(logits, dtype=np.float64) * ab[:, 0] + ab[:, 1])

    def threshold_array(self) -> np.ndarray:
        """Per-lab decision thresholds; NaN where the lab is not calibrated (no call)."""
        return np.array(
            [self.thresholds[lab] if self.is_calibrated(lab) else np.nan for lab in self.labs]
        )

    @property
    def interval_level(self) -> float | None:
        level = self.uncertainty.get("level")
        return float(level) if self.calibration_bootstrap and level else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "manifest") -> ModelMetadata:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: expected a JSON object, got {type(data).__name__}")
        labs = data.get("labs")
        if not isinstance(labs, list) or not labs or not all(isinstance(x, str) for x in labs):
            raise ModelError(f"{source}: field 'labs' must be a non-empty list of lab names")
        if not all(x.strip() for x in labs):
            raise ModelError(f"{source}: field 'labs' holds an empty lab name")
        dupes = sorted({x for x in labs if labs.count(x) > 1})
        if dupes:
            # Outputs are keyed by name: a repeated name merged two columns into one entry.
            raise ModelError(f"{source}: field 'labs' names {', '.join(dupes)} more than once")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        # Unknown top-level keys (export provenance, parity summary, ...) and a nested
        # "extra" (from to_dict) both land in `extra`, so a round trip keeps them.
        nested = data.get("extra") or {}
        if not isinstance(nested, dict):
            raise ModelError(f"{source}: field 'extra' must be an object, got {nested!r}")
        kwargs["extra"] = {**nested, **{k: v for k, v in data.items() if k not in known}}
        meta = cls(**kwargs)
        if not (_is_number(meta.fs) and 0 < meta.fs <= 100_000):
            raise ModelError(
                f"{source}: field 'fs' must be a number in (0, 100000] Hz, got {meta.fs!r}"
            )
        if not (_is_number(meta.window_s) and 0 < meta.window_s <= 3600):
            raise ModelError(
                f"{source}: field 'window_s' must be a number in (0, 3600] s, got {meta.window_s!r}"
            )
        if meta.window_samples < 1:
            raise ModelError(f"{source}: fs x window_s gives no sample ({meta.window_samples})")
        if meta.mains_hz is not None and not (_is_number(meta.mains_hz) and meta.mains_hz > 0):
            raise ModelError(
                f"{source}: field 'mains_hz' must be null or a number > 0, got {meta.mains_hz!r}"
            )
        if meta.arch is not None and not isinstance(meta.arch, str):
            raise ModelError(f"{source}: field 'arch' must be a string, got {meta.arch!r}")
        for name in (
            "thresholds",
            "units",
            "calibration",
            "preprocessing",
            "calibrated",
            "calibration_bootstrap",
            "uncertainty",
        ):
            if not isinstance(getattr(meta, name), dict):
                raise ModelError(f"{source}: field {name!r} must be an object")
        for lab, unit in meta.units.items():
            if not isinstance(unit, str):
                raise ModelError(f"{source}: units[{lab!r}] must be a string, got {unit!r}")
        sha = meta.extra.get("model_sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise ModelError(
                f"{source}: field 'model_sha256' must be 64 hex digits (sha256), got {sha!r}"
            )
        for lab, thr in meta.thresholds.items():
            # 0 or 1 would flag every window or none: a degenerate fit, never a decision.
            if not (_is_number(thr) and 0.0 < thr < 1.0):
                raise ModelError(
                    f"{source}: thresholds[{lab!r}] must be strictly between 0 and 1, got {thr!r}"
                )
        for lab, flag in meta.calibrated.items():
            if not isinstance(flag, bool):
                raise ModelError(
                    f"{source}: calibrated[{lab!r}] must be true or false, got {flag!r}"
                )
        for name in ("input_quant", "output_quant"):
            _check_quant(getattr(meta, name), f"{source}: field {name!r}")
        for lab, ab in meta.calibration.items():
            if not (isinstance(ab, list) and len(ab) == 2 and all(_is_number(v) for v in ab)):
                raise ModelError(f"{source}: calibration[{lab!r}] must be [a, b], got {ab!r}")
            if ab[0] <= 0:
                raise ModelError(
                    f"{source}: calibration[{lab!r}] has slope {ab[0]!r}; a slope <= 0 would "
                    "reverse the model's ranking (expected > 0)"
                )
        for lab, fits in meta.calibration_bootstrap.items():
            if not (
                isinstance(fits, list)
                and all(
                    isinstance(ab, list) and len(ab) == 2 and all(_is_number(v) for v in ab)
                    for ab in fits
                )
            ):
                raise ModelError(
                    f"{source}: calibration_bootstrap[{lab!r}] must be a list of [a, b] pairs"
                )
        level = meta.uncertainty.get("level")
        if level is not None and not (_is_number(level) and 0 < level < 1):
            raise ModelError(f"{source}: uncertainty.level must be in (0, 1), got {level!r}")
        return meta

    @classmethod
    def load(cls, path: str | Path) -> ModelMetadata:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: manifest not found") from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError as exc:
            raise ModelError(f"{path}: not UTF-8 text (byte {exc.start}); not a manifest") from None
        except (OSError, RecursionError) as exc:
            raise ModelError(f"{path}: cannot read the manifest ({one_line(exc)})") from None
        return cls.from_dict(data, source=str(path))


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_quant(q: Any, what: str) -> None:
    if q is None:
        return
    if not isinstance(q, dict):
        raise ModelError(f"{what} must be an object with scale/zero_point/dtype, got {q!r}")
    scale, zp, dtype = q.get("scale"), q.get("zero_point"), q.get("dtype")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ModelError(f"{what}: 'scale' must be a positive number, got {scale!r}")
    if dtype not in QUANT_RANGES:
        raise ModelError(f"{what}: 'dtype' must be one of {sorted(QUANT_RANGES)}, got {dtype!r}")
    lo, hi = QUANT_RANGES[dtype]
    if not (isinstance(zp, int) and not isinstance(zp, bool) and lo <= zp <= hi):
        raise ModelError(f"{what}: 'zero_point' must be an integer in [{lo}, {hi}], got {zp!r}")


#: Integer ranges of the quantized I/O dtypes a manifest may name.
QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def quantize(x: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    """float -> integer tensor with the manifest's affine params (round half to even, clip)."""
    lo, hi = QUANT_RANGES[q["dtype"]]
    v = np.rint(np.asarray(x, dtype=np.float32) / np.float32(q["scale"])) + q["zero_point"]
    return np.clip(v, lo, hi).astype(q["dtype"])


def dequantize(v: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    return (np.asarray(v, dtype=np.float32) - np.float32(q["zero_point"])) * np.float32(q["scale"])


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Numerically stable for large |x| (no overflow warnings).
    out = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def sigmoid_nan(x: np.ndarray) -> np.ndarray:
    """:func:`sigmoid` that passes NaN through."""
    out = np.full(np.shape(x), np.nan)
    ok = np.isfinite(x)
    out[ok] = sigmoid(np.asarray(x)[ok])
    return out


class Model(ABC):
    """A loaded model: `predict(windows) -> calibrated probabilities (n, n_labs)`."""

    backend: str = "abstract"
    precision: str = "fp32"

    def __init__(self, metadata: ModelMetadata, source: str) -> None:
        self.metadata = metadata
        self.source = source

    @property
    def labs(self) -> list[str]:
        return self.metadata.labs

    @abstractmethod
    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        """Raw logits (n, n_labs) for preprocessed windows (n, 1, window_samples)."""

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim == 2:
            windows = windows[:, None, :]
        n_samples = self.metadata.window_samples
        if windows.ndim != 3 or windows.shape[1] != 1 or windows.shape[2] != n_samples:
            raise ModelError(
                f"{self.source}: expected windows shaped (n, 1, {n_samples}), got {windows.shape}"
            )
        if not np.isfinite(windows).all():
            raise ModelError(f"{self.source}: input windows contain NaN or inf")
        _check_preprocessed(windows, self.source)
        return windows

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return self.metadata.probabilities(logits)

    def logits(self, windows: np.ndarray) -> np.ndarray:
        """Checked raw logits (n, n_labs) of preprocessed windows (n, 1, window_samples)."""
        logits = self.predict_logits(self._check_windows(windows))
        if logits.shape[-1] != len(self.labs):
            raise ModelError(
                f"{self.source}: model has {logits.shape[-1]} outputs but the manifest lists "
                f"{len(self.labs)} labs"
            )
        return logits

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Calibrated per-lab probabilities (n, n_labs) of *preprocessed* windows.

        ``windows``: (n, 1, window_samples) or (n, window_samples) float32, each already
        through :func:`anyecg_edge.signal.preprocess` (band-pass, baseline, z-score) at the
        manifest's ``fs``. Windows that are plainly not z-scored (e.g. raw mV: a mean far
        from 0 or a standard deviation far from 1) are refused with :class:`ModelError`.
        For raw signals use :func:`anyecg_edge.estimate` (a 1-D mV array) or
        :func:`anyecg_edge.predict.predict_record` (a record), which gate and preprocess.
        """
        return self.calibrate(self.logits(windows)).astype(np.float32)

    def thresholds(self) -> np.ndarray:
        """Per-lab decision thresholds; NaN where the lab is not calibrated (no call)."""
        return self.metadata.threshold_array()

    def bootstrap_probabilities(self, logits: np.ndarray) -> np.ndarray | None:
        """(n, k, n_labs) probabilities under each of the k bootstrap calibrations (NaN for
        labs without one), or None when the manifest has none."""
        meta = self.metadata
        if not meta.calibration_bootstrap:
            return None
        k = max(len(v) for v in meta.calibration_bootstrap.values())
        ab = np.full((k, len(self.labs), 2), np.nan)
        for j, lab in enumerate(self.labs):
            fits = meta.calibration_bootstrap.get(lab)
            if fits and meta.is_calibrated(lab):
                ab[: len(fits), j] = np.asarray(fits, dtype=np.float64)
        z = np.asarray(logits, dtype=np.float64)[:, None, :]
        with np.errstate(invalid="ignore"):
            return sigmoid_nan(z * ab[None, :, :, 0] + ab[None, :, :, 1])


# --- the manifest next to a model file (here, not in runtime/manifest.py, which re-exports
# them: RuntimeModel.load reads it, and manifest.py importing this module and this module
# importing manifest.py was an import cycle).

#: Format tag written into every export manifest.
MANIFEST_FORMAT = "anyecg-edge/manifest/1"
MANIFEST_SUFFIX = ".manifest.json"
PARITY_SUFFIX = ".parity.json"


def manifest_path(model_path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.manifest.json` (the full file name is kept, so an .onnx
    and a .tflite export of the same model can sit side by side)."""
    p = Path(model_path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def parity_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + PARITY_SUFFIX)


def load_manifest(model_path: str | Path) -> ModelMetadata:
    """Read and check the manifest next to an exported model file.

    The manifest records the model file's sha256; a model file replaced after export (a
    different model with the old manifest's labs and thresholds) is refused.
    """
    model_path = Path(model_path)
    mpath = manifest_path(model_path)
    if not mpath.is_file():
        raise ModelError(
            f"{model_path}: its manifest {mpath.name} is missing (every `anyecg-edge export` "
            "writes one next to the model; the device needs it for lab names and thresholds)"
        )
    meta = ModelMetadata.load(mpath)
    expected = meta.extra.get("model_sha256")
    if expected is not None:
        actual = file_sha256(model_path)
        if actual != expected:
            raise ModelError(
                f"{mpath}: model_sha256 {expected[:12]}... does not match {model_path.name} "
                f"({actual[:12]}...): the model file was replaced after export"
            )
    return meta


_RM = TypeVar("_RM", bound="RuntimeModel")


class RuntimeModel(Model):
    """A model file run by a device runtime (ONNX Runtime, LiteRT), its manifest next to it.

    Holds what the backends share: ``load``, the threads and I/O shape checks.
    """

    threads: int | None = None

    @classmethod
    def load(cls: type[_RM], path: str | Path, *, threads: int | None = None) -> _RM:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return cls(path, load_manifest(path), threads=threads)  # type: ignore[call-arg]

    @staticmethod
    def _check_threads(threads: int | None) -> None:
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")

    @staticmethod
    def _check_io_counts(path: str | Path, n_inputs: int, n_outputs: int) -> None:
        if n_inputs != 1 or n_outputs != 1:
            raise ModelError(
                f"{path}: expected 1 input and 1 output, got {n_inputs} and {n_outputs}"
            )

    def _check_io_shapes(self, path: str | Path, in_shape: list, out_shape: list) -> None:
        """Input (batch, 1, window_samples) and output (batch, n_labs), as in the manifest."""
        meta = self.metadata
        if len(in_shape) != 3 or in_shape[1:] != [1, meta.window_samples]:
            raise ModelError(
                f"{path}: input shape {in_shape} does not match the manifest's window "
                f"({meta.window_samples} samples = {meta.fs:g} Hz x {meta.window_s:g} s)"
            )
        if len(out_shape) != 2 or out_shape[1] != len(meta.labs):
            raise ModelError(
                f"{path}: output shape {out_shape} does not match the manifest's "
                f"{len(meta.labs)} labs"
            )


# Preprocessed windows end in a z-score, (x - mean) / (std + 1e-8): each row has mean 0
# and std 1 (0 for a constant row). The bands are wide enough for float16 corpora and
# rounding; raw mV windows (std ~0.1-0.5, offsets) fall outside them.
_PREPROCESSED_MAX_ABS_MEAN = 0.25
_PREPROCESSED_STD = (0.75, 1.25)
_PREPROCESSED_CONSTANT_STD = 0.02


def _check_preprocessed(windows: np.ndarray, source: str) -> None:
    """Refuse windows that are plainly not z-scored (one line naming the first bad row)."""
    x = windows.reshape(len(windows), -1)
    if x.shape[0] == 0:
        return
    mean = x.mean(axis=1, dtype=np.float64)
    std = x.std(axis=1, dtype=np.float64)
    lo, hi = _PREPROCESSED_STD
    ok = (np.abs(mean) <= _PREPROCESSED_MAX_ABS_MEAN) & (
        (std <= _PREPROCESSED_CONSTANT_STD) | ((std >= lo) & (std <= hi))
    )
    if ok.all():
        return
    i = int(np.flatnonzero(~ok)[0])
    raise ModelError(
        f"{source}: window {i} is not preprocessed (mean {mean[i]:.3g}, std {std[i]:.3g}; "
        "expected z-scored windows, mean 0 and std 1); for raw mV signals use "
        "anyecg_edge.estimate(model, signal_mv, fs) or anyecg_edge.predict.predict_record"
    )


def run_in_batches(
    x: np.ndarray, batch: int | None, run: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``run`` over the rows of ``x`` in the batches a graph accepts; outputs in row order.

    ``batch``: the graph's fixed batch size, or None for a dynamic one. ``x`` goes in
    whole when the batch is dynamic or equals ``len(x)``, else in chunks of ``batch``
    rows, the last one padded with zero rows whose outputs are dropped.
    """
    n = len(x)
    if batch is None or batch == n:
        return run(x)
    out = []
    for i in range(0, n, batch):
        chunk = x[i : i + batch]
        if len(chunk) < batch:
            pad = np.zeros((batch - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        out.append(run(chunk)[: n - i])
    return np.concatenate(out)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), or its type."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
