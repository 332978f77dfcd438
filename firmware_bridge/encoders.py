"""Device-side frame encoders: what each wearable family puts on air for a run of
samples (used by the simulated wearable, and by tests as the ground truth). The
per-family facts (frame size, sample width, clock base, byte layout) come from the
family's module in `anyecg_edge.firmware_bridge.devices`.

Device time: sample ``i`` is taken at ``t_base + i / fs_true`` plus any clock jumps
(``t_offset_ns``); timestamps are stamped from that clock, so a device whose real rate
differs from nominal (``fs_true``) shows it in its timestamps, as the H10 does.
"""

from __future__ import annotations

import numpy as np
from anyecg_edge.firmware_bridge.devices import get_wearable

__all__ = ["FrameEncoder", "mv_to_codes"]


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
        self.wearable = get_wearable(profile)
        self.profile = profile
        self.fs_true = float(fs_true)
        self.anyecg_format = anyecg_format
        self.seq_start = seq_start
        self.samples_per_frame = int(
            samples_per_frame or self.wearable.samples_per_frame(anyecg_format)
        )
        self.bits = self.wearable.sample_bits(anyecg_format)

    def t_ns(self, index: float, t_offset_ns: int = 0) -> int:
        return round(index * 1e9 / self.fs_true) + t_offset_ns

    def encode(
        self, codes: np.ndarray, first_index: int, *, t_offset_ns: int = 0, flags: int = 0
    ) -> bytes:
        n = len(codes)
        return self.wearable.encode(
            codes,
            t_first_ns=self.t_ns(first_index, t_offset_ns),
            t_last_ns=self.t_ns(first_index + n - 1, t_offset_ns),
            seq=self.seq_start + first_index,
            fmt=self.anyecg_format,
            flags=flags,
        )
