"""`anyecg-edge ble ...`: scan for wearables, run a simulated wearable (issue 7)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

import click

from anyecg_edge.commands._group import Group
from anyecg_edge.commands._types import (
    Number,
    emit_json,
    json_option,
    json_to_stdout,
    positive,
    sim_source_options,
)

log = logging.getLogger(__name__)


class BleUnavailableError(OSError):
    """No usable Bluetooth stack/adapter (one line saying what to do instead)."""


@click.group(cls=Group)
def ble() -> None:
    """Bluetooth LE: scan for wearables, run a simulated wearable."""


@ble.command("scan")
@click.option(
    "--timeout",
    "timeout_s",
    type=Number(0.0, 3600.0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds to listen.",
)
@click.option(
    "--hci", default=None,
    help="Scan through bumble on this HCI transport (usb:0, hci-socket:0, tcp-client:HOST:PORT) "
    "instead of the OS Bluetooth stack.",
)  # fmt: skip
@click.option(
    "--all", "show_all", is_flag=True, help="List every device, not only known wearables."
)
@json_option("the devices heard")
def ble_scan(timeout_s: float, hci: str | None, show_all: bool, json_out: Path | None) -> None:
    """Scan for Polar H10 / Movesense / AnyECG-profile wearables."""
    from anyecg_edge.firmware_bridge.profiles import profile_for_advertisement

    for name in ("bumble", "bleak"):  # bleak's BlueZ-version guess would precede our error
        logging.getLogger(name).setLevel(logging.ERROR)
    found = asyncio.run(_scan(timeout_s, hci))
    rows = []
    for device, adv in found.values():
        profile = profile_for_advertisement(adv.local_name, adv.service_uuids)
        if profile is None and not show_all:
            continue
        rows.append(
            {
                "address": device.address,
                "name": adv.local_name,
                "profile": profile,
                "rssi": adv.rssi,
                "source": f"{profile}:{device.address}" if profile else None,
            }
        )
    rows.sort(key=lambda r: (r["profile"] is None, -(r["rssi"] or -999)))
    emit_json(rows, json_out)
    if json_to_stdout(json_out):
        return
    if not rows:
        click.echo(
            f"no wearables heard in {timeout_s:g} s"
            + ("" if show_all else " (--all lists every device)")
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BLE devices heard in {timeout_s:g} s")
    for col in ("address", "name", "profile", "RSSI", "stream with"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["address"], r["name"] or "", r["profile"] or "", str(r["rssi"]),
            f"--source {r['source']}" + (f" --hci {hci}" if hci else "") if r["source"] else "",
        )  # fmt: skip
    Console().print(table)


async def _scan(timeout_s: float, hci: str | None) -> dict[str, Any]:
    try:
        from bleak import BleakScanner
    except ImportError:
        raise BleUnavailableError(
            'BLE needs bleak and bumble: pip install "anyecg-edge[ble]"'
        ) from None
    from anyecg_edge.firmware_bridge.client import bluetooth_unavailable_cause

    if hci is None:
        try:
            return await BleakScanner.discover(timeout_s, return_adv=True)
        except Exception as exc:  # no BlueZ / adapter / permissions
            first = (str(exc).strip().splitlines() or [""])[0]
            cause = bluetooth_unavailable_cause(exc) or (
                f"{type(exc).__name__}: {first}; check the adapter, or scan through a "
                "bumble HCI transport with --hci usb:0"
            )
            raise BleUnavailableError(f"Bluetooth is not available here: {cause}") from None
    from anyecg_edge.firmware_bridge.bumble_backend import BumbleScannerBackend, open_central

    central, transport = await open_central(hci)  # one-line error naming --hci if it fails
    try:
        return await BleakScanner.discover(
            timeout_s, return_adv=True, backend=BumbleScannerBackend, bumble_device=central
        )
    finally:
        with contextlib.suppress(Exception):
            await transport.close()


@ble.command("simulate")
@click.option(
    "--profile", type=click.Choice(["polar", "movesense", "anyecg"]), required=True,
    help="Which wearable to be (its exact GATT layout and byte format).",
)  # fmt: skip
@click.option("--record", "record_path", type=click.Path(path_type=Path), required=True, help="Recording to replay (WFDB/CSV/EDF).")  # fmt: skip
@sim_source_options(
    lead="Lead of the record (default: II/MLII, the lab models' training lead, then I).",
    fs="Sampling rate of a CSV record.",
    speed="Device clock speed x real time.",
    faults='Fault injection, e.g. "drop=0.02,disconnect=45".',
    speed_type=Number(0.0, 1e4, min_open=True),
)
@click.option(
    "--serve", default="tcp-server:_:9001", show_default=True,
    help="Expose a virtual controller on the wearable's radio through this bumble transport; "
    "receivers connect with --hci tcp-client:HOST:PORT.",
)  # fmt: skip
@click.option(
    "--transport", default=None,
    help="Run the wearable on a real controller instead (bumble transport: usb:0, "
    "hci-socket:0, serial:...): then phones and bleak see it over the air.",
)  # fmt: skip
@click.option("--duration", "duration_s", type=positive(), default=None, help="Stop after this many seconds of device time.")  # fmt: skip
@click.option("--name", default=None, help="Advertised name (default: the family's usual one).")
def ble_simulate(
    profile: str,
    record_path: Path,
    lead: str | None,
    fs: float | None,
    serve: str,
    transport: str | None,
    speed: float,
    faults: Any,
    duration_s: float | None,
    name: str | None,
) -> None:
    """Run a simulated wearable: a real GATT peripheral (bumble) replaying a recording."""
    from anyecg_edge.firmware_bridge.faults import FaultSpec
    from anyecg_edge.io import read_record

    try:
        from anyecg_edge.firmware_bridge.simulator import SimulatedWearable
    except ImportError:
        raise BleUnavailableError(
            'simulation needs bumble: pip install "anyecg-edge[ble]"'
        ) from None
    if not speed > 0:
        raise click.BadParameter("must be > 0", param_hint="--speed")
    fault_spec = faults if faults is not None else FaultSpec()
    record = read_record(record_path, lead=lead, fs=fs)
    wearable = SimulatedWearable.from_record(
        profile, record, faults=fault_spec, speed=speed, name=name
    )
    logging.getLogger("bumble").setLevel(logging.ERROR)
    stats = asyncio.run(
        _simulate(wearable, serve=serve, transport=transport, duration_s=duration_s)
    )
    click.echo(json.dumps({"simulator": stats, "injected": wearable.injector.counts}))


async def _simulate(
    wearable: Any, *, serve: str, transport: str | None, duration_s: float | None
) -> dict:
    from bumble import hci as bhci
    from bumble.device import Device
    from bumble.host import Host
    from bumble.transport import open_transport

    from anyecg_edge.firmware_bridge.simulator import PERIPHERAL_ADDRESS, SimLink

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    hint_source = f"{wearable.profile}:{PERIPHERAL_ADDRESS}"
    if transport is not None:
        t = await open_transport(transport)
        device = Device(
            name=wearable.name,
            address=bhci.Address(PERIPHERAL_ADDRESS),
            host=Host(t.source, t.sink),
        )
        wearable.attach(device)
        await device.power_on()
        await wearable.advertise()
        where, hint = f"controller {transport}", f"--source {hint_source}"
        try:
            _ready(wearable, where, hint)
            await wearable.run(stop, duration_s)
        finally:
            with contextlib.suppress(Exception):
                await t.close()
    else:
        async with SimLink(wearable, serve=serve) as link:
            client_spec = serve.replace("tcp-server:_:", "tcp-client:127.0.0.1:")
            where = f"virtual radio served on {serve}"
            hint = f"--source {hint_source} --hci {client_spec}"
            _ready(wearable, where, hint)
            del link
            await wearable.run(stop, duration_s)
    return dict(vars(wearable.stats))


def _ready(wearable: Any, where: str, hint: str) -> None:
    print(
        f"ready: simulated {wearable.profile} wearable {wearable.name!r} advertising on {where}, "
        f"{wearable.fs_true:g} Hz, speed {wearable.speed:g}x; stream it with: "
        f"anyecg-edge stream {hint} --model MODEL",
        flush=True,
    )


COMMANDS = [ble]
