"""`anyecg-edge demo`: the fullest end-to-end run that exists."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True)
def demo(out: Path) -> None:
    """Run the fullest end-to-end path that exists, printing where every artefact is."""
    from anyecg_edge.demo import run_demo

    run_demo(out)


COMMANDS = [demo]
