"""The emergency-department lab catalog: 108 indicators the model estimates from one ECG lead.

The logic lives in `anyecg_edge.labs.catalog` (indicators, reference intervals, the CSV
reader) and `anyecg_edge.labs.values` (lab result strings); this package re-exports them.
Stdlib only, so it runs on-device.

    >>> from anyecg_edge.labs import load_catalog
    >>> load_catalog().lookup("POC:LACTATE, ISTAT").key
    'lactate'
"""

from __future__ import annotations

from anyecg_edge.labs.catalog import (
    ABNORMAL_DIRECTIONS,
    CATALOG_COLUMNS,
    HEADLINE_BASES,
    LAB_GROUPS,
    Lab,
    LabCatalog,
    LabCatalogError,
    LabError,
    UnknownLabError,
    load_catalog,
    normalize_component_name,
)
from anyecg_edge.labs.values import (
    LAB_VALUE_FLAGS,
    LAB_VALUE_STATUSES,
    ParsedLabValue,
    parse_lab_value,
)

__all__ = [
    "ABNORMAL_DIRECTIONS",
    "CATALOG_COLUMNS",
    "HEADLINE_BASES",
    "LAB_GROUPS",
    "LAB_VALUE_FLAGS",
    "LAB_VALUE_STATUSES",
    "Lab",
    "LabCatalog",
    "LabCatalogError",
    "LabError",
    "ParsedLabValue",
    "UnknownLabError",
    "load_catalog",
    "normalize_component_name",
    "parse_lab_value",
]
