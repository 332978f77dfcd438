"""`anyecg-edge demo`: the whole mission end to end on this CPU (issue 8)."""

from __future__ import annotations

from pathlib import Path

import click

from anyecg_edge.commands._types import OutputPath


@click.command("demo")
@click.option("--out", type=OutputPath(folder=True), default=Path("demo_out"), show_default=True)
@click.option(
    "--quick", is_flag=True,
    help="The same model chain with a shorter stream and a quick bench (what the tests run).",
)  # fmt: skip
def demo(out: Path, quick: bool) -> None:
    """Synthetic cohort -> corpus -> LoRA -> evaluation -> distillation -> int8 exports ->
    simulated Polar H10 stream -> bench report, printing where every artefact is."""
    from anyecg_edge.demo import DemoConfig, run_demo

    run_demo(out, config=DemoConfig.quick() if quick else DemoConfig())


COMMANDS = [demo]
