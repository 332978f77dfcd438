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

The stages live in their own modules: `checkpoint` (torch model, BN folding),
`export_windows` (calibration / held-out windows), `int8` (static quantization, method
choice, layer table), `export_report` (manifest, parity report); this module runs them.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyecg_edge.quantization import layer_error, litert_export, onnx_export
from anyecg_edge.quantization.errors import ExportError, ParityError
from anyecg_edge.quantization.export_checkpoint import (
    CHECKPOINT_NAMES,
    fused,
    load_torch,
    resolve_checkpoint,
    torch_logits,
)
from anyecg_edge.quantization.export_report import (
    build_manifest,
    manifest_parity,
    parity_failure_message,
    parity_record,
    preprocessing_spec,
    tool_versions,
)
from anyecg_edge.quantization.export_windows import calibration_warnings, export_windows
from anyecg_edge.quantization.int8 import (
    AUTO_METHODS,
    SELECTION_FRACTION,
    Quantizer,
    StaticInt8,
    calib_methods,
    default_calib_method,
    quantize_static,
    select_calib_method,
)
from anyecg_edge.quantization.parity import check_tolerance, parity_report
from anyecg_edge.quantization.windows import WindowSet

from anyecg_edge.fileio import write_json
from anyecg_edge.progress import report as progress_report
from anyecg_edge.runtime import ModelMetadata, load_model, manifest_path, parity_path

__all__ = [
    "ACTIVATIONS",
    "AUTO_METHODS",
    "CHECKPOINT_NAMES",
    "DEFAULT_CALIB_SIZE",
    "DEFAULT_HELDOUT_SIZE",
    "FORMATS",
    "SELECTION_FRACTION",
    "ExportResult",
    "default_calib_method",
    "export_model",
    "preprocessing_spec",
    "resolve_checkpoint",
    "select_calib_method",
    "tool_versions",
]

# Stages of an export (progress bar): fp32 graph, calibration + quantization, parity.
_STAGES = "export: fp32 graph, int8 calibration, parity"

log = logging.getLogger(__name__)

FORMATS = ("onnx", "tflite", "c-array")
ACTIVATIONS = ("int8", "int16")
DEFAULT_CALIB_SIZE = 512
DEFAULT_HELDOUT_SIZE = 2000


@dataclass
class ExportResult:
    path: Path
    manifest: Path
    parity: Path
    report: dict[str, Any]
    passed: bool
    extra_files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """The checked options: what to write and at which precision."""

    fmt: str
    out: Path
    model_out: Path  # the .tflite beside a c-array's .cc
    int8: bool
    dynamic: bool
    static: bool
    precision: str
    activations: str


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
    plan = _plan(fmt, out, int8, dynamic, calib_method, calib_size, heldout_size, activations)
    plan.out.parent.mkdir(parents=True, exist_ok=True)

    ckpt = resolve_checkpoint(model)
    module, meta, source = load_torch(ckpt)
    calib_ws, held_ws = export_windows(
        meta, list(calib or []), list(heldout or []), calib_size, heldout_size, plan.static
    )
    folded_module, folded = fused(module, held_ws.x)
    tol = dict(DEFAULT_TOLERANCE[plan.precision]) if tolerance is None else dict(tolerance)
    calib_notes = calibration_warnings(calib_ws) if (calib_ws is not None and plan.static) else []
    for note in calib_notes:
        log.warning("%s", note)

    built = _model_file(
        plan, module, folded_module, meta, calib_ws, held_ws, tol,
        calib_method=calib_method, quantize_head=quantize_head, reduce_range=reduce_range,
        layer_windows=layer_windows,
    )  # fmt: skip
    model_out = plan.model_out
    tflm = _tflm_check(model_out, calib_ws) if plan.fmt == "c-array" else None
    quant = built.quant
    if quant is not None and calib_ws is not None and quant.get("scheme") == "static":
        quant["calibration_windows"] = calib_ws.stats()
        quant["calibration_sources"] = calib_ws.sources
    manifest = build_manifest(
        meta, model_out, fmt=plan.fmt, precision=plan.precision, quant=quant,
        io_quant=built.io_quant, folded=folded, tflm=tflm, source=source,
    )  # fmt: skip
    mpath = manifest_path(model_out)
    write_json(mpath, manifest)

    # Parity through the device path: the runtime loads the file and its manifest.
    device_model = load_model(model_out, threads=1)
    ref = torch_logits(module, held_ws.x)
    test = device_model.predict_logits(held_ws.x[:, None, :])
    report = parity_report(ref, test, meta, labels=held_ws.labels, label_labs=held_ws.label_labs)
    failures = check_tolerance(report, tol)
    progress_report(_STAGES, 3, 3)
    parity = parity_record(
        manifest, model_out, ckpt, fmt=plan.fmt, backend=device_model.backend, report=report,
        failures=failures, tol=tol, held_ws=held_ws, calib_ws=calib_ws,
        calibration=built.calibration, calib_notes=calib_notes, layers=built.layers,
        allow_degraded=allow_degraded, seconds=time.perf_counter() - t0,
    )  # fmt: skip
    ppath = parity_path(model_out)
    write_json(ppath, parity)
    manifest["parity"] = manifest_parity(ppath, report, parity["passed"], built.layers)
    write_json(mpath, manifest)
    extra_files = _finish(plan, mpath, ppath, report, failures, tflm, allow_degraded)
    return ExportResult(model_out, mpath, ppath, parity, parity["passed"], extra_files)


