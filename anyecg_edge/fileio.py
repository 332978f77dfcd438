"""File output that is whole or absent: the one place the project writes result files.

Every writer here goes through a temporary file in the target's own folder, ``fsync``\\ s it
and renames it over the target (``os.replace``, atomic on POSIX and Windows). A kill, a full
disk or an exception mid-write leaves the old file (or none), never half a JSON document,
shard or report that a later ``--compare``, resume or reader would take as complete.

JSON (:func:`write_json`) follows the project's one NaN rule (:mod:`anyecg_edge.jsonsafe`):
a non-finite float is written as ``null`` and the top-level object gains
``"non_finite": {"path.to.value": "nan" | "inf" | "-inf"}`` saying why, so every file
parses with a strict JSON parser. numpy scalars and arrays are written as numbers and
lists, paths as strings.

The temporary file is ``.<name>.tmp`` beside the target, held under an advisory lock while
it is written: a leftover from a killed writer is reused (and so consumed) by the next write
of the same file, while a second live writer of the same file takes a unique name instead
of sharing the first one's. Torch-free and numpy-free (the device side uses it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from anyecg_edge.jsonsafe import dumps

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; each write takes a unique temp name
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "atomic_open",
    "atomic_path",
    "file_sha256",
    "temp_name",
    "write_bytes_atomic",
    "write_json",
    "write_text_atomic",
]


def temp_name(path: str | os.PathLike[str]) -> Path:
    """The temporary file a write of ``path`` goes through (``.<name>.tmp`` beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def _mode_for(path: Path) -> int:
    """The target's permissions if it exists, else what ``open()`` would give (0666 & ~umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _open_temp(path: Path) -> tuple[int, Path]:
    """An fd on a fresh, locked temporary file beside ``path`` and its name. A folder that
    takes no new file (read-only, full, a pseudo file system) is reported as ``path``, the
    file the user named, not as the hidden temporary name."""
    try:
        return _open_temp_named(path)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write here: {exc.strerror}", str(path)) from exc


def _open_temp_named(path: Path) -> tuple[int, Path]:
    tmp = temp_name(path)
    if fcntl is not None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked, and still the file under that name (not one a finished writer has just
            # renamed onto the target): it is ours to overwrite.
            if os.fstat(fd).st_ino == os.stat(tmp).st_ino:
                os.ftruncate(fd, 0)
                return fd, tmp
        except OSError:  # BlockingIOError: another live writer; FileNotFoundError: renamed
            pass
        os.close(fd)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(name)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` whose result appears only when the block ends without an
    exception (then fsynced and renamed into place); on an exception the target is untouched
    and the temporary file removed. ``mode`` is "w" / "wb" (text takes ``encoding`` etc.)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    try:
        if mode == "w":
            kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.chmod(tmp, _mode_for(path))  # the temp file is 0600; keep what open() gives
            os.replace(tmp, path)  # under the lock: the next writer never sees it half-done
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path for writers that want a file name (``np.save``, ``savefig``,
    pyarrow, ``torch.save``): whatever the block writes there replaces ``path`` when it ends
    without an exception; on an exception the target is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temp(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the writer may have replaced the file: sync that one
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)  # releases the lock, after the rename


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path``: the whole of it or, after any failure, the old file."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path``: the whole of it or, after any failure, the old file."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(
    path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, **kwargs: Any
) -> Path:
    """``obj`` as strict JSON (non-finite floats -> null plus ``non_finite`` reasons) in
    ``path``, atomically, ending with a newline. ``kwargs`` go to ``json.dumps``."""
    return write_text_atomic(path, dumps(obj, indent=indent, **kwargs) + "\n")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (model files can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
