"""The wearable families, one module each (as bleak keeps one backend per module):

    polar       Polar H10: PMD ECG, plus the standard Heart Rate and Battery services
    movesense   Movesense: ECG over the GATT sensor-data protocol
    anyecg      the open AnyECG v1 profile (firmware_bridge/PROFILE.md)

Each module holds the family's codec, its central `Profile`, its `Wearable` facts
(encoder defaults) and its simulator `Peripheral`, and ends in ``WEARABLE``: the entry
registered here by name. Everything else (the client, the simulator's link and faults,
the encoder) looks a family up here instead of switching on its name. numpy only;
``heart_rate`` is the SIG Heart Rate / Battery service shared by families that offer it.
"""

from __future__ import annotations

from anyecg_edge.firmware_bridge.devices import anyecg, movesense, polar
from anyecg_edge.firmware_bridge.devices.base import Peripheral, Profile, Wearable

__all__ = ["WEARABLES", "Peripheral", "Profile", "Wearable", "get_wearable", "register"]

WEARABLES: dict[str, Wearable] = {}


def register(wearable: Wearable) -> Wearable:
    """Add a family under its name (a later one of the same name replaces it)."""
    WEARABLES[wearable.name] = wearable
    return wearable


def get_wearable(name: str) -> Wearable:
    """The registered family ``name``; ValueError naming the known ones otherwise."""
    try:
        return WEARABLES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(WEARABLES)}") from None


for _module in (polar, movesense, anyecg):
    register(_module.WEARABLE)
