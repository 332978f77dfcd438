"""`stream --record DIR` and `stream --source replay:DIR` (issue 16 items 1-2): a simulated
Polar H10 session with faults recorded and replayed gives the same windows and estimates;
the WFDB signal reads back with its gap annotations; a recording killed mid-write (SIGKILL)
still replays up to the kill; the log format's torn tail and bad input are one-line errors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from anyecg_edge.benchmarks.bench_stream import write_tiny_onnx
from stream_helpers import (
    LABS,
    read_jsonl,
    run_stream,
    start_sim_recording,
    windows_and_events,
)

from anyecg_edge.stream.recording import LOG_NAME, LogReader

pytestmark = pytest.mark.device  # no torch


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_onnx(
        tmp_path_factory.mktemp("model") / "tiny.onnx", LABS, 0, thresholds={"glucose": 0.6}
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, shared_data: Path, model: Path) -> dict:
    out = tmp_path_factory.mktemp("rec")
    rec = out / "session"
    code, text = run_stream(
        "--source", f"sim-polar:{shared_data / 'mitdb' / '100'}", "--model", model,
        "--duration", "60", "--speed", "20", "--faults", "drop=0.03,disconnect=20,seed=2",
        "--jsonl", out / "live.jsonl", "--record", rec, "--queue", "100",  # (no drops)
    )  # fmt: skip
    assert code == 0, text
    return {"dir": rec, "live": read_jsonl(out / "live.jsonl"), "out": out}


@pytest.mark.parametrize("speed", ["0", "40"])
def test_replay_gives_the_same_windows_and_estimates(recorded: dict, model: Path, speed) -> None:
    out = recorded["out"] / f"replay_{speed}.jsonl"
    code, text = run_stream(
        "--source", f"replay:{recorded['dir']}", "--model", model, "--speed", speed,
        "--jsonl", out,
    )  # fmt: skip
    assert code == 0, text
    live_w, live_e = windows_and_events(recorded["live"])
    replay = read_jsonl(out)
    rep_w, rep_e = windows_and_events(replay)
    assert len(live_w) >= 5 and any(w["segment"] > 0 for w in live_w)  # gaps were there
    assert {e["event"] for e in live_e} >= {"gap", "disconnect", "reconnect"}
    assert rep_w == live_w
    assert rep_e == live_e
    summary = replay[-1]["summary"]
    assert summary["source_info"]["torn_bytes"] == 0 and summary["source_info"]["complete"]
    for key in ("windows", "accepted", "rejected", "skipped_gap", "events"):
        assert summary[key] == recorded["live"][-1]["summary"][key], key
    # t_utc: the recorded session's clock, not the replay's (to the recorder's stamp: the
    # live line was stamped when it was written, the log record when it arrived), also for
    # the events before the first sample (once the replay's clock, seen at a minute's turn).
    live_utc = [x["t_utc"] for x in recorded["live"][1:-1] if "event" in x]
    rep_utc = [x["t_utc"] for x in replay[1:-1] if "event" in x]
    assert len(rep_utc) == len(live_utc) > 0
    for a, b in zip(rep_utc, live_utc, strict=True):
        assert abs(datetime.fromisoformat(a) - datetime.fromisoformat(b)) < timedelta(seconds=1)


def test_wfdb_signal_reads_back_with_gap_annotations(recorded: dict) -> None:
    import wfdb

    base = str(recorded["dir"] / "signal")
    r = wfdb.rdrecord(base)
    ann = wfdb.rdann(base, "gap")
    assert r.sig_name == ["chest"] and r.units == ["mV"] and abs(r.fs - 130.0) < 0.5
    x = r.p_signal[:, 0]
    live = recorded["live"][-1]["summary"]
    gaps = live["events"]["gap"]
    assert len(ann.sample) == gaps and all(n.startswith("gap ") for n in ann.aux_note)
    for s in ann.sample:  # each annotation opens a run of invalid (NaN) samples
        assert np.isfinite(x[s - 1]) and np.isnan(x[s])
    valid = np.isfinite(x)
    # An ECG in mV, not zeros. The gaps' share depends on how long each reconnect takes in
    # wall time x --speed 20 (0.90 valid on a loaded machine, ~0.97 idle).
    assert valid.mean() > 0.75 and np.nanstd(x) > 0.05
    # The device-time length of the session (the gaps included) in samples.
    assert abs(len(x) / r.fs - live["stream_s"]) < 1.0


def test_sigkill_mid_recording_still_replays(shared_data: Path, model: Path, tmp_path) -> None:
    rec = tmp_path / "killed"
    proc = start_sim_recording(
        shared_data / "mitdb" / "100", model, rec, "--speed", "10",
        min_log_bytes=20_000, timeout_s=60,
    )  # fmt: skip
    log = rec / LOG_NAME
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert log.stat().st_size >= 20_000, proc.stderr.read().decode()[-2000:]
    # A torn tail as a kill mid-write leaves it: half a record more.
    whole = list(LogReader(log))
    with open(log, "ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x12\x34")
    reader = LogReader(log)
    assert len(list(reader)) == len(whole) and reader.torn_bytes == 6
    out = tmp_path / "replay.jsonl"
    code, text = run_stream(
        "--source", f"replay:{rec}", "--model", model, "--speed", "0", "--jsonl", out
    )
    assert code == 0, text
    summary = read_jsonl(out)[-1]["summary"]
    assert summary["windows"] >= 10 and summary["source_info"]["torn_bytes"] == 6
    assert summary["source_info"]["complete"] is False


def test_damaged_bytes_mid_log_are_skipped_not_the_rest(recorded: dict, model: Path, tmp_path):
    """50 overwritten bytes inside notifications.aer: the replay goes on at the next intact
    record (it stopped there, "13332 torn bytes", 6.7 of 29 s replayed, complete: true)."""
    copy = tmp_path / "garbled"
    shutil.copytree(recorded["dir"], copy)
    log_path = copy / LOG_NAME
    data = bytearray(log_path.read_bytes())
    whole = list(LogReader(recorded["dir"] / LOG_NAME))
    offset = len(data) // 4
    data[offset : offset + 50] = b"\xa5" * 50
    log_path.write_bytes(bytes(data))
    reader = LogReader(log_path)
    records = list(reader)
    assert reader.torn_bytes == 0 and len(reader.corrupt) == 1
    ((pos, n),) = reader.corrupt
    assert pos <= offset < pos + n and n < 50 + 2 * 600  # the damaged record(s) only
    assert 1 <= len(whole) - len(records) <= 3
    assert records[-1] == whole[-1]  # everything after the damage is read
    out = tmp_path / "g.jsonl"
    code, text = run_stream("--source", f"replay:{copy}", "--model", model, "--speed", "0",
                            "--jsonl", out)  # fmt: skip
    assert code == 0, text
    summary = read_jsonl(out)[-1]["summary"]
    assert summary["source_info"]["corrupt_bytes"] == n
    assert summary["source_info"]["complete"] is False  # damaged: not the whole session
    live = recorded["live"][-1]["summary"]
    assert summary["stream_s"] == pytest.approx(live["stream_s"], abs=0.1)


def test_record_and_replay_errors_are_one_line(recorded: dict, model: Path, tmp_path) -> None:
    rec = recorded["dir"]
    for args, needle in [
        (["--source", f"replay:{tmp_path}"], "no session.json"),
        (["--source", f"replay:{rec}/{LOG_NAME}"], "is a file; replay takes a `stream --record`"),
        (["--source", f"file:{rec}/signal", "--record", tmp_path / "r"], "--record applies to BLE"),
        (["--source", f"sim-polar:{rec}", "--record", rec], "already holds a recording"),
        (["--source", f"replay:{rec}", "--jsonl", rec / LOG_NAME], "--jsonl"),
    ]:
        code, text = run_stream(*args, "--model", model)
        assert code in (1, 2) and text.startswith("Error: ") and needle in text, (args, text)
        assert len(text.strip().splitlines()) == 1, text
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "session.json").write_text(json.dumps({"format": "anyecg-edge-recording/1"}))
    code, text = run_stream("--source", f"replay:{bad}", "--model", model)
    assert code == 1 and "profile" in text, text
