"""`anyecg-edge predict`: one record -> per-lab probabilities, on the device side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from anyecg_edge import RESEARCH_USE_NOTE
from anyecg_edge.commands._types import (
    Number,
    all_cores,
    emit_json,
    json_option,
    json_to_stdout,
    positive,
    record_files,
    refuse_clobber,
    threads_option,
)

if TYPE_CHECKING:  # the real import loads numpy; `--help` should not pay for a hint
    from anyecg_edge.runtime import Model


def load_model(path: Path, *, threads: int | None = None) -> Model:
    """:func:`anyecg_edge.api.load_model` (.onnx / .tflite / .pt / run folder); its
    ModelError becomes the CLI's one-line error."""
    from anyecg_edge.api import load_model as api_load_model
    from anyecg_edge.runtime import ModelError

    try:
        return api_load_model(path, threads=threads)
    except ModelError:
        raise
    except (LookupError, TypeError, ValueError, RuntimeError) as exc:
        # A checkpoint that loads but whose fields build no model (unknown arch, bad kwargs).
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelError(f"{path}: cannot build the model it describes ({text})") from None


@click.command("predict")
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Model: .onnx / .tflite export (with its .manifest.json), or a torch .pt/.pth.",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Record: WFDB (.hea), CSV (needs --fs), a 1-D .npy array (needs --fs) or EDF.",
)
@click.option(
    "--lead",
    default=None,
    help="Lead name (I, II, MLII, ...). Default: II (the lab models' training lead), then I.",
)
@click.option(
    "--fs", type=positive(), default=None, help="Sampling rate in Hz (required for CSV and .npy)."
)
@click.option(
    "--units",
    type=click.Choice(["mV", "uV", "V", "auto"], case_sensitive=False),
    default=None,
    help="Unit of a CSV column or .npy array that does not state one (default mV; a header "
    "such as 'II (uV)' says it). auto: inferred from the amplitude, refused when ambiguous.",
)
@click.option(
    "--mains",
    type=click.Choice(["50", "60", "none", "model"]),
    default="model",
    show_default=True,
    help="Mains notch frequency.",
)
@click.option(
    "--hop", "hop_s", type=Number(0.0, 3600.0, min_open=True), default=None,
    help="Window hop in s (default 10).",
)  # fmt: skip
@threads_option(64, "Inference threads")
@json_option("the estimates (instead of the table when it goes to stdout)")
def predict(
    model_path: Path,
    input_path: Path,
    lead: str | None,
    fs: float | None,
    units: str | None,
    mains: str,
    hop_s: float | None,
    threads: int | None,
    json_out: Path | None,
) -> None:
    """Estimate lab abnormality probabilities from one ECG record (research use only)."""
    from anyecg_edge.io import read_record
    from anyecg_edge.predict import predict_record

    refuse_clobber(json_out, [*record_files(input_path), model_path], "--json")
    record = read_record(input_path, lead=lead, fs=fs, units=units)
    model = load_model(model_path, threads=threads or all_cores())
    # "none" maps to None (no notch), so a dict .get(...) or float(...) would fall through.
    mains_hz: float | None | str = (
        None if mains == "none" else "model" if mains == "model" else float(mains)
    )
    result = predict_record(record, model, hop_s=hop_s, mains_hz=mains_hz).to_dict()
    # never NaN/Infinity: null plus the reason (jsonsafe)
    emit_json(result, json_out)
    if not json_to_stdout(json_out):
        _print_prediction(result)
    if result["status"] != "ok":
        reasons = result["quality"]["reasons"]
        hint = (
            " (a µV signal read as mV? see --units)"
            if "implausible_amplitude" in reasons and units is None
            else ""
        )
        click.echo(
            f"Error: {result['record']}: no window passed the signal-quality gate "
            f"({', '.join(reasons) or 'no windows'}){hint}; no estimates",
            err=True,
        )
        sys.exit(3)