def _plan(
    fmt: str,
    out: str | Path,
    int8: bool,
    dynamic: bool,
    calib_method: str | None,
    calib_size: int,
    heldout_size: int,
    activations: str,
) -> _Plan:
    """Refuse option combinations before any work (one line each)."""
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
        methods = calib_methods(fmt)
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
    precision = ("int16x8" if activations == "int16" else "int8") if int8 else "fp32"
    return _Plan(fmt, out, model_out, int8, dynamic, static, precision, activations)


@dataclass
class _Built:
    quant: dict[str, Any] | None = None
    io_quant: dict[str, Any] = field(
        default_factory=lambda: {"input_quant": None, "output_quant": None}
    )
    calibration: dict[str, Any] | None = None
    layers: dict[str, Any] | None = None


def _model_file(
    plan: _Plan,
    module: Any,
    folded_module: Any,
    meta: ModelMetadata,
    calib_ws: WindowSet | None,
    held_ws: WindowSet,
    tol: dict[str, float],
    *,
    calib_method: str | None,
    quantize_head: bool,
    reduce_range: bool,
    layer_windows: int,
) -> _Built:
    """The fp32 graph, then fp32 / dynamic / static int8, copied to ``plan.model_out``."""
    built = _Built()
    with tempfile.TemporaryDirectory(prefix="anyecg-export-") as tmp:
        tmp_dir = Path(tmp)
        suffix = ".onnx" if plan.fmt == "onnx" else ".tflite"
        final = tmp_dir / f"final{suffix}"
        exporter = onnx_export if plan.fmt == "onnx" else litert_export
        progress_report(_STAGES, 0, 3)  # a bar with ETA when the CLI opened one
        raw = exporter.export_fp32(folded_module, tmp_dir / f"fp32{suffix}", meta.window_samples)
        progress_report(_STAGES, 1, 3)
        if not plan.int8:
            if plan.fmt == "onnx":
                onnx_export.ort_optimize(raw, final)
            else:
                shutil.copyfile(raw, final)
        elif plan.dynamic:
            built.quant = exporter.quantize_dynamic_int8(raw, final)
        else:
            assert calib_ws is not None
            quantize = Quantizer(
                plan.fmt,
                raw,
                quantize_head=quantize_head,
                reduce_range=reduce_range,
                activation_bits=16 if plan.activations == "int16" else 8,
            )
            static: StaticInt8 = quantize_static(
                quantize, final, tmp_dir, module=module, fused=folded_module, meta=meta,
                calib_ws=calib_ws, held_ws=held_ws, precision=plan.precision, tol=tol,
                calib_method=calib_method, activations=plan.activations,
                layer_windows=layer_windows,
            )  # fmt: skip
            built = _Built(static.quant, static.io_quant, static.calibration, static.layers)
        shutil.copyfile(final, plan.model_out)
        progress_report(_STAGES, 2, 3)
    return built


def _tflm_check(model_out: Path, calib_ws: WindowSet | None) -> dict[str, Any]:
    """The c-array's analysis, and a run in TFLite Micro itself: measured arena, op
    support, parity vs LiteRT."""
    from anyecg_edge.quantization.c_array import analyze
    from anyecg_edge.quantization.tflm import check_tflm

    tflm = analyze(model_out)
    assert calib_ws is not None
    tflm["check"] = check_tflm(model_out, calib_ws.x)
    if tflm["check"]["ran"]:
        tflm["arena_bytes"] = tflm["check"]["arena_bytes"]
    else:
        log.warning("TFLite Micro check skipped: %s", tflm["check"]["reason"])
    return tflm


def _finish(
    plan: _Plan,
    mpath: Path,
    ppath: Path,
    report: dict[str, Any],
    failures: list[str],
    tflm: dict[str, Any] | None,
    allow_degraded: bool,
) -> list[Path]:
    """Write the C array; outside tolerance remove the model (or keep it, degraded)."""
    model_out = plan.model_out
    extra_files: list[Path] = []
    if plan.fmt == "c-array":
        from anyecg_edge.quantization.c_array import write_c_array

        extra_files = write_c_array(model_out, plan.out, tflm)  # the analysis made above
    if failures and not allow_degraded:
        for p in (model_out, mpath, *extra_files):
            p.unlink(missing_ok=True)
        raise ParityError(
            parity_failure_message(
                model_out, ppath, report, failures, fmt=plan.fmt, precision=plan.precision
            )
        )
    if failures:
        log.warning(
            "%s: outside parity tolerance (%s); kept (--allow-degraded)",
            model_out,
            "; ".join(failures),
        )
    return extra_files


def _quiet_toolchain_logs() -> None:
    # The exporters log every pass at INFO; the CLI runs at INFO by default.
    for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export", "absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)
