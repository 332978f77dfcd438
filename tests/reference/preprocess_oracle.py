"""Test oracle: the ECGFounder authors' preprocessing, written from its description alone.

Source: ``shared/DESIGN.md`` section 3, "Preprocessing used by the authors": 50 Hz notch
(iirnotch, Q=30, zero-phase filtfilt) -> 4th-order Butterworth band-pass 0.67-40 Hz
(zero-phase) -> subtract a median-filter baseline (kernel int(0.4*fs)+1 = 201 samples at
500 Hz) -> z-score (x - mean) / (std + 1e-8); NaN -> 0.

It imports nothing from the package (no kernel helper, no constant, no filter cache), so
the package's fast path (``anyecg_edge.signal.preprocess``) and its in-package oracle
(``anyecg_edge.signal.reference``) are both checked against numbers written here.
``mains_hz`` exists only to check the 60 Hz / no-notch variants of the fast path.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt, iirnotch, medfilt


def median_kernel(fs: float) -> int:
    """int(0.4*fs)+1; medfilt needs an odd kernel, so an even one is taken one smaller."""
    k = int(0.4 * fs) + 1
    return k if k % 2 == 1 else k - 1


def authors_chain(x, fs: float, mains_hz: float | None = 50.0) -> np.ndarray:
    """One lead at ``fs`` Hz (no resampling) -> float64 z-scores of the same length."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    if mains_hz is not None:
        b, a = iirnotch(mains_hz, 30.0, fs=fs)
        x = filtfilt(b, a, x)
    b, a = butter(4, [0.67, 40.0], btype="bandpass", fs=fs)
    x = filtfilt(b, a, x)
    x = x - medfilt(x, kernel_size=median_kernel(fs))
    x = (x - x.mean()) / (x.std() + 1e-8)
    return np.nan_to_num(x, nan=0.0)
