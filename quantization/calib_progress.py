"""The calibration bar: a tick per calibration window (or batch) a quantizer is fed.

Bars draw only when a command opened `anyecg_edge.progress.progress_session` (a terminal,
no -q / --no-progress); from Python these calls are no-ops. The task names are the bar
labels, one place for both formats.
"""

from __future__ import annotations

from anyecg_edge.progress import report

# Range collection: ORT's calibrator reading our data reader, ai-edge-quantizer's per window.
CALIBRATION = "int8 calibration (windows)"
# LiteRT `percentile`: the second pass over the windows that fills the value histograms.
HISTOGRAM = "int8 calibration: value histogram (windows)"


def tick(done: int, total: int, task: str = CALIBRATION) -> None:
    """``done`` of ``total`` calibration windows through the float model."""
    report(task, min(done, total), total)
