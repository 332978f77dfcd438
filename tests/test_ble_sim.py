"""The BLE path over a real GATT/ATT exchange without a radio: the simulated wearable is
a bumble peripheral on a virtual link, received through `BleakClient` with our bumble
backend (the code path used with real devices), with fault injection.

Checks: discovery and connection through bleak, exact delivery against the replayed
source for all three profiles, the issue's fault scenario (gap and reconnect events,
windows keep coming), the silence watchdog, clock drift and jumps, corrupted and
duplicated packets, MTU too small, the CLI (JSONL, clean Ctrl-C), and a standalone
simulated wearable in another process reached over a TCP HCI transport."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_stream import LABS, write_tiny_onnx

pytest.importorskip("bleak")
pytest.importorskip("bumble")

from anyecg_edge.firmware_bridge import polar  # noqa: E402
from anyecg_edge.firmware_bridge.bumble_backend import (  # noqa: E402
    BumbleClientBackend,
    BumbleScannerBackend,
)
from anyecg_edge.firmware_bridge.client import BackoffPolicy, WearableClient  # noqa: E402
from anyecg_edge.firmware_bridge.faults import FaultSpec  # noqa: E402
from anyecg_edge.firmware_bridge.frames import DeviceError  # noqa: E402
from anyecg_edge.firmware_bridge.profiles import PolarH10Profile  # noqa: E402
from anyecg_edge.firmware_bridge.simulator import SimLink, SimulatedWearable  # noqa: E402
from bleak import BleakClient, BleakScanner  # noqa: E402

from anyecg_edge.io import read_record  # noqa: E402
from anyecg_edge.runtime import load_model  # noqa: E402
from anyecg_edge.stream.engine import StreamEngine  # noqa: E402
from anyecg_edge.stream.sources import SourceSpec, run_ble  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from anyecg_edge.cli import main; main()"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def model(model_path):
    return load_model(model_path, threads=1)


@pytest.fixture(scope="module")
def record_path(shared_data) -> Path:
    return shared_data / "mitdb" / "100"


def _wearable(record_path, profile="polar", faults="", speed=40.0, **kw) -> SimulatedWearable:
    return SimulatedWearable.from_record(
        profile, read_record(record_path), faults=FaultSpec.parse(faults), speed=speed, **kw
    )


def _stream(model, record_path, profile, *, faults="", speed=40.0, duration=40.0, hop=1.0, **kw):
    """Run a sim source through the engine; returns (outputs, summary, info, handles)."""
    out: list[dict] = []
    handles: dict = {}
    engine = StreamEngine(model, hop_s=hop, sink=out.append).start()
    info = asyncio.run(
        run_ble(
            SourceSpec.parse(f"sim-{profile}:{record_path}"), engine, speed=speed,
            duration_s=duration, faults=FaultSpec.parse(faults), keep_blocks=True,
            on_ready=handles.update, **kw,
        )
    )  # fmt: skip
    return out, engine.close(), info, handles


def _check_exact(handles, *, max_lost_per_link_loss=25):
    """Every received sample was sent, once, in order, with its own value; consecutive
    blocks of a segment are consecutive device frames; nothing intact was lost except
    what was in flight when a link dropped (a few ms of frames at 60x speed), and every
    lost frame lies in a reported gap (a segment boundary), never silently stitched."""
    wearable, blocks = handles["wearable"], handles["pipeline"].blocks
    sent = sorted(set(wearable.sent_log))  # device order, duplicates once
    j, matched = 0, []
    for b in blocks:
        while j < len(sent) and not np.array_equal(wearable.record_codes(*sent[j]), b.codes):
            j += 1
        assert j < len(sent), (
            f"block {len(matched)} (segment {b.segment}, index {b.seg_index}) matches no "
            f"frame sent after {matched[-1:]}"
        )
        matched.append(sent[j])
        j += 1
    for (f1, n1), (f2, _), b1, b2 in zip(matched, matched[1:], blocks, blocks[1:], strict=False):
        if b1.segment == b2.segment:
            assert f2 == f1 + n1, "a segment is not contiguous on the device"
    lost = sorted(set(sent) - set(matched))
    assert len(lost) <= max_lost_per_link_loss * wearable.stats.link_losses
    seg_of = {m: b.segment for m, b in zip(matched, blocks, strict=True)}
    for f in lost:
        before = [m for m in matched if m < f]
        after = [m for m in matched if m > f]
        if before and after:
            assert seg_of[before[-1]] != seg_of[after[0]], f"frame {f} lost without a gap"
    return matched


def _events(out, kind):
    return [o for o in out if o.get("event") == kind]


def _windows(out):
    return [o for o in out if "event" not in o]


# --- bleak over bumble ----------------------------------------------------------------------
def test_scan_connect_read_through_bleak(record_path):
    async def main():
        wearable = _wearable(record_path)
        async with SimLink(wearable) as link:
            found = await BleakScanner.discover(
                0.3, return_adv=True, backend=BumbleScannerBackend, bumble_device=link.central
            )
            (device, adv), *_ = found.values()
            assert adv.local_name == "Polar H10 A1B2C3D4"
            assert "0000180d-0000-1000-8000-00805f9b34fb" in adv.service_uuids
            async with BleakClient(
                device, backend=BumbleClientBackend, bumble_device=link.central
            ) as client:
                assert client.mtu_size == 247
                assert client.services.get_service(polar.SERVICE_UUID) is not None
                # a read of the control point returns the stale '0f 05 00', not a reply
                assert bytes(await client.read_gatt_char(polar.CONTROL_UUID)) == b"\x0f\x05\x00"
            return wearable.stats.connections

    assert asyncio.run(main()) == 1


@pytest.mark.parametrize("profile", ["polar", "movesense", "anyecg"])
def test_clean_stream_is_exact(model, record_path, profile):
    out, s, info, handles = _stream(model, record_path, profile, duration=40.0)
    matched = _check_exact(handles)
    assert len(matched) == len(set(handles["wearable"].sent_log)) > 0  # nothing lost
    assert not _events(out, "gap") and s["skipped_gap"] == 0
    assert info["decoder"]["malformed"] == 0
    # one window per second from the first full 10 s on (how much of the 40 s the link
    # setup takes depends on the machine's load at 40x speed): each scored or, when
    # inference falls behind 40x real time on a loaded machine, dropped with a `drop` event
    # (4 of 29 under a CI run's load) - never lost unsaid
    t = [w["t"] for w in _windows(out)]
    dropped = [e["t"] for e in _events(out, "drop")]
    assert s["windows"] == s["accepted"] == len(t) >= 15 and s["dropped"] == len(dropped)
    every = sorted(t + dropped)
    assert every == pytest.approx([every[0] + k for k in range(round(every[-1] - every[0]) + 1)])
    assert info["fs_estimated_hz"] == pytest.approx(info["fs_true_hz"], rel=2e-4)
    hr = np.median([w["quality"]["heart_rate_bpm"] for w in _windows(out)])
    assert 65 < hr < 85  # record 100 at ~75 bpm, whatever the device rate


# --- the standard Heart Rate and Battery services (issue 16 item 4) --------------------------
def test_heart_rate_and_battery_over_gatt(model, record_path):
    """The simulated H10 offers 0x180D/0x2A37 and 0x2A19 on its GATT server; the central
    subscribes (again after a reconnect) and the stream logs one heart_rate record per
    device second with the RR intervals of the device's own beats, exactly, and the
    battery level at each connect. Beats while the link is down are lost with their
    notifications, never sent late in a burst."""
    out, s, info, handles = _stream(
        model, record_path, "polar", duration=30.0, faults="disconnect=15"
    )
    (connected,) = _events(out, "connected")
    (reconnect,) = _events(out, "reconnect")
    assert connected["battery_pct"] == reconnect["battery_pct"] == 80
    hr = _events(out, "heart_rate")
    # one a second of device time while linked (the setup and the outage take a few of 30)
    assert 15 <= len(hr) <= 30 and s["events"]["heart_rate"] == len(hr)
    assert all("t" in r and "t_utc" in r and r["contact"] is True for r in hr)
    assert 65 <= np.median([r["hr_bpm"] for r in hr]) <= 85  # record 100 at ~75 bpm
    # The RR intervals received on each connection, in the protocol's 1/1024 s, are a run of
    # the intervals between the R peaks of the signal the device samples: none lost, none
    # invented, none from the outage.
    wearable = handles["wearable"]
    beats = wearable.peripheral.heart_rate.beats()
    truth = [round(d * 1024 / wearable.fs_true) for d in np.diff(beats)]
    runs = []
    for linked in (lambda r: r["t"] < reconnect["t"], lambda r: r["t"] >= reconnect["t"]):
        got = [round(ms * 1.024) for r in hr if linked(r) for ms in r["rr_ms"]]
        assert len(got) >= 5
        starts = [i for i in range(len(truth) - len(got) + 1) if truth[i : i + len(got)] == got]
        assert starts, f"RR intervals {got[:5]}... are not a run of the device's beats"
        runs.append((starts[0], len(got)))
    (i0, n0), (i1, _) = runs
    assert i1 > i0 + n0  # the beats of the outage were skipped, not delivered late


@pytest.mark.parametrize("profile", ["movesense", "anyecg"])
def test_no_heart_rate_where_not_offered(model, record_path, profile):
    out, s, _info, _handles = _stream(model, record_path, profile, duration=12.0, speed=60)
    assert _events(out, "connected") and not _events(out, "heart_rate")
    (connected,) = _events(out, "connected")
    # AnyECG reports its battery in its own config record; Movesense offers none
    assert connected.get("battery_pct") == (80 if profile == "anyecg" else None)


# --- the fault scenario -------------------------------------------------------------
@pytest.mark.parametrize("profile", ["polar", "anyecg", "movesense"])
def test_drops_and_disconnects(model, record_path, profile):
    out, s, info, handles = _stream(
        model, record_path, profile, faults="drop=0.02,disconnect=45,seed=1", speed=60, duration=120
    )
    _check_exact(handles)
    reconnects = _events(out, "reconnect")
    gaps = _events(out, "gap")
    assert len(reconnects) == 2 and len(_events(out, "disconnect")) == 2  # at 45 s and 90 s
    assert sum(g["reason"] == "disconnect" for g in gaps) == 2
    assert any(g["reason"] in ("sequence", "timestamp") for g in gaps)  # the dropped packets
    assert len(gaps) == s["events"]["gap"] == info["sequencer"]["gap"]
    # windows keep coming after a reconnect; none spans a gap
    windows = _windows(out)
    # Every hop position is either scored or skipped at a gap. How many are scored depends on
    # where the drops fall: a Movesense frame is 16 samples, so 2 % drops leave only ~20 % of
    # its 10 s windows gap-free (13-16 of ~110 measured) - a fixed "> 15" was flaky.
    assert s["windows"] + s["skipped_gap"] >= (s["stream_s"] - 10.0) / 1.0 - 5
    assert s["windows"] >= 5
    assert any(w["t_start"] >= reconnects[0]["t"] for w in windows)
    for g in gaps:
        t_gap = g["t"]
        assert not any(w["t_start"] < t_gap < w["t"] - 0.01 for w in windows)
    if profile == "anyecg":  # sequence numbers: gap sizes are exact
        assert all(g["missing_samples"] % 75 == 0 for g in gaps if g["reason"] == "sequence")


def test_silence_watchdog_forces_reconnect(model, record_path):
    # the device stops sending at 30 s while the link stays up (never reported by the OS)
    # (speed 10: the watchdog's 1 s wall-clock floor is 10 s of stream)
    out, s, info, _ = _stream(model, record_path, "polar", faults="stall=30", duration=60, speed=10)
    silence = _events(out, "silence")
    assert len(silence) == 1 and silence[0]["silent_s"] >= 5.0
    assert len(_events(out, "reconnect")) == 1
    assert max(w["t"] for w in _windows(out)) > 55
    assert info["client"]["silences"] == 1


def test_clock_drift_and_jumps(model, record_path):
    # Polar: a device running 308 ppm fast (130.04 Hz), clock jumping +1.5 s at 25 s
    out, s, info, _ = _stream(model, record_path, "polar", faults="drift=308,jump=25", duration=60)
    assert info["fs_true_hz"] == pytest.approx(130.04, abs=0.001)
    assert info["fs_estimated_hz"] == pytest.approx(130.04, rel=1e-4)
    gaps = _events(out, "gap")  # no sequence numbers: a forward jump reads as a gap
    assert [g["reason"] for g in gaps] == ["timestamp", "timestamp"]
    assert gaps[0]["duration_s"] == pytest.approx(1.5, abs=0.02)
    # AnyECG: sequence numbers say the samples are continuous, only the clock moved
    out, s, info, handles = _stream(model, record_path, "anyecg", faults="jump=25", duration=60)
    assert len(_events(out, "clock_jump")) == 2 and not _events(out, "gap")
    t = [w["t"] for w in _windows(out)]
    # Contiguous windows: none skipped at a gap; a window dropped by backpressure (a busy
    # machine running the sim at 40x) is counted, never silently missing.
    assert s["skipped_gap"] == 0 and len(t) >= 35
    assert len(t) + s["dropped"] >= round(t[-1] - t[0]) + 1
    assert s["dropped"] > 0 or np.allclose(np.diff(t), 1.0)
    _check_exact(handles)


def test_corrupted_duplicated_reordered_packets(model, record_path):
    faults = "dup=0.05,reorder=0.05,corrupt=0.03,seed=4"
    out, s, info, handles = _stream(model, record_path, "anyecg", faults=faults, duration=60)
    injected = handles["wearable"].injector.counts
    assert info["decoder"]["malformed"] == injected["corrupted"] > 0
    assert len(_events(out, "malformed")) == injected["corrupted"]
    assert info["sequencer"]["duplicate"] == injected["duplicated"] > 0
    # Exact (issue 14): each counted reorder is an injected one; an injected swap is lost
    # to view only when one of its two frames was corrupted (dropped as malformed).
    counted = info["sequencer"]["reordered"]
    assert injected["reordered"] - injected["corrupted"] <= counted <= injected["reordered"]
    assert counted > 0
    _check_exact(handles)  # (a corrupted frame is lost: its hole is a gap, nothing else)


@pytest.mark.parametrize("profile", ["polar", "movesense"])
def test_cut_packets_without_crc_are_gaps(model, record_path, profile):
    # No CRC: a notification cut on a sample boundary still decodes. The stream's frame
    # length rejects every cut one (a malformed event), and its hole is a gap; nothing is
    # stitched on silently.
    # About 5 cut frames in 40 s; the seeds cut on a sample boundary the first frame after
    # the start (polar seed 66: to 34 samples) and frames short by 3 and by 1 sample
    # (movesense seed 1: the 14th and 90th), which the sequencer's tolerance would hide.
    faults = {"polar": "cut=0.08,seed=66", "movesense": "cut=0.015,seed=1"}[profile]
    out, s, info, handles = _stream(model, record_path, profile, faults=faults)
    injected = handles["wearable"].injector.counts
    assert info["decoder"]["malformed_by_reason"] == {"truncated": injected["cut"]}
    assert len(_events(out, "malformed")) == injected["cut"] > 0
    assert _events(out, "gap") and s["stream_s"] > 20  # the stream goes on
    _check_exact(handles)


def test_mtu_too_small_is_a_clear_error(record_path):
    async def main():
        wearable = _wearable(record_path)
        async with SimLink(wearable) as link:
            client = WearableClient(
                link.address, PolarH10Profile(), on_data=lambda *_: None, on_event=events.append,
                backend=BumbleClientBackend,
                backend_kwargs={"bumble_device": link.central, "mtu": 23},
                policy=BackoffPolicy(initial_s=0.01),
            )  # fmt: skip
            await client.run(asyncio.Event())

    events: list[dict] = []
    with pytest.raises(DeviceError, match="MTU"):
        asyncio.run(main())
    assert [e["event"] for e in events] == ["connect_failed", "connect_failed"]


# --- CLI ------------------------------------------------------------------------------------
def test_cli_sim_anyecg_with_faults(model_path, record_path, tmp_path):
    from anyecg_edge.cli import cli

    out = tmp_path / "s.jsonl"
    res = CliRunner().invoke(
        cli,
        ["stream", "--source", f"sim-anyecg:{record_path}", "--model", str(model_path),
         "--hop", "1", "--duration", "100", "--speed", "25", "--faults", "drop=0.02,disconnect=45",
         "--jsonl", str(out), "--no-live"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    kinds = [x.get("event") for x in lines]
    assert "gap" in kinds and kinds.count("reconnect") == 2
    windows = [x for x in lines if "latency_ms" in x]
    # Each reconnect costs wall-clock time, i.e. speed x that much stream: at --speed 50 a
    # loaded machine lost enough to end with 19 windows; 25 halves the loss.
    assert len(windows) > 15 and set(windows[-1]["labs"]) == set(LABS)
    assert lines[-1]["summary"]["source_info"]["transport"].startswith("bumble")
    assert "reconnect 2" in res.output


def test_cli_sim_source_reads_its_record_once(model_path, record_path, tmp_path, monkeypatch):
    """`stream --source sim-...` reads the record up front (its errors before any setup) and
    hands it to the simulated wearable: one read, one "lead chosen" line (was two)."""
    from anyecg_edge.cli import cli
    from anyecg_edge.stream import sources

    reads: list[str] = []
    real_read = sources.read_record

    def counted(path, **kwargs):
        reads.append(str(path))
        return real_read(path, **kwargs)

    monkeypatch.setattr(sources, "read_record", counted)
    out = tmp_path / "once.jsonl"
    res = CliRunner().invoke(
        cli,
        ["stream", "--source", f"sim-polar:{record_path}", "--model", str(model_path),
         "--duration", "12", "--speed", "20", "--jsonl", str(out), "--no-live"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert reads == [str(record_path)]
    assert json.loads(out.read_text().splitlines()[-1])["summary"]["windows"] >= 1


def test_cli_sim_source_from_a_csv_takes_fs(model_path, record_path, tmp_path):
    """A CSV carries no rate: `--fs` gives it for sim sources too (it was dropped for them:
    "CSV files carry no sampling rate; pass fs (--fs)" although --fs was on the line)."""
    from anyecg_edge.cli import cli

    x_mv = read_record(record_path).signal_mv[: 360 * 20]
    csv = tmp_path / "mit.csv"
    csv.write_text("MLII\n" + "\n".join(f"{v:.4f}" for v in x_mv) + "\n")
    out = tmp_path / "csv.jsonl"
    res = CliRunner().invoke(
        cli,
        ["stream", "--source", f"sim-polar:{csv}", "--fs", "360", "--model", str(model_path),
         "--duration", "12", "--speed", "20", "--jsonl", str(out), "--no-live"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text().splitlines()[-1])["summary"]["windows"] >= 1


def test_ctrl_c_stops_cleanly(model_path, record_path, tmp_path):
    out = tmp_path / "c.jsonl"
    proc = subprocess.Popen(
        [*CLI, "stream", "--source", f"sim-polar:{record_path}",
         "--model", str(model_path), "--speed", "10", "--jsonl", str(out), "--no-live"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 30
    while time.time() < deadline and (not out.exists() or '"latency_ms"' not in out.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stdout
    summary = json.loads(out.read_text().splitlines()[-1])["summary"]
    assert summary["interrupted"] and summary["windows"] >= 1
    assert summary["source_info"]["client"]["connects"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_standalone_simulator_over_tcp_hci(model_path, record_path, tmp_path):
    """`ble simulate` in its own process serves its virtual radio over TCP HCI; `ble scan`
    and `stream polar:ADDR --hci ...` reach it like a real device."""
    from anyecg_edge.cli import cli

    port = _free_port()
    sim = subprocess.Popen(
        [*CLI, "ble", "simulate", "--profile", "polar",
         "--record", str(record_path), "--serve", f"tcp-server:_:{port}", "--speed", "5",
         "--duration", "300"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "ready:" in sim.stdout.readline()
        hci = f"tcp-client:127.0.0.1:{port}"
        runner = CliRunner()
        res = runner.invoke(cli, ["ble", "scan", "--hci", hci, "--timeout", "2", "--json"])
        assert res.exit_code == 0, res.output
        found = json.loads(res.output)
        assert found[0]["profile"] == "polar" and found[0]["name"].startswith("Polar H10")
        out = tmp_path / "d.jsonl"
        res = runner.invoke(
            cli,
            ["stream", "--source", found[0]["source"], "--hci", hci, "--model", str(model_path),
             "--duration", "6", "--jsonl", str(out), "--no-live"],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        summary = json.loads(out.read_text().splitlines()[-1])["summary"]
        assert summary["windows"] >= 5 and summary["source_info"]["transport"] == f"bumble:{hci}"
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=20)
    assert sim.returncode == 0


def test_ble_scan_without_adapter_is_one_line():
    from anyecg_edge.cli import cli

    res = CliRunner().invoke(cli, ["ble", "scan", "--timeout", "0.2"])
    if res.exit_code == 0:
        pytest.skip("this machine has a working Bluetooth adapter")
    assert "Bluetooth is not available" in res.output and "Traceback" not in res.output


def test_link_drop_during_heart_rate_subscription_keeps_streaming(model, record_path, monkeypatch):
    """A link that drops while the Heart Rate subscription is in flight cancels the GATT
    request: a CancelledError that is not ours. The stream goes on (it reached the CLI as
    an internal error, exit 70, on an emulated arm64 machine); heart rate resumes at the
    next connection."""
    from anyecg_edge.firmware_bridge import client as client_mod

    real = client_mod.heart_rate.subscribe
    calls = []

    async def cut_first(client, on_measurement):
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.CancelledError  # what bleak/bumble raise for a request cut short
        return await real(client, on_measurement)

    monkeypatch.setattr(client_mod.heart_rate, "subscribe", cut_first)
    out, s, _info, handles = _stream(
        model, record_path, "polar", duration=30.0, faults="disconnect=15"
    )
    (reconnect,) = _events(out, "reconnect")
    hr = _events(out, "heart_rate")
    assert len(calls) == 2 and hr and all(r["t"] >= reconnect["t"] for r in hr)
    # ECG on both links, nothing lost but the frames in flight at the drop. (Not a window
    # count: at speed 40 each connection's set-up costs 40x its wall time of the 30 s
    # record, which a loaded machine stretches; 4 windows instead of 5 under load.)
    blocks = handles["pipeline"].blocks
    assert blocks[0].segment < blocks[-1].segment and blocks[-1].t_first_s > reconnect["t"]
    _check_exact(handles)
    assert s["windows"] >= 1


def test_acl_packet_after_a_simulated_link_loss_is_not_a_warning(caplog):
    """A packet in flight when the simulated link drops reaches bumble's controller after
    the connection is gone (seen twice in one demo stream): bumble warns "!!! no connection
    for handle". The stream reports the loss itself, so that warning is shown only with
    bumble's debug logging on."""
    from bumble import hci
    from bumble.controller import Controller
    from bumble.link import LocalLink

    async def make() -> Controller:  # bumble's controller wants a running loop
        return Controller("wearable", link=LocalLink(), public_address="F0:F0:F0:F0:F0:F0")

    ctrl = asyncio.run(make())
    late = hci.HCI_AclDataPacket(
        connection_handle=1, pb_flag=2, bc_flag=0, data_total_length=1, data=b"\x00"
    )
    with caplog.at_level(logging.WARNING, logger="bumble.controller"):
        ctrl.on_hci_acl_data_packet(late)
        ctrl.on_hci_event_packet(late)  # other controller warnings still come through
    messages = [r.getMessage() for r in caplog.records if r.name == "bumble.controller"]
    assert messages == ["!!! unexpected event packet"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="bumble.controller"):
        ctrl.on_hci_acl_data_packet(late)
    assert [r.getMessage() for r in caplog.records] == ["!!! no connection for handle 0x0001"]
