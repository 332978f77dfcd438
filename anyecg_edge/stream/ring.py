"""A fixed-size ring buffer of samples: constant memory however long the stream runs."""

from __future__ import annotations

import numpy as np

__all__ = ["RingBuffer"]


class RingBuffer:
    """The last ``capacity`` samples of a stream; ``total`` counts every sample ever added."""

    def __init__(self, capacity: int, dtype: type = np.float32) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self._buf = np.zeros(int(capacity), dtype=dtype)
        self.capacity = int(capacity)
        self.total = 0

    def clear(self) -> None:
        self.total = 0

    def extend(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        n = x.shape[0]
        if n >= self.capacity:
            # Only the last `capacity` samples survive; sample i lives at i % capacity.
            self.total += n
            self._buf[:] = np.roll(x[-self.capacity :], self.total % self.capacity)
            return
        start = self.total % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self.total += n

    def window(self, end: int, n: int) -> np.ndarray:
        """A copy of the ``n`` samples ending just before absolute index ``end``."""
        if n > self.capacity or end > self.total or end - n < max(0, self.total - self.capacity):
            raise IndexError(
                f"samples [{end - n}, {end}) are not in the ring "
                f"(holds [{max(0, self.total - self.capacity)}, {self.total}))"
            )
        start = (end - n) % self.capacity
        if start + n <= self.capacity:
            return self._buf[start : start + n].copy()
        return np.concatenate((self._buf[start:], self._buf[: n - (self.capacity - start)]))
