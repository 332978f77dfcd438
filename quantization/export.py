"""`export_model`: torch checkpoint -> ONNX / LiteRT / C array, manifest, parity report.

Steps: load the checkpoint (our format, or a training output folder holding
``model.pt``) -> fold BatchNorm into the convs (checked against the unfused model) ->
export fp32 -> optionally quantize to int8 with real calibration windows -> write the
manifest -> load the file through the *device* runtime (`anyecg_edge.runtime.load_model`,
manifest and int8 I/O params included) and compare it with the torch fp32 model on
held-out windows -> write ``<out>.parity.json``. Above the tolerance the model file and
its manifest are removed (the parity report stays) and `ParityError` is raised, unless
``allow_degraded``.

The parity report also holds the calibration actually used (method, how it was chosen,
windows; with ``calib_method="auto"`` every method tried and its parity on held-out
calibration records) and, for static quantization, the per-layer quantization-error
table (`layer_error`: which quantized activation loses most, worst first).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization import layer_error, litert_export, onnx_export
from anyecg_edge.quantization.errors import ExportError, ParityError, WindowsError
from anyecg_edge.quantization.parity import check_tolerance, parity_report, unchecked_limits
from anyecg_edge.quantization.windows import (
    WindowSet,
    is_corpus,
    load_windows,
    split_heldout,
    subsample,
)

from anyecg_edge.fileio import write_json
from anyecg_edge.progress import report as progress_report
from anyecg_edge.runtime import (
    MANIFEST_FORMAT,
    ModelMetadata,
    file_sha256,
    load_model,
    manifest_path,
    parity_path,
)

# Stages of an export (progress bar): fp32 graph, calibration + quantization, parity.
_STAGES = "export: fp32 graph, int8 calibration, parity"

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite", "c-array")
ACTIVATIONS = ("int8", "int16")
CHECKPOINT_NAMES = ("model.pt", "model.pth")
DEFAULT_CALIB_SIZE = 512
DEFAULT_HELDOUT_SIZE = 2000
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
# BN folding is exact algebra; this bounds float32 round-off relative to the logit scale.
_FUSE_RTOL = 1e-4


@dataclass
class ExportResult:
    path: Path
    manifest: Path
    parity: Path
    report: dict[str, Any]
    passed: bool
    extra_files: list[Path] = field(default_factory=list)


def resolve_checkpoint(path: str | Path) -> Path:
    """A .pt/.pth file, or a folder (training output) holding model.pt."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise ExportError(f"{path}: folder has no {' or '.join(CHECKPOINT_NAMES)} checkpoint")
    if not path.is_file():
        raise ExportError(f"{path}: model checkpoint not found")
    if path.suffix.lower() not in {".pt", ".pth"}:
        raise ExportError(
            f"{path}: expected a torch checkpoint (.pt/.pth) or a training output folder"
        )
    return path


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


def _load_torch(ckpt: Path) -> tuple[Any, ModelMetadata, dict[str, Any]]:
    from anyecg_edge.training.torch_model import load_model_checkpoint_details

    module, meta, fields = load_model_checkpoint_details(ckpt)  # no second read for the format
    info: dict[str, Any] = {"checkpoint": str(ckpt), "sha256": file_sha256(ckpt), "arch": meta.arch}
    if "model_kwargs" in fields:
        info["model_kwargs"] = fields["model_kwargs"]
    info["checkpoint_format"] = fields["format"]
    return module.eval(), meta, info


def _fused(module: Any, x: np.ndarray) -> tuple[Any, bool]:
    """BN folded into the convs, checked on real windows against the unfused model."""
    import torch
    from anyecg_edge.training.models import fuse_bn

    fused = fuse_bn(module)
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
    n_left = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x[:16, None, :]))
        a, b = module(t).numpy(), fused(t).numpy()
    scale = max(1.0, float(np.abs(a).max()))
    if float(np.abs(a - b).max()) > _FUSE_RTOL * scale:
        raise ExportError(
            f"BN folding changed the logits by {float(np.abs(a - b).max()):.3g} "
            f"(limit {_FUSE_RTOL * scale:.3g}); refusing to export"
        )
    return fused, n_left < n_bn


def _torch_logits(module: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(
                module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch, None, :]))).numpy()
            )
    return np.concatenate(out).astype(np.float32)


