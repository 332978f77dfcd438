"""`anyecg-edge demo`: the whole mission end to end on this CPU (issue 8)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from anyecg_edge.commands._types import OutputPath


@click.command("demo")
@click.option(
    "--out", type=OutputPath(folder=True), default=Path("demo_out"), show_default=True,
    help="Folder for every artefact (its stage subfolders are replaced).",
)  # fmt: skip
@click.option(
    "--quick", is_flag=True,
    help="The same model chain with a shorter stream and a quick bench (what the tests run).",
)  # fmt: skip
@click.option(
    "--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
    envvar="ANYECG_DATA", show_envvar=True,
    help="Real recordings for the predict and stream stages (default: shared/data beside "
    "the checkout; the synthetic cohort's records where absent).",
)  # fmt: skip
def demo(out: Path, quick: bool, data_dir: Path | None) -> None:
    """Synthetic cohort -> corpus -> LoRA -> evaluation -> distillation -> int8 exports ->
    simulated Polar H10 stream -> bench report, printing where every artefact is."""
    from anyecg_edge.datadir import ENV_VAR
    from anyecg_edge.demo import DemoConfig, run_demo

    if data_dir is not None:
        # The stages (and the bench's worker processes) look it up through datadir.
        os.environ[ENV_VAR] = str(data_dir.absolute())
    run_demo(out, config=DemoConfig.quick() if quick else DemoConfig())


COMMANDS = [demo]
