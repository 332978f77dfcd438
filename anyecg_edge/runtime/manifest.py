"""Where a model file's manifest lives, and checks that the two belong together.

Defined in `anyecg_edge.runtime.base` beside `ModelMetadata` and `RuntimeModel.load`, which
reads it (this module importing base and base importing it was an import cycle); this is
their public address.
"""

from __future__ import annotations

from anyecg_edge.fileio import file_sha256  # re-exported: runtime users import it here
from anyecg_edge.runtime.base import (
    MANIFEST_FORMAT,
    MANIFEST_SUFFIX,
    PARITY_SUFFIX,
    load_manifest,
    manifest_path,
    parity_path,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_SUFFIX",
    "PARITY_SUFFIX",
    "file_sha256",
    "load_manifest",
    "manifest_path",
    "parity_path",
]
