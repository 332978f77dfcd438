"""bleak-retry-connector as the connect step of WearableClient (issue 13 item 5), over
bumble's virtual link: ``establish_connection`` builds the client with our bumble backend
(``backend=`` and ``bumble_device=`` go through its ``**kwargs``), retries a connect the
stack reports as failed-but-passing within one attempt of our loop, and hands back what
it must not retry (a device never reached, Bluetooth unusable) at once. Without the
package the ble path ends with one line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("bleak")
pytest.importorskip("bumble")
pytest.importorskip("bleak_retry_connector")

from anyecg_edge.firmware_bridge.bumble_backend import BumbleClientBackend  # noqa: E402
from anyecg_edge.firmware_bridge.client import WearableClient  # noqa: E402
from anyecg_edge.firmware_bridge.faults import FaultSpec  # noqa: E402
from anyecg_edge.firmware_bridge.profiles import PolarH10Profile  # noqa: E402
from anyecg_edge.firmware_bridge.simulator import SimLink, SimulatedWearable  # noqa: E402

from anyecg_edge.io import read_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record(shared_data):
    return read_record(shared_data / "mitdb" / "100")


def _run_client(record, *, drop_first_s: float | None, run_s: float = 1.5, **client_kw):
    """Stream the simulated H10 for ``run_s`` wall seconds through WearableClient; with
    ``drop_first_s`` the wearable loses the radio link of its first connection that many
    seconds after it (0: during the central's MTU exchange / discovery)."""
    events: list[dict] = []
    packets: list[int] = []

    async def main():
        wearable = SimulatedWearable.from_record("polar", record, faults=FaultSpec(), speed=10)
        async with SimLink(wearable) as link:
            seen = []

            def on_connection(conn):
                seen.append(conn)
                if drop_first_s is not None and len(seen) == 1:
                    asyncio.get_running_loop().call_later(drop_first_s, link.lose_link, conn)

            link.peripheral.on("connection", on_connection)
            client = WearableClient(
                link.address, PolarH10Profile(), on_data=lambda d, _t: packets.append(len(d)),
                on_event=events.append, backend=BumbleClientBackend,
                backend_kwargs={"bumble_device": link.central}, time_scale=0.1, **client_kw,
            )  # fmt: skip
            stop = asyncio.Event()
            sim_stop = asyncio.Event()
            sim = asyncio.create_task(wearable.run(sim_stop, None))
            task = asyncio.create_task(client.run(stop))
            await asyncio.sleep(run_s)
            stop.set()
            await task
            sim_stop.set()
            await sim
            return client, wearable, len(seen)

    client, wearable, connections = asyncio.run(main())
    link_events = [e["event"] for e in events if e["event"] != "heart_rate"]
    return client, wearable, connections, link_events, packets


def test_connects_and_streams_through_establish_connection(record):
    client, _, connections, link_events, packets = _run_client(record, drop_first_s=None)
    assert link_events == ["connected"] and connections == 1
    assert client.counts["connect_tries"] == 1 and client.counts["failed_attempts"] == 0
    assert len(packets) > 5  # ECG frames arrived


def test_link_dropped_during_setup_is_retried_by_the_connector(record):
    """The wearable drops the first link while the central discovers its services: the
    bumble backend reports it as bleak's BlueZ backend does ("failed to discover
    services, device disconnected"), establish_connection retries it within the same
    attempt (its backoff, 0.1 s), and our loop sees one connect: no connect_failed, no
    backoff of its own, and no stale link-loss from the dropped try."""
    client, _, connections, link_events, packets = _run_client(record, drop_first_s=0.0)
    assert connections == 2  # the wearable saw both connections
    assert client.counts["connect_tries"] == 2
    assert client.counts["failed_attempts"] == 0
    assert link_events == ["connected"]  # no connect_failed, no disconnect
    assert len(packets) > 5


def test_the_same_drop_after_setup_is_our_loops_reconnect(record):
    """Control for the test above: a drop once streaming is a link loss, which
    establish_connection does not see; our loop reconnects (disconnect + reconnect)."""
    client, _, connections, link_events, _ = _run_client(record, drop_first_s=0.5, run_s=2.5)
    assert connections == 2
    assert link_events == ["connected", "disconnect", "reconnect"]
    assert client.counts["connect_tries"] == 2 and client.counts["reconnects"] == 1


def test_absent_device_is_not_retried_by_the_connector(record):
    """A connect that reaches nobody within the limit is not one of the connector's
    retries (each would take the whole limit again): one try, then our time limit."""
    events: list[dict] = []

    async def main():
        wearable = SimulatedWearable.from_record("polar", record, faults=FaultSpec())
        async with SimLink(wearable) as link:
            client = WearableClient(
                "AA:BB:CC:DD:EE:FF", PolarH10Profile(), on_data=lambda *_: None,
                on_event=events.append, backend=BumbleClientBackend,
                backend_kwargs={"bumble_device": link.central}, find_timeout_s=1.0,
                connect_timeout_s=1.0,
            )  # fmt: skip
            try:
                await client.run(asyncio.Event())
            finally:
                tries.append(client.counts["connect_tries"])

    tries: list[int] = []
    t0 = time.perf_counter()
    with pytest.raises(Exception, match=r"AA:BB:CC:DD:EE:FF: device not found within 1 s"):
        asyncio.run(main())
    assert 0.9 < time.perf_counter() - t0 < 3.0
    assert tries == [1] and events == []


def test_missing_connector_is_one_line(tmp_path):
    """The ble extra requires bleak-retry-connector: without it a BLE stream ends with one
    line naming the package and the install command (exit 6, device)."""
    from test_stream import write_tiny_onnx

    model = write_tiny_onnx(tmp_path / "tiny.onnx")
    code = (
        "import sys; sys.modules['bleak_retry_connector'] = None  # as if not installed\n"
        "from anyecg_edge.cli import main; main()"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, "-q", "stream", "--source", "polar:AA:BB:CC:DD:EE:FF",
         "--model", str(model), "--no-live"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 6, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert 'BLE needs bleak-retry-connector: pip install "anyecg-edge[ble]"' in lines[0]


def test_ble_extra_closure_pulls_no_training_stack(repo_root):
    """The ble extra (bleak, bumble, bleak-retry-connector) and everything they require,
    as installed here, stay off the training/export stack (the device install is
    `pip install ".[edge,ble]"`; test_install builds the `.[edge]` venv)."""
    from importlib import metadata

    import tomllib
    from packaging.requirements import Requirement
    from test_install import FORBIDDEN

    extras = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    ble = [Requirement(r) for r in extras["optional-dependencies"]["ble"]]
    assert "bleak-retry-connector" in {r.name for r in ble}
    seen: set[str] = set()
    todo = [r for r in ble if r.marker is None or r.marker.evaluate()]
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for raw in metadata.requires(req.name) or []:
            sub = Requirement(raw)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    assert {"bleak", "bumble", "bleak-retry-connector", "bluetooth-adapters"} <= seen
    assert not seen & FORBIDDEN, sorted(seen & FORBIDDEN)
