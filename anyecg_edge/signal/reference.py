"""The authors' ECGFounder preprocessing chain, written literally: the verification oracle.

This is deliberately the plain, unoptimised scipy chain the ECGFounder authors use
(DESIGN.md section 3): 50 Hz notch (``iirnotch``, Q=30, ``filtfilt`` on b/a) ->
4th-order Butterworth band-pass 0.67-40 Hz (b/a, ``filtfilt``) -> subtract a
``medfilt`` baseline with an odd kernel of int(0.4 * fs) + 1 samples (201 at 500 Hz)
-> z-score (x - mean) / (std + 1e-8) -> NaN to 0.

It exists so that the fast path in :mod:`anyecg_edge.signal.preprocess` can be
checked against it. Do not "improve" it: any change here moves the target. It shares
nothing with the fast path but scipy: every number of the chain is written out below, so
that a wrong constant or helper of the fast path (e.g. its :func:`baseline_kernel`) shows
up as a disagreement instead of moving both sides together.
"""

from __future__ import annotations

import numpy as np
import scipy.signal

__all__ = ["authors_preprocess", "baseline_kernel"]


def baseline_kernel(fs: float) -> int:
    """Median-filter kernel of the authors' baseline step: int(0.4*fs), made odd by +1.

    For the fast path and the export manifests; :func:`authors_preprocess` does not call
    it (it computes its kernel itself, from the authors' rule).

    ``medfilt`` needs an odd kernel; the authors' int(0.4*fs)+1 is odd whenever
    int(0.4*fs) is even (201 at 500 Hz). For rates where int(0.4*fs) is already odd
    we keep it (the usual "next odd" rule), since +1 would make it even.
    """
    k = int(0.4 * fs)
    return k + 1 if k % 2 == 0 else k


def authors_preprocess(x: np.ndarray, fs: float, mains_hz: float | None = 50.0) -> np.ndarray:
    """Run the authors' chain on one lead ``x`` sampled at ``fs`` Hz (no resampling).

    Returns float64 z-scored samples, same length as ``x``. ``mains_hz`` exists only so
    the 60 Hz / no-notch variants of the fast path can be checked too; the authors
    used 50 Hz.
    """
    # The authors replace NaN samples by 0 on the raw record (dataset.py: np.nan_to_num).
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
    if mains_hz is not None:
        b, a = scipy.signal.iirnotch(mains_hz, 30.0, fs=fs)
        x = scipy.signal.filtfilt(b, a, x)
    b, a = scipy.signal.butter(4, [0.67, 40.0], btype="bandpass", fs=fs)
    x = scipy.signal.filtfilt(b, a, x)
    # The authors' kernel, int(0.4 * fs) + 1 (201 at 500 Hz); medfilt needs it odd, so
    # when int(0.4 * fs) is odd already it stays as it is.
    kernel = int(0.4 * fs) + 1
    if kernel % 2 == 0:
        kernel -= 1
    baseline = scipy.signal.medfilt(x, kernel_size=kernel)
    x = x - baseline
    x = (x - np.mean(x)) / (np.std(x) + 1e-8)
    return np.nan_to_num(x, nan=0.0)
