"""Streaming latency statistics in constant memory (a log-spaced histogram)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LatencyStats"]


class LatencyStats:
    """Percentiles of a stream of latencies (ms) to ~1 % relative resolution, any count."""

    # 0.001 ms .. 1e6 ms, 200 bins per decade (ratio 1.0116 between bin edges).
    _LO, _DECADES, _PER_DECADE = -3.0, 9, 200

    def __init__(self) -> None:
        self._counts = np.zeros(self._DECADES * self._PER_DECADE + 2, dtype=np.int64)
        self.n = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.min_ms = math.inf

    def add(self, ms: float) -> None:
        ms = max(float(ms), 1e-6)
        pos = (math.log10(ms) - self._LO) * self._PER_DECADE
        i = min(max(int(pos) + 1, 0), self._counts.size - 1)
        self._counts[i] += 1
        self.n += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        self.min_ms = min(self.min_ms, ms)

    def percentile(self, p: float) -> float:
        if not self.n:
            return math.nan
        rank = max(1, math.ceil(p / 100.0 * self.n))
        i = int(np.searchsorted(np.cumsum(self._counts), rank))
        # geometric centre of the bin, clipped to the observed range
        centre = 10 ** (self._LO + (i - 0.5) / self._PER_DECADE)
        return float(min(max(centre, self.min_ms), self.max_ms))

    def summary(self) -> dict[str, float | int | None]:
        if not self.n:
            return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        return {
            "n": self.n,
            "p50": round(self.percentile(50), 3),
            "p95": round(self.percentile(95), 3),
            "p99": round(self.percentile(99), 3),
            "max": round(self.max_ms, 3),
            "mean": round(self.total_ms / self.n, 3),
        }
