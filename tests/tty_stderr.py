"""Run Python code in a child process whose stderr is a pseudo-terminal: progress bars are
drawn only on a terminal, so this is how the tests see one."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time


def run_with_tty_stderr(
    code: str, timeout_s: float = 60, args: list[str] | tuple[str, ...] = (), columns: int = 120
) -> tuple[subprocess.CompletedProcess, str]:
    """(the finished process with its stdout, everything written to the terminal as text).

    The terminal is read while the child runs: a pty holds only ~17 KB unread, and a child
    redrawing more than that would block on its own stderr."""
    import pty

    master, slave = pty.openpty()
    deadline = time.monotonic() + timeout_s
    drawn = b""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, stderr=slave,
            env={**os.environ, "COLUMNS": str(columns)},
        )  # fmt: skip
        os.close(slave)
        stdout_chunks: list[bytes] = []
        # stdout is drained by a thread-free poll beside the pty, so neither pipe can fill up.
        assert proc.stdout is not None
        streams = {master: "tty", proc.stdout.fileno(): "out"}
        while streams:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(
                    proc.args, timeout_s, output=b"".join(stdout_chunks)
                )
            ready, _, _ = select.select(list(streams), [], [], min(left, 1.0))
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the pty's other side is closed: all read
                    chunk = b""
                if not chunk:
                    del streams[fd]
                elif streams[fd] == "tty":
                    drawn += chunk
                else:
                    stdout_chunks.append(chunk)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        proc.stdout.close()
    finally:
        os.close(master)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, b"".join(stdout_chunks), None)
    return done, drawn.decode(errors="replace")
