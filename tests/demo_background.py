"""The one `anyecg-edge demo --quick` run of the suite, started in the background.

Not a test module. tests/conftest.py starts it as soon as collection shows that
tests/test_demo.py will run, and tests/test_demo.py's fixture waits for it. The demo trains
with one torch thread, as does nearly every test, so on the 2-core machine the suite is sized
for it runs on the core the suite leaves idle: its ~130 s overlap the tests before test_demo
instead of adding to them (at a lower priority: a test that wants both cores gets them). It
is the real command in its own process (what a user runs), its output the console's (stdout
and stderr, as click's test runner mixes them); its results do not depend on what runs beside
it (seeded, single-threaded; the tests bound no latency).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class DemoJob:
    out: Path
    log: Path
    proc: subprocess.Popen

    def wait(self, timeout_s: float = 1800) -> dict:
        """{"out", "code", "text"} of the finished run (killed after ``timeout_s``)."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return {"out": self.out, "code": code, "text": self.log.read_text(errors="replace")}


_JOB: list[DemoJob] = []


def _yield_to_the_tests() -> None:
    """Lower priority: where a test wants both cores (two torch threads, a torchrun pair)
    it gets them, rather than thrashing against the demo; the demo takes the idle time."""
    os.nice(10)


def start(folder: Path, background: bool = False) -> DemoJob:
    """Start the demo into ``folder``/demo_out (once per process; later calls get that job).
    ``background``: started at collection, beside the serial suite, at a lower priority.
    Otherwise (pytest-xdist: test_demo's fixture starts it and its worker waits) it keeps
    its worker's core at the tests' priority; niced there, a busy machine starved it past
    pytest's 600 s limit."""
    if _JOB:
        return _JOB[0]
    out, log = folder / "demo_out", folder / "demo.log"
    cli = Path(sys.executable).with_name("anyecg-edge")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # the console text only, as in-process
    with log.open("wb") as f:  # a file, not a pipe: nothing reads it until the end
        proc = subprocess.Popen(
            [str(cli), "demo", "--quick", "--out", str(out)],
            stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_yield_to_the_tests if background else None,
        )  # fmt: skip
    _JOB.append(DemoJob(out, log, proc))
    return _JOB[0]


def stop() -> None:
    """End a run still going when the session ends (an interrupted or deselected suite)."""
    for job in _JOB:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()
