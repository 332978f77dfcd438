"""`anyecg-edge export`: ONNX / LiteRT export, int8, parity report (issue 6)."""

from __future__ import annotations

import click

from anyecg_edge.cli import not_built


@click.command("export")
def export() -> None:
    """Export a model to ONNX / LiteRT, int8 with calibration, with a parity report."""
    not_built("export")


COMMANDS = [export]
