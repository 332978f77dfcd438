"""Where the real recordings are: the one place that decides it.

Order: an explicit folder (``--data-dir``), then the ``ANYECG_DATA`` environment variable,
then ``shared/data`` beside this checkout (``<checkout>/../shared/data``, found from this
file, never from the current directory: a command run from another folder used to look in
``<cwd>/../shared/data`` and quietly fall back to synthetic signals).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV_VAR", "checkout_data_dir", "data_dir", "find_data_dir"]

#: Environment variable naming the recordings folder (same meaning as ``--data-dir``).
ENV_VAR = "ANYECG_DATA"


def checkout_data_dir() -> Path:
    """``shared/data`` beside the source checkout this package was imported from."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The recordings folder to use (it may not exist): ``explicit``, else ``$ANYECG_DATA``,
    else :func:`checkout_data_dir`. Relative paths are taken as given by the user (from
    the current directory, as any path on a command line)."""
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return checkout_data_dir()


def find_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """:func:`data_dir` when that folder exists, else None."""
    path = data_dir(explicit)
    return path if path.is_dir() else None
