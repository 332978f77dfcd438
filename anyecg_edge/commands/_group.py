"""The CLI's click group class and its error boundary, in a module of its own: the command
modules use the class for their sub-groups, and importing it must not import
`anyecg_edge.cli` (which registers every command module at import, so a command module
imported first would be cut off half initialized). Nothing heavy is imported here: `--help`
must not pay for numpy.

The boundary (:meth:`Group.main`) turns *any* exception a command raises into one line
``Error: what happened (file / field / option)`` on stderr and an exit status per class
(:data:`EXIT_CODES`); the traceback is printed only with ``-vv``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import click

__all__ = [
    "EXIT_CODES",
    "EXIT_DEVICE",
    "EXIT_INPUT",
    "EXIT_INTERNAL",
    "EXIT_IO",
    "EXIT_MODEL",
    "EXIT_NO_RESULT",
    "EXIT_PARITY",
    "EXIT_USAGE",
    "Group",
    "Terminated",
    "classify",
    "error_line",
    "set_verbosity",
]

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_NO_RESULT = 3
EXIT_PARITY = 4
EXIT_MODEL = 5
EXIT_DEVICE = 6
EXIT_IO = 7
EXIT_INTERNAL = 70  # sysexits' EX_SOFTWARE: a bug, not the user's input

#: Exit status -> what it means (README "Exit codes" and `anyecg-edge --help` print this).
EXIT_CODES: dict[int, str] = {
    0: "success",
    EXIT_INPUT: "input: a record, cohort, corpus, option combination or value that cannot be used",
    EXIT_USAGE: "usage: unknown option, or an option value refused when the line is parsed",
    EXIT_NO_RESULT: "predict: no window passed the signal-quality gate (no estimates)",
    EXIT_PARITY: "export: parity against the fp32 model outside tolerance",
    EXIT_MODEL: "model: model file, checkpoint or manifest missing, malformed or inconsistent",
    EXIT_DEVICE: "device: Bluetooth unavailable, wearable not found, link given up on",
    EXIT_IO: "I/O: a file or stream could not be read or written (full disk, permission, "
    "broken pipe, output is a folder)",
    EXIT_INTERNAL: "internal error (a bug): still one line; -vv prints the traceback",
    130: "interrupted by SIGINT (stream: after writing the summary); 143 SIGTERM, 129 SIGHUP",
}

# Exception classes by "module.QualName" (matched along the MRO, so subclasses count) -> exit
# status. Names, not imports: the classes live in modules that pull numpy or torch.
_BY_NAME: dict[str, int] = {
    "anyecg_edge.runtime.base.ModelError": EXIT_MODEL,
    "anyecg_edge.training.ecgfounder.CheckpointError": EXIT_MODEL,
    "_pickle.UnpicklingError": EXIT_MODEL,
    "pickle.UnpicklingError": EXIT_MODEL,
    "anyecg_edge.firmware_bridge.frames.DeviceError": EXIT_DEVICE,
    "anyecg_edge.commands.ble.BleUnavailableError": EXIT_DEVICE,
}

# Built-in classes whose message is about the user's data, not a bug.
_INPUT_BUILTINS = (ValueError, ArithmeticError, LookupError, ImportError, EOFError)

_verbosity = 0


def set_verbosity(level: int) -> None:
    """Called by the root command's callback: -vv makes the boundary print tracebacks."""
    global _verbosity
    _verbosity = level


def classify(exc: BaseException) -> int:
    """The exit status of an exception (see :data:`EXIT_CODES`)."""
    for cls in type(exc).__mro__:
        code = _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    if isinstance(exc, click.UsageError):
        return EXIT_USAGE
    if isinstance(exc, click.ClickException):
        return exc.exit_code
    if isinstance(exc, OSError):
        return EXIT_IO
    if isinstance(exc, _INPUT_BUILTINS):
        return EXIT_INPUT
    return EXIT_INTERNAL


def _flat(text: str) -> str:
    # One line, bounded: a message may carry a newline or a whole stack (wfdb, torch).
    return " ".join(text.split())[:500]


def error_line(exc: BaseException, code: int | None = None) -> str:
    """The one line (without the ``Error: `` prefix) that stands for ``exc``."""
    code = classify(exc) if code is None else code
    if isinstance(exc, click.UsageError):
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return _flat(exc.format_message()) + where
    if isinstance(exc, click.ClickException):
        return _flat(exc.format_message())
    if isinstance(exc, OSError) and not type(exc).__module__.startswith("anyecg_edge"):
        what = exc.strerror or _flat(str(exc)) or type(exc).__name__
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        # No file name: a write to stdout/stderr (e.g. `> /dev/full`, a closed pipe).
        target = " -> ".join(map(str, names)) if names else "standard output"
        number = f" [errno {errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno else ""
        return f"{target}: {what}{number}"
    text = _flat(str(exc))
    if code == EXIT_INTERNAL:
        return (
            f"internal error ({type(exc).__name__}: {text or 'no message'}); "
            "rerun with -vv for the traceback and report it"
        )
    if type(exc).__module__ == "builtins" or not text:
        # A bare ValueError/KeyError text ("'x'") says little without its type.
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text


