"""`stream --record` / `--source replay:` beyond tests/test_recording.py (issue 16 items 1-2):
a simulated Polar H10 (real bumble GATT link) with drops, REORDERED notifications and
disconnects replays to the same windows, estimates and events; replaying with `--record NEW`
regenerates the recording byte for byte (raw log, WFDB signal and gap annotations); a session
SIGKILLed mid-recording gets its WFDB files back from its log (the raw log is the source of
truth) and its killed .dat is a prefix of the regenerated one; a shortened accelerated soak
(benchmarks/soak_record.py: files complete and readable, RSS sampled throughout).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from anyecg_edge.benchmarks.bench_stream import write_tiny_onnx
from stream_helpers import (
    LABS,
    log_records,
    read_jsonl,
    run_stream,
    start_sim_recording,
    windows_and_events,
)

from anyecg_edge.stream.recording import LOG_NAME

pytestmark = pytest.mark.device  # no torch

FAULTS = "drop=0.01,reorder=0.08,disconnect=25,seed=3"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx", LABS, 0)


def test_reordered_session_replays_and_regenerates_identically(
    shared_data: Path, model: Path, tmp_path: Path
) -> None:
    rec, regen = tmp_path / "rec", tmp_path / "regen"
    code, text = run_stream(
        "--source", f"sim-polar:{shared_data / 'mitdb' / '100'}", "--model", model,
        "--duration", "60", "--speed", "20", "--faults", FAULTS, "--queue", "100",
        "--jsonl", tmp_path / "live.jsonl", "--record", rec,
    )  # fmt: skip
    assert code == 0, text
    live = read_jsonl(tmp_path / "live.jsonl")
    seq = live[-1]["summary"]["source_info"]["sequencer"]
    # the faults happened: notifications arrived out of order, gaps and link losses
    assert seq["reordered"] > 0 and seq["gap"] > 0, seq
    code, text = run_stream(
        "--source", f"replay:{rec}", "--model", model, "--speed", "0",
        "--jsonl", tmp_path / "replay.jsonl", "--record", regen,
    )  # fmt: skip
    assert code == 0, text
    replay = read_jsonl(tmp_path / "replay.jsonl")
    live_w, live_e = windows_and_events(live)
    rep_w, rep_e = windows_and_events(replay)
    assert len(live_w) >= 5 and {e["event"] for e in live_e} >= {"gap", "reconnect"}
    assert rep_w == live_w and rep_e == live_e
    assert replay[-1]["summary"]["source_info"]["sequencer"] == seq
    # The regenerated recording is the recording: same records, times and bytes; same signal.
    assert log_records(regen) == log_records(rec)
    for name in ("signal.dat", "signal.hea", "signal.gap"):
        assert (regen / name).read_bytes() == (rec / name).read_bytes(), name
    meta, meta2 = (json.loads((d / "session.json").read_text()) for d in (rec, regen))
    assert meta2["replayed_from"]["source"] == meta["source"]
    assert meta2["start_utc"] == meta["start_utc"] and meta2["complete"]
    # replaying into the folder being replayed is refused before anything is written
    code, text = run_stream("--source", f"replay:{rec}", "--model", model, "--record", rec)
    assert code != 0 and text.startswith("Error: ") and len(text.strip().splitlines()) == 1


def test_sigkilled_recording_regenerates_its_wfdb(
    shared_data: Path, model: Path, tmp_path: Path
) -> None:
    import wfdb

    rec, regen = tmp_path / "killed", tmp_path / "regen"
    proc = start_sim_recording(
        shared_data / "mitdb" / "100", model, rec, "--speed", "20", "--faults", "drop=0.03,seed=4",
        min_log_bytes=30_000, timeout_s=90,
    )  # fmt: skip
    log = rec / LOG_NAME
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert log.stat().st_size >= 30_000, proc.stderr.read().decode()[-2000:]
    assert not (rec / "signal.hea").exists()  # killed: no header, wfdb cannot open it
    killed_dat = (rec / "signal.dat").read_bytes()
    code, text = run_stream(
        "--source", f"replay:{rec}", "--model", model, "--speed", "0", "--record", regen,
        "--jsonl", tmp_path / "replay.jsonl",
    )  # fmt: skip
    assert code == 0, text
    summary = read_jsonl(tmp_path / "replay.jsonl")[-1]["summary"]
    r = wfdb.rdrecord(str(regen / "signal"))
    ann = wfdb.rdann(str(regen / "signal"), "gap")
    x = r.p_signal[:, 0]
    assert r.units == ["mV"] and abs(r.fs - 130.0) < 0.5 and r.sig_name == ["chest"]
    assert len(ann.sample) == summary["events"]["gap"] > 0
    for s in ann.sample:
        assert np.isfinite(x[s - 1]) and np.isnan(x[s])
    assert int(np.isfinite(x).sum()) == summary["source_info"]["decoder"]["samples"]
    # What the killed session had written is the start of the regenerated signal.
    regen_dat = (regen / "signal.dat").read_bytes()
    assert len(killed_dat) > 0 and regen_dat[: len(killed_dat)] == killed_dat
    assert log_records(regen)[: len(log_records(rec))] == log_records(rec)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_recording_finalizes_the_wfdb(
    shared_data: Path, model: Path, tmp_path: Path, signum: int
) -> None:
    """SIGTERM / Ctrl-C: the session ends cleanly and the recording is complete as it is."""
    import wfdb

    rec = tmp_path / "rec"
    proc = start_sim_recording(
        shared_data / "mitdb" / "100", model, rec, "--speed", "20", "--faults", "drop=0.02,seed=5",
        "--jsonl", str(tmp_path / "s.jsonl"), min_log_bytes=30_000, timeout_s=90,
    )  # fmt: skip
    proc.send_signal(signum)
    rc = proc.wait(timeout=60)
    assert rc in (128 + signum, 130, 143), (rc, proc.stderr.read().decode()[-2000:])
    meta = json.loads((rec / "session.json").read_text())
    assert meta["complete"] and meta["records"] == len(log_records(rec))
    summary = read_jsonl(tmp_path / "s.jsonl")[-1]["summary"]
    assert summary["source_info"]["recording"]["records"] == meta["records"]
    r = wfdb.rdrecord(str(rec / "signal"))
    ann = wfdb.rdann(str(rec / "signal"), "gap")
    assert r.units == ["mV"] and len(ann.sample) == summary["events"]["gap"] > 0
    assert (
        int(np.isfinite(r.p_signal[:, 0]).sum()) == (summary["source_info"]["decoder"]["samples"])
    )


@pytest.mark.slow
def test_soak_short(shared_data: Path, model: Path, tmp_path: Path) -> None:
    """The 24 h soak's shortened form (the full run: benchmarks/results/soak_record.md)."""
    from anyecg_edge.benchmarks.soak_record import run_soak

    result = run_soak(
        hours=0.3, speed=300, record=shared_data / "mitdb" / "100", model=model, hop_s=5,
        sample_s=0.5, replay=False, keep=tmp_path,
    )  # fmt: skip
    assert result["exit"] == 0, result.get("error")
    files = result["files"]
    assert files["ok"], files
    assert files["log"]["torn_bytes"] == 0 and files["log"]["end"] == 1
    assert files["wfdb"]["gap_annotations"] == files["wfdb"]["gap_events"] > 0
    assert result["stream"]["stream_s"] > 0.5 * 0.3 * 3600  # (a loaded host falls behind)
    assert len(result["rss_samples"]) >= 5 and result["memory"]["flat"], result["memory"]
