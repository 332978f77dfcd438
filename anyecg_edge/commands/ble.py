"""`anyecg-edge ble ...`: scan for wearables, run a simulated wearable (issue 7)."""

from __future__ import annotations

import click

from anyecg_edge.cli import Group, not_built


@click.group(cls=Group)
def ble() -> None:
    """Bluetooth LE: scan for wearables, run a simulated wearable."""


@ble.command("scan")
def ble_scan() -> None:
    """Scan for Polar H10 / Movesense / AnyECG-profile wearables."""
    not_built("ble scan")


@ble.command("simulate")
def ble_simulate() -> None:
    """Run a simulated wearable (a real GATT peripheral on bumble's virtual link)."""
    not_built("ble simulate")


COMMANDS = [ble]
