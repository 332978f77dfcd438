"""Device profiles: one interface (codec + control sequence) per wearable family.

The families live in `anyecg_edge.firmware_bridge.devices` (one module each, with their
`Profile` subclasses); this module keeps the by-name lookup the client and the CLI use
(``PROFILES``, ``get_profile``, ``profile_for_advertisement``) and the generic
`FrameDecoder`. It imports no BLE library.
"""

from __future__ import annotations

from typing import Any

from anyecg_edge.firmware_bridge.devices import WEARABLES
from anyecg_edge.firmware_bridge.devices.anyecg import AnyEcgProfile
from anyecg_edge.firmware_bridge.devices.base import (
    CONTROL_TIMEOUT_S,
    RELEARN_FRAMES,
    DataCallback,
    FrameLength,
    Profile,
)
from anyecg_edge.firmware_bridge.devices.movesense import MovesenseProfile
from anyecg_edge.firmware_bridge.devices.polar import PolarH10Profile
from anyecg_edge.firmware_bridge.frames import DecodeStats, Frame, FrameError

__all__ = [
    "CONTROL_TIMEOUT_S",
    "PROFILES",
    "RELEARN_FRAMES",
    "AnyEcgProfile",
    "DataCallback",
    "FrameDecoder",
    "FrameLength",
    "MovesenseProfile",
    "PolarH10Profile",
    "Profile",
    "get_profile",
    "profile_for_advertisement",
]

PROFILES: dict[str, type[Profile]] = {name: w.profile for name, w in WEARABLES.items()}


def get_profile(name: str, **kwargs: Any) -> Profile:
    try:
        cls = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None
    return cls(**kwargs)


def profile_for_advertisement(name: str | None, service_uuids: list[str]) -> str | None:
    """Which profile an advertisement belongs to (by service UUID, then name), or None."""
    uuids = {u.lower() for u in service_uuids}
    for cls in PROFILES.values():
        if cls.service_uuid in uuids:
            return cls.name
    for cls in PROFILES.values():
        if name and name.startswith(cls.name_prefixes):
            return cls.name
    return None


class FrameDecoder:
    """Decode notifications with a profile, counting malformed ones; never raises."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.stats = DecodeStats()
        self.last_reason: str | None = None

    def feed(self, data: bytes) -> Frame | None:
        self.stats.bytes += len(data)
        try:
            frame = self.profile.decode(data)
        except FrameError as exc:
            self.stats.malformed[exc.reason] += 1
            self.last_reason = exc.reason
            return None
        self.stats.frames += 1
        self.stats.samples += frame.n
        return frame
