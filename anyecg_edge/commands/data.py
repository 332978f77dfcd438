"""`anyecg-edge data ...`: MC-MED reading, synthetic cohorts, the segment corpus (issue 4)."""

from __future__ import annotations

from pathlib import Path

import click

from anyecg_edge.cli import Group, not_built


@click.group(cls=Group)
def data() -> None:
    """MC-MED reading, synthetic cohorts and the segment corpus."""


@data.command("synth")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--visits", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def data_synth(out: Path, visits: int, seed: int) -> None:
    """Write a synthetic cohort in MC-MED's exact layout (planted lab effects)."""
    not_built("data synth")


@data.command("build")
@click.option("--mcmed", type=click.Path(path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def data_build(mcmed: Path, out: Path) -> None:
    """Cut aligned 10 s windows into a sharded corpus with index.parquet."""
    not_built("data build")


COMMANDS = [data]
