"""JSON that is always JSON: no NaN / Infinity tokens.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (and most
languages' JSON libraries) reject, so one non-finite number makes a whole JSONL line
unreadable. :func:`dumps` writes ``null`` in their place and says why beside it: the
top-level object gains ``"non_finite": {"path.to.value": "nan" | "inf" | "-inf"}`` (a
top-level value that is not an object is wrapped as ``{"value": ..., "non_finite": ...}``).
This is the project's one NaN rule: files are written by :mod:`anyecg_edge.fileio`
(atomically) through it, JSON lines on a stream through :func:`dumps` directly.

numpy scalars and arrays become numbers and lists, paths strings, other dict keys strings.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

__all__ = ["dumps", "finite_copy"]


def _walk(obj: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(obj, float):  # also numpy float64 (a float subclass)
        if math.isfinite(obj):
            return obj
        found[path or "$"] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    if isinstance(obj, dict):
        return {_key(k): _walk(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):
        # numpy (no import here): a scalar's tolist() is a Python number (float32 is no float
        # subclass), an array's nested lists; both walked for NaN like any other value.
        return _walk(obj.tolist(), path, found)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _key(k: Any) -> Any:
    # json.dumps takes str/int/float/bool/None keys and refuses numpy ints, paths, tuples.
    return k if isinstance(k, (str, int, float, bool)) or k is None else str(k)


def finite_copy(obj: Any) -> tuple[Any, dict[str, str]]:
    """``obj`` with every non-finite float replaced by None, and the replaced paths."""
    found: dict[str, str] = {}
    return _walk(obj, "", found), found


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN/Infinity (null plus ``non_finite`` reasons)."""
    clean, found = finite_copy(obj)
    if found:
        if isinstance(clean, dict):
            clean = {**clean, "non_finite": found}
        else:
            clean = {"value": clean, "non_finite": found}
    return json.dumps(clean, allow_nan=False, **kwargs)
