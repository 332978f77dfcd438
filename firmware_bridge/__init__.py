"""BLE bridge (installed as ``anyecg_edge.firmware_bridge``): the wearable families (one
module each in ``devices/``: codec, central profile, encoder facts, simulator peripheral;
the open AnyECG GATT profile among them), a sequencer that turns notifications into an
ordered gap-marked sample stream (the `Block` / `SeqEvent` types of
``anyecg_edge.stream.types``), fault injection and the transports.

Codecs, profiles and the sequencer need numpy only. The transports import their BLE
library lazily: ``client`` (real hardware, bleak), ``bumble_backend`` and
``simulator`` (bumble's virtual link) need the ``ble`` extra.
"""

from anyecg_edge.firmware_bridge.faults import FaultInjector, FaultSpec
from anyecg_edge.firmware_bridge.frames import (
    DecodeStats,
    DeviceError,
    Frame,
    FrameError,
    FrameFlags,
)
from anyecg_edge.firmware_bridge.profiles import (
    PROFILES,
    AnyEcgProfile,
    FrameDecoder,
    MovesenseProfile,
    PolarH10Profile,
    Profile,
    get_profile,
    profile_for_advertisement,
)
from anyecg_edge.firmware_bridge.sequencer import Block, SeqEvent, Sequencer

__all__ = [
    "PROFILES",
    "AnyEcgProfile",
    "Block",
    "DecodeStats",
    "DeviceError",
    "FaultInjector",
    "FaultSpec",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameFlags",
    "MovesenseProfile",
    "PolarH10Profile",
    "Profile",
    "SeqEvent",
    "Sequencer",
    "get_profile",
    "profile_for_advertisement",
]
