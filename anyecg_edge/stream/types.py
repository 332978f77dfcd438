"""What flows into the stream engine (numpy only): `Block`s of contiguous samples and
`SeqEvent`s (gap, late, clock_jump, ...), with the `FrameFlags` a device reports.

They live here, in the stream package, so that the BLE side (`anyecg_edge.firmware_bridge`:
its decoders and sequencer produce them) depends on the stream, never the other way round;
a file replay produces the same types without any BLE code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any

import numpy as np

__all__ = ["Block", "FrameFlags", "SeqEvent"]


class FrameFlags(IntFlag):
    """Status bits a device reports with a frame (AnyECG profile; others report none)."""

    NONE = 0
    LEAD_OFF = 0x01
    BATTERY_LOW = 0x02
    # The device's time base restarted (reboot): timestamps/sequence start afresh.
    TIME_RESET = 0x04


@dataclass
class Block:
    """Contiguous samples: ``seg_index`` is the index of the first one in its segment;
    ``t_first_s`` its device time in s since the stream's first sample."""

    samples_mv: np.ndarray
    codes: np.ndarray
    segment: int
    seg_index: int
    t_first_s: float
    fs_hz: float
    arrival_ns: int
    flags: FrameFlags = FrameFlags.NONE

    @property
    def n(self) -> int:
        return int(self.samples_mv.shape[0])


@dataclass
class SeqEvent:
    """Something the consumer must know: gap, duplicate, late, clock_jump, lead_off..."""

    kind: str
    t_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        if self.t_s is not None:
            out["t"] = round(self.t_s, 4)
        out.update(self.details)
        return out
