"""Device-side frame encoders: what each wearable family puts on air for a run of
samples (used by the simulated wearable, and by tests as the ground truth).

Device time: sample ``i`` is taken at ``t_base + i / fs_true`` plus any clock jumps
(``t_offset_ns``); timestamps are stamped from that clock, so a device whose real rate
differs from nominal (``fs_true``) shows it in its timestamps, as the H10 does.
"""

from __future__ import annotations

import numpy as np
from anyecg_edge.firmware_bridge import anyecg, movesense, polar

__all__ = ["FrameEncoder", "mv_to_codes"]

# Unset device clocks: the H10 counts from 2000-01-01 but often starts in 2019.
POLAR_T_BASE_NS = 599_616_000 * 1_000_000_000
MOVESENSE_T_BASE_MS = 1_234_567
ANYECG_T_BASE_US = 5_000_000


def mv_to_codes(x_mv: np.ndarray, uv_per_code: float, bits: int) -> np.ndarray:
    """Quantize mV to signed integer codes (NaN -> 0), clipped to the format's range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.round(np.nan_to_num(np.asarray(x_mv, dtype=np.float64)) * 1000.0 / uv_per_code)
    return np.clip(codes, lo, hi).astype(np.int64)


class FrameEncoder:
    """Encode runs of sample codes as one profile's notifications."""

    def __init__(
        self,
        profile: str,
        fs_true: float,
        *,
        samples_per_frame: int | None = None,
        anyecg_format: int = 1,
        seq_start: int = 0,
    ) -> None:
        self.profile = profile
        self.fs_true = float(fs_true)
        self.anyecg_format = anyecg_format
        self.seq_start = seq_start
        default = {
            "polar": polar.SAMPLES_PER_FRAME,
            "movesense": movesense.SAMPLES_PER_FRAME,
            "anyecg": anyecg.max_samples(247, anyecg_format),
        }
        if profile not in default:
            raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(default)}")
        self.samples_per_frame = int(samples_per_frame or default[profile])
        self.bits = {"polar": 24, "movesense": 32, "anyecg": 8 * anyecg.FORMATS[anyecg_format]}[
            profile
        ]

    def t_ns(self, index: float, t_offset_ns: int = 0) -> int:
        return round(index * 1e9 / self.fs_true) + t_offset_ns

    def encode(
        self, codes: np.ndarray, first_index: int, *, t_offset_ns: int = 0, flags: int = 0
    ) -> bytes:
        n = len(codes)
        if self.profile == "polar":
            t_last = POLAR_T_BASE_NS + self.t_ns(first_index + n - 1, t_offset_ns)
            return polar.encode_ecg_frame(codes, t_last)
        if self.profile == "movesense":
            t_first_ms = MOVESENSE_T_BASE_MS + self.t_ns(first_index, t_offset_ns) // 1_000_000
            return movesense.encode_ecg_frame(codes, t_first_ms)
        t_us = ANYECG_T_BASE_US + self.t_ns(first_index, t_offset_ns) // 1000
        return anyecg.encode_frame(
            codes,
            seq=self.seq_start + first_index,
            t_us=t_us,
            fmt=self.anyecg_format,
            flags=flags,
        )
