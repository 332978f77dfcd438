"""`anyecg-edge export`: ONNX / LiteRT / C-array export, int8 with calibration, parity report.

Exit codes: 0 exported within tolerance (or --allow-degraded), 1 bad input or a tool
failed, 4 parity vs the torch fp32 model outside tolerance (model removed, report kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from anyecg_edge.commands._types import (
    OutputPath,
    count,
    emit_json,
    human_echo,
    json_option,
    json_to_stdout,
    refuse_clobber,
)

PARITY_EXIT = 4


@click.command("export")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Torch checkpoint (.pt) or a training output folder holding model.pt.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "tflite", "c-array"]),
    required=True,
    help="onnx (ONNX Runtime), tflite (LiteRT) or c-array (int8 .tflite as a TFLite-Micro C array).",
)
@click.option("--int8", is_flag=True, help="Quantize to int8 (static, calibrated; see --dynamic).")
@click.option(
    "--dynamic", is_flag=True, help="Dynamic int8 (weights only, no calibration data needed)."
)
@click.option(
    "--calib",
    multiple=True,
    help="Calibration windows: a corpus folder, record folder/files (WFDB, EDF) or a .npy of "
    "preprocessed windows. Repeatable. Also the held-out source when --heldout is absent "
    "(records are split 80/20 by record; a corpus uses its val split).",
)
@click.option(
    "--calib-size", type=count(1), default=512, show_default=True, help="Calibration windows used."
)
@click.option(
    "--calib-method",
    type=click.Choice(["minmax", "percentile", "entropy", "auto"]),
    default=None,
    help="Activation range estimate (entropy: ONNX only). Default: percentile for int8, "
    "minmax for --activations int16 (measured, quantization/README.md). auto: quantize with "
    "minmax and percentile on 75% of the calibration records, keep the one with the best "
    "parity on the other 25% (all numbers in the parity report).",
)
@click.option(
    "--activations",
    type=click.Choice(["int8", "int16"]),
    default="int8",
    show_default=True,
    help="Activation precision of a static --int8 export. int16: LiteRT 16x8 (int16 "
    "activations and I/O, int8 weights; --format tflite only), for models int8 cannot hold.",
)
@click.option(
    "--heldout", multiple=True, help="Held-out windows for parity (same kinds as --calib)."
)
@click.option(
    "--heldout-size", type=count(1), default=2000, show_default=True, help="Held-out windows used."
)
@click.option(
    "--out",
    "out",
    type=OutputPath(),
    required=True,
    help="Output file (.onnx, .tflite, or .cc for c-array). Writes <out>.manifest.json and "
    "<out>.parity.json next to it.",
)
@click.option(
    "--tolerance",
    multiple=True,
    help="Parity limits KEY=VALUE[,KEY=VALUE] overriding the defaults, e.g. "
    "mean_auroc_delta=0.002,agreement=0.97.",
)
@click.option(
    "--allow-degraded", is_flag=True, help="Keep the export (exit 0) even outside tolerance."
)
@click.option(
    "--quantize-head",
    is_flag=True,
    help="int8: quantize the final Linear (head) too; default keeps it float32 (ONNX, LiteRT; the c-array is always full int8).",
)
@click.option(
    "--reduce-range", is_flag=True, help="ONNX int8: 7-bit weights (old AVX2 CPUs without VNNI)."
)
@json_option("the export and parity summary")
def export(
    model_path: Path,
    fmt: str,
    int8: bool,
    dynamic: bool,
    calib: tuple[str, ...],
    calib_size: int,
    calib_method: str | None,
    activations: str,
    heldout: tuple[str, ...],
    heldout_size: int,
    out: Path,
    tolerance: tuple[str, ...],
    allow_degraded: bool,
    quantize_head: bool,
    reduce_range: bool,
    json_out: Path | None,
) -> None:
    """Export a model to ONNX / LiteRT (fp32 or int8) with a manifest and a parity report."""
    try:
        from anyecg_edge.quantization.errors import ParityError
        from anyecg_edge.quantization.export import export_model
        from anyecg_edge.quantization.parity import parse_tolerance
    except ImportError as exc:
        raise click.ClickException(
            f"export needs the export toolchain ({exc.name} missing): "
            'pip install "anyecg-edge[export]"'
        ) from None
    precision = "int8" if (int8 or dynamic or fmt == "c-array") else "fp32"
    if precision == "int8" and activations == "int16":
        precision = "int16x8"
    tol = parse_tolerance(list(tolerance), precision)
    _check_outputs(out, [model_path, model_path / "model.pt", *calib, *heldout])
    if json_out is not None:
        refuse_clobber(
            json_out, [out, model_path, model_path / "model.pt", *calib, *heldout], "--json"
        )
    from anyecg_edge.progress import progress_enabled, progress_session

    try:
        with progress_session(progress_enabled()):
            result = export_model(
                model_path,
                fmt=fmt,
                out=out,
                int8=int8,
                dynamic=dynamic,
                calib=list(calib),
                calib_size=calib_size,
                calib_method=calib_method,
                heldout=list(heldout),
                heldout_size=heldout_size,
                tolerance=tol,
                allow_degraded=allow_degraded,
                quantize_head=quantize_head,
                reduce_range=reduce_range,
                activations=activations,
            )
    except ParityError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(PARITY_EXIT)
    r = result.report
    summary = {
        "model": str(result.path),
        "bytes": r["model_bytes"],
        "manifest": str(result.manifest),
        "parity": str(result.parity),
        "passed": result.passed,
        "precision": r["precision"],
        "n_windows": r["n_windows"],
        "max_abs_logit_error": r["logits"]["max_abs_error"],
        "mean_abs_logit_error": r["logits"]["mean_abs_error"],
        "agreement": r["calls"]["agreement"],
        "mean_auroc_delta": r["auroc"]["mean_delta"],
        "auroc_reference": r["auroc"]["reference"],
        "n_labs_called": r["calls"]["n_labs_called"],
        "calibration_method": (r.get("calibration") or {}).get("method"),
        "worst_layers": [
            {k: row[k] for k in ("layer", "op", "sqnr_db", "cumulative_sqnr_db")}
            for row in _worst(r)
        ],
        "extra_files": [str(p) for p in result.extra_files],
    }
    tflm = json.loads(result.manifest.read_text()).get("tflm") if fmt == "c-array" else None
    if tflm is not None:
        summary["tflm"] = tflm.get("check")
    emit_json(summary, json_out)
    if json_to_stdout(json_out):
        return
    echo = human_echo(json_out)
    status = "PASSED" if result.passed else "OUTSIDE TOLERANCE (kept: --allow-degraded)"
    echo(
        f"{result.path} ({r['model_bytes'] / 1024:.1f} KiB, {r['precision']}, {r['runtime']}): "
        f"parity {status} on {r['n_windows']} held-out windows: "
        f"max|dlogit| {r['logits']['max_abs_error']:.4g}, mean {r['logits']['mean_abs_error']:.4g}, "
        f"call agreement {_pct(r['calls']['agreement'])} "
        f"({r['calls']['n_labs_called']} of {r['n_labs']} labs have a threshold), "
        f"mean AUROC delta {r['auroc']['mean_delta']} (vs {r['auroc']['reference']})"
    )
    cal = r.get("calibration")
    if cal:
        line = (
            f"  calibration: {cal['method']} ({cal['chosen_by']}) on {cal['n_windows']} windows "
            f"of {cal['n_records']} records"
        )
        if "selection" in cal:
            tried = ", ".join(
                f"{t['method']} {_pct(t['agreement'])} agreement, "
                f"mean|dlogit| {t['mean_abs_logit_error']:.3g}"
                for t in cal["selection"]["trials"]
            )
            line += f"; tried on {cal['selection']['selection_windows']} windows: {tried}"
        echo(line)
    rows = _worst(r)
    if rows:
        echo(
            f"  worst quantized layers ({r['layer_errors']['n_windows']} windows; "
            "SQNR dB: own quantization / vs fp32 model; share clipped):"
        )
        width = max(len(row["layer"]) for row in rows)
        for row in rows:
            echo(
                f"    {row['layer']:<{width}}  {row['op']:<17} {row['sqnr_db']:6.1f} "
                f"{row['cumulative_sqnr_db']:6.1f}  {row['clipped_fraction']:.3%}"
            )
    if tflm is not None and tflm.get("check"):
        from anyecg_edge.quantization.tflm import summary_line

        echo(f"  {summary_line(tflm['check'])}")
    for path in (result.manifest, result.parity, *result.extra_files, json_out):
        if path is not None:
            echo(f"  wrote {path}")


def _check_outputs(out: Path, inputs: list[Path | str]) -> None:
    """Before any work (an export takes seconds to minutes): the model file and the
    manifest / parity report written beside it must be writable files, none an input."""
    from anyecg_edge.runtime.manifest import manifest_path, parity_path

    for path in (out, manifest_path(out), parity_path(out)):
        refuse_clobber(path, inputs, "--out")
        if path.is_dir():
            raise click.BadParameter(
                f"{path} is a folder; the export writes a file there", param_hint="'--out'"
            )


def _worst(report: dict, n: int = 5) -> list[dict]:
    table = report.get("layer_errors")
    return list(table["layers"][:n]) if table else []


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4%}"


@click.command("tflm")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="An int8 .tflite (with its .manifest.json), e.g. from `export --format c-array`.",
)
@click.option(
    "--calib",
    multiple=True,
    required=True,
    help="Windows to run: a corpus folder, record folder/files or a .npy of preprocessed "
    "windows (as for export). Repeatable.",
)
@click.option(
    "--windows", "n_windows", type=click.IntRange(min=1), default=64, show_default=True,
    help="Windows compared against ai-edge-litert.",
)  # fmt: skip
@json_option("the result")
def tflm(model_path: Path, calib: tuple[str, ...], n_windows: int, json_out: Path | None) -> None:
    """Run an int8 .tflite in TensorFlow Lite Micro: smallest arena, ops, parity vs LiteRT.

    Exit codes: 0 it ran (or TFLite Micro is not available here: the reason is printed),
    1 it does not run in TFLite Micro (unsupported operator, allocation failure) or bad input.
    """
    try:
        from anyecg_edge.quantization.errors import ExportError
        from anyecg_edge.quantization.tflm import check_tflm, summary_line
        from anyecg_edge.quantization.windows import load_windows
    except ImportError as exc:
        raise click.ClickException(
            f"tflm needs the export toolchain ({exc.name} missing): "
            'pip install "anyecg-edge[export]"'
        ) from None
    from anyecg_edge.runtime import ModelError
    from anyecg_edge.runtime.manifest import load_manifest

    with open(model_path, "rb") as fh:
        head = fh.read(8)
    if head[4:8] != b"TFL3":  # the FlatBuffer file identifier of every .tflite
        raise ModelError(
            f"{model_path}: not a .tflite model (no TFL3 FlatBuffer identifier); tflm runs "
            "an int8 .tflite from `export --format tflite --int8` or `--format c-array`"
        )
    try:
        meta = load_manifest(model_path)
        ws = load_windows(list(calib), meta, role="calib", max_windows=n_windows)
        res = check_tflm(model_path, ws.x, max_windows=n_windows)
    except (ExportError, ModelError) as exc:
        raise click.ClickException(str(exc)) from None
    emit_json(res, json_out)
    if not json_to_stdout(json_out):
        click.echo(summary_line(res))


COMMANDS = [export, tflm]
