"""Fixed-length window extraction (views into the signal, no copies)."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.preprocess import _MAX_RATIO_DENOMINATOR, check_fs

__all__ = ["extract_windows", "raw_window_samples", "window_samples"]


def window_samples(window_s: float, fs: float) -> int:
    """Number of samples in a window of ``window_s`` seconds at ``fs`` Hz (rounded)."""
    fs = check_fs(fs)
    n = round(float(window_s) * fs)
    if not window_s > 0 or n < 1:
        raise SignalError(f"window_s must be positive, got {window_s!r}")
    return int(n)


@lru_cache(maxsize=64)
def raw_window_samples(n_out: int, fs: float, target_fs: float) -> int:
    """Raw samples at ``fs`` whose resampling to ``target_fs`` (preprocess's ratio) gives at
    least ``n_out``: 3600 at 360 Hz for 5000 at 500 Hz, but 1301 at a Polar's measured
    130.04 Hz, where round(10 s x fs) = 1300 samples resample to 4999. Crop the
    preprocessed window to ``n_out``."""
    fs = check_fs(fs)
    ratio = Fraction(float(target_fs) / fs).limit_denominator(_MAX_RATIO_DENOMINATOR)
    return math.ceil(n_out * ratio.denominator / ratio.numerator)


def extract_windows(
    x: np.ndarray,
    fs: float,
    window_s: float = 10.0,
    hop_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a 1-D signal into windows of ``window_s`` seconds every ``hop_s`` seconds.

    Returns ``(windows, starts)``: windows has shape (n, window_samples) and is a
    read-only strided view of ``x`` (no copy; copy it before writing), starts holds
    the first sample index of each window. ``hop_s`` defaults to ``window_s`` (no
    overlap); a trailing piece shorter than a window is dropped. A signal shorter
    than one window raises SignalError stating both lengths.
    """
    fs = check_fs(fs)
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SignalError(f"x must be a 1-D signal, got shape {arr.shape}")
    win = window_samples(window_s, fs)
    if hop_s is None:
        hop = win
    else:
        if not hop_s > 0:
            raise SignalError(f"hop_s must be positive, got {hop_s!r}")
        hop = max(1, round(float(hop_s) * fs))
    if arr.size < win:
        raise SignalError(
            f"signal is {arr.size / fs:.2f} s long ({arr.size} samples at {fs:g} Hz); "
            f"one window needs {win / fs:.2f} s ({win} samples)"
        )
    # The (n, win) view directly: sliding_window_view(arr, win)[::hop] first makes a view of
    # every offset, whose nominal size (9 GB for 30 min at 360 Hz) numpy refuses on 32-bit
    # ARM ("array is too big"), though no byte is copied.
    n = (arr.size - win) // hop + 1
    step = arr.strides[0]
    windows = as_strided(arr, shape=(n, win), strides=(step * hop, step), writeable=False)
    starts = np.arange(n, dtype=np.int64) * hop
    return windows, starts
