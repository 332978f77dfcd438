"""The live view (issue 13 item 6) rendered into rich consoles of fixed widths: no line
wider than the console, no wrapped cell or title, no event field cut in two, a flag and an
interval column per lab, and no stale panel from log records under the live display.

The stream is real: MIT-BIH record 100 replayed through the engine and the tiny ONNX
model (its manifest gives two labs a threshold and bootstrap calibrations, one a long
name)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
from rich.console import Console
from test_stream import write_tiny_onnx

from anyecg_edge.io import read_record
from anyecg_edge.runtime import load_model
from anyecg_edge.stream.engine import StreamEngine
from anyecg_edge.stream.live import LiveView, live_display
from anyecg_edge.stream.sources import run_file

LABS = ["potassium", "alkaline_phosphatase_serum_level", "hemoglobin", "glucose"]
LABS_TITLE = "Top lab estimates (smoothed P(abnormal))"
LONG_SOURCE = "sim-polar:/data/recordings/2026/ward-7/bed-12/patient-0042/session-3/lead-ii/100"
EVENTS = [
    {"event": "connected", "t": 0.0, "address": "F0:F0:F0:F0:F0:F0", "mtu": 247,
     "connect_ms": 29.9, "profile": "polar", "fs_hz": 130.0, "lead": "chest"},
    {"event": "gap", "t": 12.5, "segment": 1, "lost_s": 1.234, "reason": "sequence jump",
     "samples": 160},
    {"event": "reconnect", "t": 14.0, "attempts": 2, "mtu": 247, "connect_ms": 31.2,
     "down_s": 1.5},
]  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = write_tiny_onnx(tmp_path_factory.mktemp("live") / "tiny.onnx", labs=LABS)
    manifest = Path(str(path) + ".manifest.json")
    meta = json.loads(manifest.read_text())
    meta["thresholds"] = {"potassium": 0.4, "glucose": 0.6}
    meta["calibration_bootstrap"] = {
        "potassium": [[1.0, 0.1 * i] for i in range(-5, 6)],
        "glucose": [[1.0, 0.05 * i] for i in range(-5, 6)],
    }
    meta["uncertainty"] = {"level": 0.9, "n": 11}
    manifest.write_text(json.dumps(meta))
    return load_model(path, threads=1)


@pytest.fixture(scope="module")
def streamed(model, shared_data):
    """(engine, items) after 30 s of record 100."""
    out: list[dict] = []
    engine = StreamEngine(model, hop_s=5.0, lossless=True, sink=out.append).start()
    run_file(read_record(shared_data / "mitdb" / "100"), engine, speed=0, duration_s=30)
    engine.close()
    return engine, out


def _render(view: LiveView, width: int) -> list[str]:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(view)
    return console.export_text().rstrip("\n").splitlines()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_no_line_is_wider_wrapped_or_cut(streamed, width):
    engine, out = streamed
    view = LiveView(engine, source=LONG_SOURCE, top_k=4)
    for item in [*out, *EVENTS]:
        view.update(item)
    lines = _render(view, width)
    assert all(len(line) == width for line in lines), [len(x) for x in lines]
    text = "\n".join(lines)
    # The table title on one line, whole; the interval column names its level.
    assert sum(LABS_TITLE in line for line in lines) == 1
    assert "90% interval" in text and "flag" in text
    # One line per lab: name (shortened in the middle when long), P, interval, flag.
    rows = {r["lab"]: r for r in engine.top_labs(4)}
    for lab, r in rows.items():
        whole = len(lab) <= 20 or width >= 120
        name = re.escape(lab) if whole else re.escape(lab[:9]) + r"[^│…]*…[^│]*"
        iv = r["interval"]
        ivs = f"{iv[0]:.2f}–{iv[1]:.2f}" if iv else "-"
        flag = {True: "ABNORMAL", False: "normal", None: "not calibrated"}[r["abnormal"]]
        pattern = rf"│ {name} +│ +{r['probability']:.3f} │ +{re.escape(ivs)} │.*{flag} +│"
        assert sum(bool(re.search(pattern, line)) for line in lines) == 1, (lab, text)
    assert {r["abnormal"] for r in rows.values()} >= {True, None}  # the flags all show
    # The source: whole at 120+, shortened in the middle at 80, never wrapped.
    src = [line for line in lines if "source" in line]
    assert len(src) == 1 and "streaming" in src[0]
    assert (LONG_SOURCE in src[0]) == (width >= 120)
    # Events: whole fields only; a line that had to drop fields ends in an ellipsis.
    for ev in EVENTS:
        (line,) = [x for x in lines if f" {ev['event']}: " in x]
        body = line.split(f"{ev['event']}: ", 1)[1].rstrip(" │")
        dropped = body.endswith("…")
        fields = [f for f in body.rstrip(" …").split(", ")]
        expected = [f"{k}={v}" for k, v in ev.items() if k not in ("event", "t")]
        assert fields == expected[: len(fields)]
        assert dropped == (len(fields) < len(expected))
    if width == 200:
        assert "…" not in text.replace("alkaline_phosphatase_serum_level", "")


@pytest.mark.parametrize("width", [80, 120, 200])
def test_before_the_first_window_nothing_wraps(model, width):
    engine = StreamEngine(model, hop_s=5.0)
    view = LiveView(engine, source="polar:AA:BB:CC:DD:EE:FF")
    lines = _render(view, width)
    assert all(len(line) == width for line in lines)
    text = "\n".join(lines)
    assert "waiting for the first 10 s window" in text and "starting" in text
    assert sum(LABS_TITLE in line for line in lines) == 1  # not wrapped in a narrow table
    assert "┃ lab" not in text  # no empty table
    view.update({"event": "connect_failed", "t": 0.0, "attempt": 1, "error": "not found"})
    assert "connecting" in "\n".join(_render(view, width))


def test_a_file_replay_leaves_starting(streamed):
    engine, out = streamed
    view = LiveView(engine, source="file:100")
    view.update(out[0])
    assert view.link == "streaming"


def test_log_records_print_above_the_live_panel(streamed, capsys):
    """A log record under the live display goes through it (above the panel), not to the
    stream the handler was created with (which left a stale frame behind)."""
    engine, out = streamed
    view = LiveView(engine, source="file:100")
    handler = logging.StreamHandler()  # like basicConfig: holds the stderr of its creation
    original = handler.stream
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        term = io.StringIO()
        console = Console(file=term, force_terminal=True, width=100, color_system=None)
        with live_display(view, console=console, refresh_per_second=20) as live:
            assert handler.stream is not original
            for item in out:
                view.update(item)
            logging.getLogger("anyecg_edge.test").warning("a record during the stream")
            live.refresh()
        assert handler.stream is original
    finally:
        root.removeHandler(handler)
    assert "a record during the stream" not in capsys.readouterr().err
    shown = term.getvalue()
    assert "a record during the stream" in shown
    # Printed before the final frame, which comes after it whole.
    assert shown.rindex("a record during the stream") < shown.rindex(LABS_TITLE)
