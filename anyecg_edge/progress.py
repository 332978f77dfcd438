"""Progress bars for the slow steps (train, export calibration, bench, data build).

One rule for every command: a bar (rich, with ETA) on **stderr**, only when stderr is a
terminal, and never with ``-q`` or ``--no-progress``. Library code does not take a bar
argument: it calls :func:`report` (a no-op unless a command opened :func:`progress_session`),
so the trainer or the exporter stay usable from Python without a terminal. A task may carry
a short ``note`` after its count (the corpus build: ``units  12,345 windows``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_enabled", "progress_session", "report"]

_lock = threading.Lock()
_active: Any = None  # the open rich Progress, or None
_tasks: dict[str, Any] = {}


def progress_enabled(no_progress: bool = False) -> bool:
    """True when a bar may be drawn: no --no-progress (the command's or the root's), no -q,
    stderr a terminal."""
    if no_progress:
        return False
    try:
        import click

        ctx = click.get_current_context(silent=True)
        obj = (ctx.find_root().obj or {}) if ctx is not None else {}
    except ImportError:  # pragma: no cover - click is a core dependency
        obj = {}
    if obj.get("quiet") or obj.get("no_progress"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


@contextlib.contextmanager
def progress_session(enabled: bool) -> Iterator[None]:
    """While open (and ``enabled``), :func:`report` calls draw bars on stderr."""
    global _active
    if not enabled or _active is not None:
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,  # the final lines of the command stay the last thing on screen
    )
    with bar:
        with _lock:
            _active = bar
        try:
            yield
        finally:
            with _lock:
                _active = None
                _tasks.clear()


def report(task: str, completed: float, total: float | None, *, note: str = "") -> None:
    """Set ``task``'s bar to ``completed`` of ``total``, ``note`` shown after the count (a
    no-op without an open session)."""
    with _lock:
        bar = _active
        if bar is None:
            return
        tid = _tasks.get(task)
        if tid is None:
            # born at ``completed``: a refresh between add and update must not draw 0
            tid = _tasks[task] = bar.add_task(task, total=total, completed=completed, note=note)
    bar.update(tid, completed=completed, total=total, note=note)
