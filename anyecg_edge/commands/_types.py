"""Click parameter types shared by every command: numbers that must be finite and in range,
and output paths checked before any long work. Light on purpose (click and the standard
library only): `--help` imports this.

click's own ``FloatRange`` lets ``nan`` through every bound (all comparisons with NaN are
false) and ``inf`` through any lower bound, which is how ``--hop inf`` or ``--smooth nan``
used to reach the code; :class:`Number` refuses both when the line is parsed.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

__all__ = [
    "Faults",
    "Number",
    "OutputPath",
    "all_cores",
    "count",
    "emit_json",
    "human_echo",
    "json_option",
    "json_to_stdout",
    "threads_option",
    "ordered_pair",
    "positive",
    "refuse_clobber",
    "record_files",
    "sim_source_options",
]


class Number(click.ParamType):
    """A finite float, optionally bounded (``min_open``/``max_open``: bound excluded)."""

    name = "number"

    def __init__(
        self,
        min: float | None = None,
        max: float | None = None,
        *,
        min_open: bool = False,
        max_open: bool = False,
    ) -> None:
        self.min, self.max = min, max
        self.min_open, self.max_open = min_open, max_open

    def _describe(self) -> str:
        lo = "" if self.min is None else f"{self.min:g}{' <' if self.min_open else ' <='} "
        hi = "" if self.max is None else f" {'<' if self.max_open else '<='} {self.max:g}"
        return f"{lo}x{hi}" if (lo or hi) else "a finite number"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "NUMBER"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a number", param, ctx)
        try:
            v = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        too_low = self.min is not None and (v <= self.min if self.min_open else v < self.min)
        too_high = self.max is not None and (v >= self.max if self.max_open else v > self.max)
        if too_low or too_high:
            self.fail(f"{v:g} is out of range (expected {self._describe()})", param, ctx)
        return v

    def __repr__(self) -> str:
        return f"Number({self._describe()})"


def positive() -> Number:
    """A finite number > 0 (rates, durations, periods)."""
    return Number(0.0, min_open=True)


def count(min: int = 1, max: int | None = None) -> click.IntRange:
    """An integer in [min, max] (ints are always finite; only the range needs saying)."""
    return click.IntRange(min=min, max=max)


def ordered_pair(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback for ``nargs=2`` ranges: LOW <= HIGH (each already checked by its type)."""
    if value is not None and len(value) == 2 and value[0] > value[1]:
        raise click.BadParameter(
            f"low {value[0]:g} is above high {value[1]:g} (expected LOW HIGH)", ctx, param
        )
    return value


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


class OutputPath(click.Path):
    """A file (``folder=False``) or folder the command will write: refused at parse time
    when it cannot be (a folder where a file is wanted, a file where a folder is, a parent
    that is a file or not writable), so no long run ends at a write that could never
    succeed. ``-`` (stdout) with ``allow_dash``."""

    def __init__(self, *, folder: bool = False, allow_dash: bool = False) -> None:
        super().__init__(path_type=Path, allow_dash=allow_dash)
        self.folder = folder

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        if str(path) == "-" and self.allow_dash:
            return path
        if not str(path).strip():
            self.fail("empty path", param, ctx)
        if self.folder:
            if path.exists() and not path.is_dir():
                self.fail(f"{path} exists and is not a folder", param, ctx)
        elif path.is_dir():
            self.fail(f"{path} is a folder; expected a file name", param, ctx)
        base = _nearest_existing(path)
        if base != path.absolute() and not base.is_dir():
            self.fail(f"{path}: {base} is not a folder", param, ctx)
        target = path if path.exists() else base
        if not os.access(target, os.W_OK) or (target.is_dir() and not os.access(target, os.X_OK)):
            self.fail(f"{path}: {target} is not writable", param, ctx)
        return path