def _print_prediction(result: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    q = result["quality"]
    console.print(
        f"[bold]{result['record']}[/] lead {result['lead']} at {result['fs']:g} Hz, "
        f"{result['duration_s']:.1f} s; windows used {q['windows_used']}/{q['windows_total']}"
        + (f" (rejected: {', '.join(q['reasons'])})" if q["reasons"] else "")
    )
    if result["status"] != "ok":
        console.print("[red]No window passed the signal-quality gate; no estimates.[/]")
    else:
        model = result["model"]
        level = (model.get("interval") or {}).get("level")
        console.print(_prediction_table(result, console))
        missing = model.get("labs_not_calibrated") or []
        if missing:
            console.print(
                f"[yellow]{len(missing)} of {len(result['labs'])} labs are not calibrated (too "
                "little validation data): no call, shown as 'not calibrated'.[/]"
            )
        if level:
            console.print(
                f"interval: {level:.0%} range of the probability over "
                f"{model['interval'].get('n', '?')} bootstrap calibrations (validation "
                "uncertainty); ±sd: spread of P between windows."
            )
    console.print(f"[yellow]{RESEARCH_USE_NOTE}[/]")


def _prediction_table(result: dict[str, Any], console: Any) -> Any:
    """The per-lab table, as wide as the console allows: reference and unit in their own
    columns where they fit, else under the lab's name, so that at 80 columns (a pipe, a
    narrow terminal) no name, number or call is cut to an ellipsis."""
    from rich.measure import Measurement

    wide = _lab_table(result, compact=False)
    natural = Measurement.get(console, console.options.update_width(10_000), wide).maximum
    if natural <= console.width:
        return wide
    return _lab_table(result, compact=True)


def _range_text(ref: list[float | None] | None, unit: str | None) -> str:
    if not ref:
        return unit or ""
    low, high = ref
    if low is None and high is None:
        text = ""
    elif low is None:
        text = f"≤{high:g}"
    elif high is None:
        text = f"≥{low:g}"
    else:
        text = f"{low:g}–{high:g}"
    return f"{text} {unit or ''}".strip()


def _lab_table(result: dict[str, Any], *, compact: bool) -> Any:
    from rich.table import Table

    level = (result["model"].get("interval") or {}).get("level")
    table = Table(title="Lab abnormality estimates (research estimates, not diagnoses)")
    interval_col = f"{level:.0%} interval" if level else "interval"
    if compact:
        table.add_column("lab (reference)", ratio=1, min_width=12)
        for col in ("P(abn.)", interval_col):
            table.add_column(col, no_wrap=True)
        table.add_column("thresh.", no_wrap=True)
        table.add_column("call", min_width=10)
        table.add_column("±sd", no_wrap=True)
    else:
        for col in ("lab", "P(abnormal)", interval_col, "threshold", "call", "±sd windows"):
            table.add_column(col)
        table.add_column("reference")
        table.add_column("unit")
    rows = sorted(result["labs"].items(), key=lambda kv: -kv[1]["probability"])
    for _name, lab in rows:
        iv = lab["interval"]
        call = lab["status"]
        cells = [
            f"{lab['probability']:.3f}",
            f"{iv[0]:.2f}–{iv[1]:.2f}" if iv else "-",
            "-" if lab["threshold"] is None else f"{lab['threshold']:.3f}",
            f"[red]{call}[/]" if call == "abnormal" else f"[dim]{call}[/]",
            f"{lab['spread']['std']:.3f}",
        ]
        if compact:
            ref_unit = _range_text(lab["reference_range"], lab["unit"])
            name = lab["display_name"] + (f"\n[dim]{ref_unit}[/]" if ref_unit else "")
            table.add_row(name, *cells)
        else:
            reference = _range_text(lab["reference_range"], None)
            table.add_row(lab["display_name"], *cells, reference, lab["unit"] or "")
    return table


COMMANDS = [predict]
