"""`anyecg-edge bench`: all models side by side in one run (issue 8)."""

from __future__ import annotations

import click

from anyecg_edge.cli import not_built


@click.command("bench")
def bench() -> None:
    """Latency / memory / size / accuracy, all models side by side in one run."""
    not_built("bench")


COMMANDS = [bench]