def _windows(
    meta: ModelMetadata,
    calib: list[str],
    heldout: list[str],
    calib_size: int,
    heldout_size: int,
    need_calib: bool,
) -> tuple[WindowSet | None, WindowSet]:
    if need_calib and not calib:
        raise ExportError("--int8 (static) needs --calib: records, a corpus or a .npy of windows")
    if not calib and not heldout:
        raise ExportError(
            "parity needs real windows: pass --calib (records, a corpus or a .npy) and/or --heldout"
        )
    calib_ws = held_ws = None
    if calib:
        corpus = all(is_corpus(Path(c)) for c in calib)
        # Load the whole pool first: the held-out split is by record, before subsampling.
        pool = load_windows(
            calib, meta, role="calib", max_windows=None if not corpus else calib_size
        )
        if heldout:
            calib_ws = pool
        elif corpus:
            calib_ws = pool
            held_ws = load_windows(calib, meta, role="heldout", max_windows=heldout_size)
        else:
            calib_ws, held_ws = split_heldout(pool)
        calib_ws = subsample(calib_ws, calib_size)
    if heldout:
        held_ws = load_windows(heldout, meta, role="heldout", max_windows=heldout_size)
    assert held_ws is not None
    held_ws = subsample(held_ws, heldout_size)
    if calib_ws is not None:
        overlap = set(calib_ws.groups) & set(held_ws.groups)
        if overlap:
            log.warning(
                "%d record(s) give both calibration and held-out windows (e.g. %s): "
                "parity is optimistic",
                len(overlap),
                sorted(overlap)[0],
            )
    return calib_ws, held_ws


def _check_calibration_set(ws: WindowSet) -> list[str]:
    """Warnings for a calibration set that does not look like preprocessed windows."""
    s = ws.stats()
    notes = []
    if abs(s["mean"]) > 0.2 or not 0.5 <= s["std"] <= 1.5:
        notes.append(
            f"calibration windows have mean {s['mean']:g} and std {s['std']:g}; preprocessed "
            "windows are z-scores (mean ~0, std ~1): are they raw or broken?"
        )
    flat = float((ws.x.std(axis=1) < 1e-6).mean())
    if flat > 0.1:
        notes.append(f"{flat:.0%} of the calibration windows are constant")
    return notes