def record_files(path: str | Path) -> list[Path]:
    """The files a record path stands for: itself and, for WFDB, its header and signal
    files (every ``stem.*`` beside it), so an output cannot be pointed at a record's .dat."""
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix.lower() in {".hea", ".dat", ".mat"} else p.name
    out = [p]
    parent = p.parent if str(p.parent) else Path(".")
    with contextlib.suppress(OSError, ValueError):
        out += [q for q in parent.glob(f"{stem}.*") if q.suffix.lower() in {".hea", ".dat", ".mat"}]
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def refuse_clobber(
    out: Path | str | None, inputs: Iterable[Path | str | None], option: str
) -> None:
    """Refuse (usage error naming ``option``) an output that is, or resolves to, one of the
    inputs: writing it would destroy what the command reads."""
    if out is None or str(out) == "-":
        return
    out_p = Path(out)
    for inp in inputs:
        if inp is None or str(inp) == "-":
            continue
        if _same(out_p, Path(inp)):
            raise click.BadParameter(
                f"{out_p} is also an input ({inp}); writing it would overwrite it",
                param_hint=f"'{option}'",
            )


class Faults(click.ParamType):
    """``--faults`` parsed (and every value checked: finite, in range) with the line, so a
    bad spec is a usage error before any record, model or radio is touched."""

    name = "faults"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from anyecg_edge.firmware_bridge.faults import FaultSpec  # stdlib-only module

        if isinstance(value, FaultSpec):
            return value
        try:
            return FaultSpec.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def sim_source_options(
    *, lead: str, fs: str, speed: str, faults: str, speed_type: click.ParamType
) -> Callable[[Callable], Callable]:
    """``--lead``, ``--fs``, ``--speed``, ``--faults``: the record a simulated wearable replays
    and how (``stream --source sim-...:PATH``, ``ble simulate``). Names, types and defaults
    are defined here once; each command's help says what they mean there, and ``speed_type``
    its range (a stream may replay a file at 0 = as fast as possible, a device clock may not)."""
    opts = [
        click.option("--lead", default=None, help=lead),
        click.option("--fs", type=positive(), default=None, help=fs),
        click.option("--speed", type=speed_type, default=1.0, show_default=True, help=speed),
        click.option("--faults", type=Faults(), default=None, help=faults),
    ]

    def decorator(fn: Callable) -> Callable:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorator


# --- one grammar for every command (issue 13 item 3) -------------------------------------
#
# ``--json PATH|-``: every command that produces a result writes it as JSON to PATH, or to
# stdout with ``-`` or a bare ``--json`` (the old flag form, still accepted); when the JSON
# goes to stdout the human-readable lines go to stderr, so stdout is one JSON document.
# ``--threads N`` / ``--workers N`` (data build): default all cores this process may use.


def all_cores() -> int:
    """CPU cores this process may run on (the default of every --threads / data --workers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_option(max_threads: int = 1024, what: str = "Threads") -> Any:
    """``--threads N``: default None, meaning :func:`all_cores` (resolved by the command)."""
    return click.option(
        "--threads",
        type=count(1, max_threads),
        default=None,
        help=f"{what} (default: all cores, {all_cores()} here). 1 avoids thread thrashing "
        "on a shared CPU.",
    )


def json_option(what: str) -> Any:
    """``--json PATH|-``: write ``what`` as JSON to PATH, '-' (or a bare --json) stdout."""
    return click.option(
        "--json",
        "json_out",
        type=OutputPath(allow_dash=True),
        is_flag=False,
        flag_value="-",
        default=None,
        metavar="PATH|-",
        help=f"Write {what} as JSON to PATH ('-' or a bare --json: stdout, and the "
        "human-readable lines go to stderr).",
    )


def json_to_stdout(json_out: Path | str | None) -> bool:
    return json_out is not None and str(json_out) == "-"


def human_echo(json_out: Path | str | None) -> Any:
    """``click.echo`` for a command's human-readable lines: to stderr when the JSON result
    goes to stdout (so stdout stays one JSON document)."""
    err = json_to_stdout(json_out)

    def echo(message: str = "") -> None:
        click.echo(message, err=err)

    return echo


def emit_json(obj: Any, json_out: Path | str | None, **kwargs: Any) -> Path | None:
    """Write ``obj`` to ``--json``'s target (strict JSON: no NaN/Infinity, a file written
    atomically); the file written, or None for stdout / no --json."""
    if json_out is None:
        return None
    from anyecg_edge.fileio import write_json
    from anyecg_edge.jsonsafe import dumps

    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    if json_to_stdout(json_out):
        click.echo(dumps(obj, **kwargs))
        return None
    return write_json(Path(json_out), obj, **kwargs)
