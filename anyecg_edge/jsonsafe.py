"""JSON that is always JSON: no NaN / Infinity tokens.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict parsers (and most
languages' JSON libraries) reject, so one non-finite number makes a whole JSONL line
unreadable. :func:`dumps` writes ``null`` in their place and says why beside it: the
top-level object gains ``"non_finite": {"path.to.value": "nan" | "inf" | "-inf"}``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["dump_file", "dumps", "finite_copy", "write_text_atomic"]


def _walk(obj: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(obj, float):  # also numpy float64 (a float subclass)
        if math.isfinite(obj):
            return obj
        found[path or "$"] = "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
        return None
    if isinstance(obj, dict):
        return {k: _walk(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_walk(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    if hasattr(obj, "dtype") and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return _walk(obj.item(), path, found)  # a numpy scalar (float32 is no float subclass)
    return obj


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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename:
    a full disk or a kill mid-write leaves the old file (or none), never half a JSON
    document that a later `--compare` or report would read as truth."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; keep what open() would give
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def dump_file(path: str | os.PathLike[str], obj: Any, **kwargs: Any) -> Path:
    """:func:`dumps` into ``path`` atomically (:func:`write_text_atomic`)."""
    return write_text_atomic(path, dumps(obj, **kwargs) + "\n")
