"""What the recording tests share (tests/test_recording.py, tests/test_record_replay.py):
running `stream` in-process, reading its JSONL, splitting windows from events, reading a
recording's raw log, and a simulated Polar H10 session recorded in a child process (to
kill or signal it mid-write)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from anyecg_edge.cli import cli
from anyecg_edge.stream.recording import LOG_NAME, LogReader

REPO = Path(__file__).resolve().parents[1]
LABS = ["potassium", "sodium", "hemoglobin", "glucose"]
TIMING = ("latency_ms", "t_utc")  # the only fields a replay may change


def run_stream(*args: object) -> tuple[int, str]:
    """`anyecg-edge stream --no-live ARGS` in this process: (exit code, output)."""
    res = CliRunner().invoke(cli, ["stream", "--no-live", *map(str, args)])
    return res.exit_code, res.output


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def windows_and_events(lines: list[dict]) -> tuple[list[dict], list[dict]]:
    """(windows, events) without their timing fields; windows come from the inference
    thread, so their order among the events may differ: each list is compared on its own."""
    body = [{k: v for k, v in x.items() if k not in TIMING} for x in lines[1:-1]]
    return [x for x in body if "event" not in x], [x for x in body if "event" in x]


def log_records(folder: Path) -> list[tuple[int, int, bytes]]:
    """(kind, host UTC ns, body) of every record in a recording's raw log."""
    return [(r.kind, r.utc_ns, r.body) for r in LogReader(folder / LOG_NAME)]


def start_sim_recording(
    record: Path, model: Path, rec: Path, *extra: str, min_log_bytes: int, timeout_s: float
) -> subprocess.Popen:
    """`stream --source sim-polar:RECORD --record REC ...` in a child process, returned once
    its raw log holds ``min_log_bytes`` (or ``timeout_s`` passed: the caller checks)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyecg_edge", "-q", "stream", "--no-live", "--source",
         f"sim-polar:{record}", "--model", str(model), "--record", str(rec),
         "--duration", "600", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    log = rec / LOG_NAME
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < min_log_bytes):
        time.sleep(0.2)
    return proc
