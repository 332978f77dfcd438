"""`anyecg-edge`: one CLI for the whole path (data -> train -> export -> device).

Heavy dependencies (torch, peft, onnx, wfdb) are imported inside the commands that need
them, so the device install runs `predict`/`stream` without them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from anyecg_edge import RESEARCH_USE_NOTE, __version__

log = logging.getLogger("anyecg_edge")

# Where each command that is not built yet will come from (see the project's issues).
_PLANNED = {
    "data synth": 4,
    "data build": 4,
    "train lora": 5,
    "train distill": 5,
    "evaluate": 5,
    "export": 6,
    "stream": 7,
    "ble scan": 7,
    "ble simulate": 7,
    "bench": 8,
}


def _not_built(command: str) -> None:
    click.echo(
        f"error: `anyecg-edge {command}` is not built yet (planned in issue {_PLANNED[command]}).",
        err=True,
    )
    sys.exit(2)


class _Group(click.Group):
    """Turns the project's own errors (ValueError/OSError subclasses raised with a message
    that names the file and field) into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ValueError, OSError) as exc:
            if not type(exc).__module__.startswith("anyecg_edge") and not isinstance(
                exc, FileNotFoundError
            ):
                raise
            if log.isEnabledFor(logging.DEBUG):
                raise
            raise click.ClickException(str(exc)) from None


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anyecg-edge")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, full tracebacks).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """AnyECG-Edge: lab-value estimates from one ECG lead, from GPU training to the wearable.

    Outputs are research estimates with calibration and uncertainty, never diagnoses.
    """
    _setup_logging(verbose, quiet)
    ctx.obj = {"quiet": quiet, "verbose": verbose}


# --------------------------------------------------------------------------- data
@cli.group(cls=_Group)
def data() -> None:
    """MC-MED reading, synthetic cohorts and the segment corpus."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--visits", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth(out: Path, visits: int, seed: int) -> None:
    """Write a synthetic cohort in MC-MED's exact layout (planted lab effects)."""
    _not_built("data synth")


@data.command("build")
@click.option("--mcmed", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def data_build(mcmed: Path, out: Path) -> None:
    """Cut aligned 10 s windows into a sharded corpus with index.parquet."""
    _not_built("data build")


# --------------------------------------------------------------------------- train
@cli.group(cls=_Group)
def train() -> None:
    """GPU stage: LoRA fine-tuning of ECGFounder and distillation into a student."""


@train.command("lora")
def train_lora() -> None:
    """LoRA fine-tune ECGFounder (peft) on the lab catalog."""
    _not_built("train lora")


@train.command("distill")
def train_distill() -> None:
    """Distill a LoRA teacher into a small edge student."""
    _not_built("train distill")


@cli.command("evaluate")
def evaluate() -> None:
    """Per-lab AUROC with bootstrap CIs, calibration and the paper's buckets."""
    _not_built("evaluate")


@cli.command("export")
def export() -> None:
    """Export a model to ONNX / LiteRT, int8 with calibration, with a parity report."""
    _not_built("export")


# --------------------------------------------------------------------------- predict
def _load_model(path: Path):  # -> anyecg_edge.runtime.Model
    suffix = path.suffix.lower()
    if suffix in {".pt", ".pth"}:
        try:
            from anyecg_edge.training.torch_model import TorchModel
        except ImportError as exc:
            raise click.ClickException(
                f"{path}: torch checkpoints need torch ({exc.name} missing): "
                'pip install "anyecg-edge[train]", or export to .onnx/.tflite for a device'
            ) from None
        return TorchModel.load(path)
    if suffix in {".onnx", ".tflite"}:
        click.echo(
            f"error: {path}: {suffix} runtime backends are not built yet (planned in issue 6).",
            err=True,
        )
        sys.exit(2)
    raise click.ClickException(f"{path}: unknown model type {suffix!r}; expected .pt/.pth")


@cli.command("predict")
@click.option("--model", "model_path", type=click.Path(path_type=Path), required=True,
              help="Model file (.pt/.pth torch checkpoint; .onnx/.tflite with issue 6).")
@click.option("--input", "input_path", type=click.Path(path_type=Path), required=True,
              help="Record: WFDB (.hea), CSV (needs --fs) or EDF.")
@click.option("--lead", default=None, help="Lead name (I, II, MLII, ...). Default: I, then II.")
@click.option("--fs", type=float, default=None, help="Sampling rate in Hz (required for CSV).")
@click.option("--mains", type=click.Choice(["50", "60", "none", "model"]), default="model",
              show_default=True, help="Mains notch frequency.")
@click.option("--hop", "hop_s", type=float, default=None, help="Window hop in s (default 10).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict(model_path: Path, input_path: Path, lead: str | None, fs: float | None,
            mains: str, hop_s: float | None, as_json: bool) -> None:
    """Estimate lab abnormality probabilities from one ECG record (research use only)."""
    from anyecg_edge.io import read_record
    from anyecg_edge.predict import predict_record

    record = read_record(input_path, lead=lead, fs=fs)
    model = _load_model(model_path)
    mains_hz: float | None | str = {"none": None, "model": "model"}.get(mains) or float(mains)
    result = predict_record(record, model, hop_s=hop_s, mains_hz=mains_hz).to_dict()
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_prediction(result)
    if result["status"] != "ok":
        sys.exit(3)


def _print_prediction(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

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
        calibrated = result["model"]["calibrated"]
        table = Table(title="Lab abnormality estimates" + ("" if calibrated else " (uncalibrated)"))
        for col in ("lab", "P(abnormal)", "±sd", "flag", "reference", "unit"):
            table.add_column(col)
        rows = sorted(result["labs"].items(), key=lambda kv: -kv[1]["probability"])
        for _name, lab in rows:
            ref = lab["reference_range"]
            ref_s = "" if not ref else f"{ref[0] if ref[0] is not None else ''}–{ref[1] if ref[1] is not None else ''}"
            table.add_row(lab["display_name"], f"{lab['probability']:.3f}",
                          f"{lab['uncertainty']['std']:.3f}",
                          "abnormal" if lab["abnormal"] else "", ref_s, lab["unit"] or "")
        console.print(table)
    console.print(f"[yellow]{RESEARCH_USE_NOTE}[/]")


# --------------------------------------------------------------------------- device side
@cli.command("stream")
def stream() -> None:
    """Rolling-window inference on a live or replayed single-lead stream."""
    _not_built("stream")


@cli.group(cls=_Group)
def ble() -> None:
    """Bluetooth LE: scan for wearables, run a simulated wearable."""


@ble.command("scan")
def ble_scan() -> None:
    """Scan for Polar H10 / Movesense / AnyECG-profile wearables."""
    _not_built("ble scan")


@ble.command("simulate")
def ble_simulate() -> None:
    """Run a simulated wearable (a real GATT peripheral on bumble's virtual link)."""
    _not_built("ble simulate")


@cli.command("bench")
def bench() -> None:
    """Latency / memory / size / accuracy, all models side by side in one run."""
    _not_built("bench")


@cli.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
def demo(out: Path) -> None:
    """Run the fullest end-to-end path that exists, printing where every artefact is."""
    from anyecg_edge.demo import run_demo

    run_demo(out)


def main() -> None:
    cli(prog_name="anyecg-edge")


if __name__ == "__main__":
    main()
