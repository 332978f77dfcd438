"""The CLI's click group class, in a module of its own: the command modules use it for
their sub-groups, and importing it must not import `anyecg_edge.cli` (which registers
every command module at import, so a command module imported first would be cut off
half initialized)."""

from __future__ import annotations

import logging
from typing import Any

import click

__all__ = ["Group"]

log = logging.getLogger("anyecg_edge")


class Group(click.Group):
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
