"""`anyecg-edge stream`: rolling-window inference on a live or replayed stream (issue 7)."""

from __future__ import annotations

import click

from anyecg_edge.cli import not_built


@click.command("stream")
def stream() -> None:
    """Rolling-window inference on a live or replayed single-lead stream."""
    not_built("stream")


COMMANDS = [stream]
