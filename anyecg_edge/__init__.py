"""AnyECG-Edge: ECG-to-lab estimates from one ECG lead, from GPU training to the wearable.

Outputs are research estimates with calibration and uncertainty, never diagnoses.

    import anyecg_edge as ae
    model = ae.load_model("student_int8.tflite")      # .onnx / .tflite / .pt / run folder
    result = ae.estimate(model, signal_mv, fs=130.0)  # 1-D numpy array in mV, >= 10 s
    result.labs["potassium"].probability, result.quality, result.to_dict()

See :mod:`anyecg_edge.api`.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("anyecg-edge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

RESEARCH_USE_NOTE = (
    "Research use only: these are statistical estimates of lab abnormality from one ECG lead, "
    "with calibration and uncertainty. They are not diagnoses and must not guide care."
)

__all__ = ["__version__", "RESEARCH_USE_NOTE", "Estimate", "LabEstimate", "estimate", "load_model"]

# The Python API (anyecg_edge/api.py) loads numpy and the runtimes; it is imported on
# first use, so `import anyecg_edge` and `anyecg-edge --help` stay light.
_API_NAMES = frozenset({"Estimate", "LabEstimate", "estimate", "load_model"})


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        from anyecg_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'anyecg_edge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})
