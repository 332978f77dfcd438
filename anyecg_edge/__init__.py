"""AnyECG-Edge: ECG-to-lab estimates from one ECG lead, from GPU training to the wearable.

Outputs are research estimates with calibration and uncertainty, never diagnoses.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("anyecg-edge")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

RESEARCH_USE_NOTE = (
    "Research use only: these are statistical estimates of lab abnormality from one ECG lead, "
    "with calibration and uncertainty. They are not diagnoses and must not guide care."
)

__all__ = ["__version__", "RESEARCH_USE_NOTE"]