def _quiet_broken_stdout() -> None:
    """After a failed write to stdout, point fd 1 at /dev/null so that the interpreter's
    final flush does not print a second error ("Exception ignored ... OSError")."""
    try:
        sys.stdout.flush()
    except Exception:
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        except Exception:  # not a real file (CliRunner's capture): nothing to silence
            pass


def _report(exc: BaseException, code: int) -> None:
    if _verbosity >= 2:
        traceback.print_exception(exc, file=sys.stderr)
    with contextlib.suppress(Exception):  # stderr itself gone: the status still tells
        click.echo(f"Error: {error_line(exc, code)}", err=True)


class Terminated(BaseException):
    """SIGTERM / SIGHUP outside a command that handles them itself (stream does): a
    BaseException like KeyboardInterrupt, so that no ``except Exception`` swallows it. Raised
    in the main thread where the command is, so ``finally`` blocks, atomic writers and pools
    clean up; the boundary prints one line and exits 128 + the signal number."""

    def __init__(self, signum: int, command: str | None, params: dict[str, Any]) -> None:
        super().__init__(signum)
        self.signum, self.command, self.params = signum, command, params

    def __str__(self) -> str:
        text = f"stopped by {signal.Signals(self.signum).name}"
        hint = _RESUME_HINTS.get(self.command or "")
        if hint is not None:
            with contextlib.suppress(KeyError, IndexError):
                text += "; " + hint.format(**self.params)
        return text


# What an interrupted long-running command leaves, and how to continue it.
_RESUME_HINTS: dict[str, str] = {
    "data build": "the finished work units are kept in {out}: run the same command again to resume",
    "train lora": "the checkpoints in {out} are kept: run the same command with --resume "
    "to continue",
    "train distill": "the checkpoints in {out} are kept: run the same command with --resume "
    "to continue",
}


def _where() -> tuple[str, dict[str, Any]]:
    """The running subcommand ("train lora") and its parameters."""
    ctx = click.get_current_context(silent=True)
    names = [] if ctx is None else [c.info_name for c in _chain(ctx)][1:]  # without the root
    return " ".join(n for n in names if n), dict(ctx.params) if ctx else {}


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum, *_where())


# Where Ctrl-C struck: by the time click turns it into Abort its contexts are closed.
_interrupted_in: tuple[str, dict[str, Any]] | None = None


def _note_and_interrupt(signum: int, frame: Any) -> None:
    """SIGINT as Python's default (KeyboardInterrupt), after noting the command, so the
    boundary's line can say what was kept (the resume hint SIGTERM already gave)."""
    global _interrupted_in
    _interrupted_in = _where()
    signal.default_int_handler(signum, frame)


def _interrupted_line() -> str:
    command, params = _interrupted_in or ("", {})
    hint = _RESUME_HINTS.get(command)
    if hint is not None:
        with contextlib.suppress(KeyError, IndexError):
            return "interrupted; " + hint.format(**params)
    return "interrupted"


def _chain(ctx: click.Context) -> list[click.Context]:
    out = []
    while ctx is not None:
        out.append(ctx)
        ctx = ctx.parent  # type: ignore[assignment]
    return out[::-1]


@contextlib.contextmanager
def _terminate_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the command (their default kills the
    process silently, mid-write, and a `data build` or `train` leaves no word of what was
    kept). A signal someone set to be ignored (``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
            old[sig] = signal.signal(sig, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _note_and_interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _exit_now(signum: int, frame: Any) -> None:
    os._exit(128 + signum)


def exit_at_once_on_signals() -> None:
    """For the process's last steps, once the command has ended and set its status: a stop
    signal then (Ctrl-C pressed twice, a supervisor's SIGTERM) ends the process at once with
    128 + the signal, instead of a KeyboardInterrupt traceback out of whatever the
    interpreter's teardown runs (weakref callbacks, thread joins). Output is flushed first;
    a signal someone set to be ignored (``nohup``) stays ignored. Only for the process entry
    point: it changes process-wide handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _exit_now)


class Group(click.Group):
    """A click group whose ``main`` (only ever called on the root) is the error boundary."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _interrupted_in
        set_verbosity(0)
        _interrupted_in = None
        try:
            with _terminate_on_signals():
                rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SystemExit:
            raise  # a command's own documented status (predict 3, export 4, stream 130)
        except click.Abort as exc:  # Ctrl-C outside a command that handles it
            _report(click.ClickException(_interrupted_line()), 130)
            raise SystemExit(130) from exc
        except Terminated as exc:
            if not standalone_mode:  # a command run inside another (demo): the outer reports
                raise
            _report(click.ClickException(str(exc)), 128 + exc.signum)
            raise SystemExit(128 + exc.signum) from None
        except BaseException as exc:  # the boundary: every other failure is one line
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                raise
            code = classify(exc)
            if isinstance(exc, OSError):
                _quiet_broken_stdout()
            _report(exc, code)
            if not standalone_mode:
                raise
            raise SystemExit(code) from None
        if not standalone_mode:
            return rv
        # --help / --version return their status; a finished command returns None.
        raise SystemExit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)
