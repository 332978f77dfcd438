"""Run Python code in a child process whose stderr is a pseudo-terminal: progress bars are
drawn only on a terminal, so this is how the tests see one."""

from __future__ import annotations

import os
import subprocess
import sys


def run_with_tty_stderr(
    code: str, timeout_s: float = 60
) -> tuple[subprocess.CompletedProcess, str]:
    """(the finished process with its stdout, everything written to the terminal as text)."""
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=slave, timeout=timeout_s,
            env={**os.environ, "COLUMNS": "120"},
        )  # fmt: skip
        os.close(slave)
        drawn = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(master)
    return proc, drawn.decode(errors="replace")
