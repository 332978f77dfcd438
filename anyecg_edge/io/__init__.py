"""Record readers: one ECG lead from WFDB, CSV or EDF files, in mV."""

from anyecg_edge.io.records import (
    SUPPORTED_FORMATS,
    MissingDependencyError,
    Record,
    RecordError,
    list_leads,
    read_record,
    record_has_fs,
)

__all__ = [
    "SUPPORTED_FORMATS",
    "MissingDependencyError",
    "Record",
    "RecordError",
    "list_leads",
    "read_record",
    "record_has_fs",
]
