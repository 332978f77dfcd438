"""Capture what native libraries (LiteRT/XNNPACK, absl, oneDNN) write straight to file
descriptor 2 during a call, so it goes to the debug log instead of the user's terminal.

Python-level ``redirect_stderr`` cannot catch these lines: they are written by C++ code to
the process's stderr descriptor. The descriptor is pointed at a temporary file for the
duration of the block and restored after it (also on an exception); the captured text is
logged at DEBUG (`-vv` shows it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["native_stderr_to_debug"]

log = logging.getLogger("anyecg_edge.native")


@contextlib.contextmanager
def native_stderr_to_debug() -> Iterator[None]:
    """Route fd 2 to the debug log inside the block (a no-op when debug logging is on)."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (e.g. under tests)
        fd = 2
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("native library output: %s", text)