def export_model(
    model: str | Path,
    *,
    fmt: str,
    out: str | Path,
    int8: bool = False,
    dynamic: bool = False,
    calib: list[str] | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    calib_method: str | None = None,
    heldout: list[str] | None = None,
    heldout_size: int = DEFAULT_HELDOUT_SIZE,
    tolerance: dict[str, float] | None = None,
    allow_degraded: bool = False,
    quantize_head: bool = False,
    reduce_range: bool = False,
    activations: str = "int8",
    layer_windows: int = layer_error.DEFAULT_WINDOWS,
) -> ExportResult:
    """Export one checkpoint; see the module docstring. ``tolerance``: limits by key
    (see `parity.DEFAULT_TOLERANCE`); None takes the precision's defaults.
    ``calib_method``: None takes `default_calib_method`; "auto" measures every method of
    the format (`select_calib_method`). ``activations``: "int16" makes a LiteRT 16x8 export
    (int16 activations, int8 weights). ``layer_windows``: parity windows for the per-layer
    error table (0: no table)."""
    from anyecg_edge.quantization.parity import DEFAULT_TOLERANCE

    t0 = time.perf_counter()
    _quiet_toolchain_logs()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if activations not in ACTIVATIONS:
        raise ExportError(
            f"--activations {activations!r}: expected one of {', '.join(ACTIVATIONS)}"
        )
    if fmt == "c-array":
        if dynamic:
            raise ExportError("--format c-array needs full int8 (static); drop --dynamic")
        int8 = True
    if activations == "int16" and (fmt != "tflite" or not int8 or dynamic):
        raise ExportError(
            "--activations int16 (16x8: int16 activations, int8 weights) needs --format tflite "
            "--int8 (static); ONNX and the TFLite-Micro C array stay int8"
        )
    if dynamic:
        int8 = True
    static = int8 and not dynamic
    if static:
        methods = _calib_methods(fmt)
        if calib_method is not None and calib_method not in (*methods, "auto"):
            raise ExportError(
                f"--calib-method {calib_method!r} is not available for {fmt}; expected one of "
                f"{', '.join((*methods, 'auto'))}"
            )
    if calib_size < 1 or heldout_size < 1:
        raise ExportError("--calib-size and --heldout-size must be >= 1")
    out = Path(out)
    model_out = out.with_suffix(".tflite") if fmt == "c-array" else out
    suffixes = {"onnx": (".onnx",), "tflite": (".tflite",), "c-array": (".cc", ".c")}[fmt]
    if out.suffix.lower() not in suffixes:
        raise ExportError(f"--out {out}: a {fmt} export must end in {' or '.join(suffixes)}")
    out.parent.mkdir(parents=True, exist_ok=True)

    ckpt = resolve_checkpoint(model)
    module, meta, source = _load_torch(ckpt)
    calib_ws, held_ws = _windows(
        meta, list(calib or []), list(heldout or []), calib_size, heldout_size, static
    )
    fused, folded = _fused(module, held_ws.x)
    precision = ("int16x8" if activations == "int16" else "int8") if int8 else "fp32"
    tol = dict(DEFAULT_TOLERANCE[precision]) if tolerance is None else dict(tolerance)
    calib_notes = _check_calibration_set(calib_ws) if (calib_ws is not None and static) else []
    for note in calib_notes:
        log.warning("%s", note)

    runtime = "onnxruntime" if fmt == "onnx" else "litert"
    calibration: dict[str, Any] | None = None
    layers: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="anyecg-export-") as tmp:
        tmp_dir = Path(tmp)
        quant: dict[str, Any] | None = None
        io_quant: dict[str, Any] = {"input_quant": None, "output_quant": None}
        suffix = ".onnx" if fmt == "onnx" else ".tflite"
        final = tmp_dir / f"final{suffix}"
        exporter = onnx_export if fmt == "onnx" else litert_export
        progress_report(_STAGES, 0, 3)  # a bar with ETA when the CLI opened one
        raw = exporter.export_fp32(fused, tmp_dir / f"fp32{suffix}", meta.window_samples)
        progress_report(_STAGES, 1, 3)
        if not int8:
            if fmt == "onnx":
                onnx_export.ort_optimize(raw, final)
            else:
                shutil.copyfile(raw, final)
        elif dynamic:
            quant = exporter.quantize_dynamic_int8(raw, final)
        else:
            assert calib_ws is not None
            quantize = _Quantizer(
                fmt,
                raw,
                quantize_head=quantize_head,
                reduce_range=reduce_range,
                activation_bits=16 if activations == "int16" else 8,
            )
            if calib_method == "auto":
                calibration = select_calib_method(
                    quantize, module, meta, calib_ws, precision, tol, tmp_dir
                )
                method, chosen_by = calibration["method"], "auto"
            else:
                method = calib_method or default_calib_method(fmt, activations)
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
            if layer_windows > 0:
                try:
                    layers = _layer_table(fmt, tmp_dir, raw, final, held_ws.x, fused, layer_windows)
                except ExportError as exc:  # a diagnostic: never fails the export itself
                    log.warning("per-layer error table skipped: %s", exc)
                    layers = {"error": str(exc)}
        shutil.copyfile(final, model_out)
        progress_report(_STAGES, 2, 3)

    tflm: dict[str, Any] | None = None
    if fmt == "c-array":
        from anyecg_edge.quantization.c_array import analyze
        from anyecg_edge.quantization.tflm import check_tflm

        tflm = analyze(model_out)
        # Run it in TFLite Micro itself: measured arena, op support, parity vs LiteRT.
        assert calib_ws is not None
        tflm["check"] = check_tflm(model_out, calib_ws.x)
        if tflm["check"]["ran"]:
            tflm["arena_bytes"] = tflm["check"]["arena_bytes"]
        else:
            log.warning("TFLite Micro check skipped: %s", tflm["check"]["reason"])
    if quant is not None and calib_ws is not None and quant.get("scheme") == "static":
        quant["calibration_windows"] = calib_ws.stats()
        quant["calibration_sources"] = calib_ws.sources
    manifest = {
        "format": MANIFEST_FORMAT,
        **{k: v for k, v in meta.to_dict().items() if k not in {"extra"}},
        **meta.extra,
        **io_quant,
        "preprocessing": preprocessing_spec(meta),
        "model_file": model_out.name,
        "model_sha256": file_sha256(model_out),
        "model_bytes": model_out.stat().st_size,
        "runtime": runtime,
        "precision": precision,
        "input": {"name": "x", "shape": ["batch", 1, meta.window_samples], "dtype": "float32"},
        "bn_folded": folded,
        "quantization": quant,
        **({"tflm": tflm} if tflm is not None else {}),
        "source": source,
        "tools": tool_versions(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mpath = manifest_path(model_out)
    write_json(mpath, manifest)

    # Parity through the device path: the runtime loads the file and its manifest.
    device_model = load_model(model_out, threads=1)
    ref = _torch_logits(module, held_ws.x)
    test = device_model.predict_logits(held_ws.x[:, None, :])
    report = parity_report(ref, test, meta, labels=held_ws.labels, label_labs=held_ws.label_labs)
    failures = check_tolerance(report, tol)
    progress_report(_STAGES, 3, 3)
    passed = not failures
    parity = {
        "model": str(model_out),
        "model_sha256": manifest["model_sha256"],
        "model_bytes": manifest["model_bytes"],
        "format": fmt,
        "runtime": device_model.backend,
        "precision": precision,
        "quantization": quant,
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
        "passed": passed,
        "allow_degraded": allow_degraded,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    ppath = parity_path(model_out)
    write_json(ppath, parity)
    manifest["parity"] = {
        "file": ppath.name,
        "passed": passed,
        "n_windows": report["n_windows"],
        "agreement": report["calls"]["agreement"],
        "n_labs_called": report["calls"]["n_labs_called"],
        "mean_auroc_delta": report["auroc"]["mean_delta"],
        "max_abs_logit_error": report["logits"]["max_abs_error"],
        "worst_layer": None if layers is None else layers["worst"],
    }
    write_json(mpath, manifest)

    extra_files: list[Path] = []
    if fmt == "c-array":
        from anyecg_edge.quantization.c_array import write_c_array

        extra_files = write_c_array(model_out, out, tflm)  # the analysis made above
    if failures and not allow_degraded:
        for p in (model_out, mpath, *extra_files):
            p.unlink(missing_ok=True)
        raise ParityError(
            f"{model_out}: parity vs the torch fp32 model failed on {report['n_windows']} "
            f"held-out windows: {'; '.join(failures)}. Removed the model; see {ppath} "
            "(--allow-degraded keeps it"
            + (
                "; --activations int16 quantizes activations to 16 bits where int8 cannot hold)"
                if fmt == "tflite" and precision == "int8"
                else ")"
            )
        )
    if failures:
        log.warning(
            "%s: outside parity tolerance (%s); kept (--allow-degraded)",
            model_out,
            "; ".join(failures),
        )
    return ExportResult(model_out, mpath, ppath, parity, passed, extra_files)


def default_calib_method(fmt: str, activations: str = "int8") -> str:
    """The measured default (quantization/README.md): percentile for int8 in both formats,
    minmax for LiteRT 16x8 (int16 has resolution to spare; clipping is what hurts)."""
    return "minmax" if activations == "int16" else "percentile"


def _calib_methods(fmt: str) -> tuple[str, ...]:
    return onnx_export.CALIB_METHODS if fmt == "onnx" else litert_export.CALIB_METHODS


class _Quantizer:
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
        return _calib_methods(self.fmt)

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


def _runtime_model(path: Path, meta: ModelMetadata, quant: dict[str, Any], precision: str):
    """A quantized candidate through the device runtime's model class (no manifest file)."""
    from dataclasses import replace

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


# Share of the calibration records that `--calib-method auto` holds out to compare methods.
SELECTION_FRACTION = 0.25
# The methods `auto` compares. ORT's entropy is left out: on student-s it took 54 s (13x
# percentile, > 2x the whole export) and kept 76 % call agreement on the selection windows
# (minmax 98.5 %, percentile 99.0 %); `--calib-method entropy` still runs it.
AUTO_METHODS = ("minmax", "percentile")


def select_calib_method(
    quantize: _Quantizer,
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
    ref = _torch_logits(module, sel_ws.x)
    trials = []
    for method in AUTO_METHODS:
        t = time.perf_counter()
        dst = tmp_dir / f"candidate-{method}{quantize.suffix}"
        q = quantize(fit_ws.x, dst, method)
        test = _runtime_model(dst, meta, q, precision).predict_logits(sel_ws.x[:, None, :])
        rep = parity_report(ref, test, meta)
        trials.append(
            {
                "method": method,
                "failures": check_tolerance(rep, tol),
                "agreement": rep["calls"]["agreement"],
                "n_disagree": rep["calls"]["n_disagree"],
                "mean_abs_logit_error": rep["logits"]["mean_abs_error"],
                "rel_mean_abs_logit_error": rep["logits"]["rel_mean_abs_error"],
                "max_abs_logit_error": rep["logits"]["max_abs_error"],
                "mean_auroc_delta": rep["auroc"]["mean_delta"],
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


def _layer_table(
    fmt: str,
    tmp_dir: Path,
    raw: Path,
    final: Path,
    x: np.ndarray,
    fused: Any,
    n_windows: int,
) -> dict[str, Any]:
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


def _quiet_toolchain_logs() -> None:
    # The exporters log every pass at INFO; the CLI runs at INFO by default.
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export", "absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)
