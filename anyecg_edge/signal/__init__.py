"""Signal core (numpy/scipy only): resampling, the ECGFounder preprocessing chain,
fixed-length windows, a QRS detector and a signal-quality gate.

Conventions: the sampling rate is always an explicit argument (``fs``, Hz); raw
amplitudes are in mV (``_mv``); bad input raises :class:`SignalError` with a one-line
message.
"""

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.preprocess import (
    MAX_NAN_GAP_S,
    TARGET_FS,
    check_fs,
    fill_short_gaps,
    preprocess,
    resample,
)
from anyecg_edge.signal.quality import (
    REASON_CODES,
    QualityReport,
    assess_quality,
    assess_quality_batch,
    detect_r_peaks,
    heart_rate_bpm,
)
from anyecg_edge.signal.reference import authors_preprocess
from anyecg_edge.signal.windows import extract_windows, raw_window_samples, window_samples

__all__ = [
    "MAX_NAN_GAP_S",
    "QualityReport",
    "REASON_CODES",
    "SignalError",
    "TARGET_FS",
    "assess_quality",
    "assess_quality_batch",
    "authors_preprocess",
    "check_fs",
    "detect_r_peaks",
    "extract_windows",
    "fill_short_gaps",
    "heart_rate_bpm",
    "preprocess",
    "raw_window_samples",
    "resample",
    "window_samples",
]
