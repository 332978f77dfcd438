"""What every profile's decoder produces: one `Frame` per notification (numpy only).

A frame carries the raw sample codes exactly as sent (so tests can check bit-exactness
against the replayed source), their scale to microvolts, and the device's own timing:
a timestamp of its first or last sample and, where the profile has one, the index of
its first sample (a sequence number counted in samples).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from anyecg_edge.stream.types import FrameFlags  # re-exported: its old home

__all__ = ["DecodeStats", "DeviceError", "Frame", "FrameError", "FrameFlags"]


class FrameError(ValueError):
    """A notification is not a valid frame of the profile; the message is one line.

    ``reason`` is a short stable code (e.g. 'truncated', 'crc', 'frame_type') used to
    count malformed frames by cause.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class DeviceError(OSError):
    """A wearable cannot be reached, refuses a command or breaks its protocol (one line)."""


@dataclass(frozen=True)
class Frame:
    """One decoded ECG notification.

    ``codes``: int64 sample codes as transmitted; ``uv_per_code``: their scale (1.0 when
    the device sends microvolts). ``t_ns``: device timestamp in ns of the sample named
    by ``t_ref`` ('first' or 'last' sample of the frame), or None. ``seq``: index of the
    first sample in the device's sample counter (wrapping at ``seq_modulo``), or None
    when the profile has no sequence numbers. ``t_modulo_ns``: wrap period of the
    timestamp (None: never wraps).
    """

    codes: np.ndarray
    uv_per_code: float
    t_ns: int | None
    t_ref: Literal["first", "last"]
    seq: int | None = None
    seq_modulo: int | None = None
    t_modulo_ns: int | None = None
    flags: FrameFlags = FrameFlags.NONE

    @property
    def n(self) -> int:
        return int(self.codes.shape[0])

    @property
    def samples_mv(self) -> np.ndarray:
        return self.codes.astype(np.float64) * (self.uv_per_code * 1e-3)


@dataclass
class DecodeStats:
    """Counts of accepted and malformed notifications (malformed ones by reason)."""

    frames: int = 0
    samples: int = 0
    bytes: int = 0
    malformed: Counter = field(default_factory=Counter)

    @property
    def n_malformed(self) -> int:
        return int(sum(self.malformed.values()))

    def to_dict(self) -> dict:
        return {
            "frames": self.frames,
            "samples": self.samples,
            "bytes": self.bytes,
            "malformed": self.n_malformed,
            "malformed_by_reason": dict(sorted(self.malformed.items())),
        }
