"""One stream session: source -> engine -> JSONL + live view -> summary.

`anyecg-edge stream`, `bench`'s streaming session and `demo` all run a stream through
`StreamSession`, so the three write the same JSONL:

* a first line ``{"start": {"source", "model", "hop_s", "t", "t_utc"}}``, written and
  flushed at once (an output that cannot be written fails in a second, not at the first
  window 10 s of signal later);
* one line per window and per event (see `StreamEngine`);
* a last line ``{"summary": {...}}`` unless the output itself failed.

Every record carries ``t`` (stream time, s) and ``t_utc`` (ISO-8601 UTC, the host clock
anchored at the first sample, see `anyecg_edge.stream.engine`): windows and events at the
top level, the start and summary records inside their one key (so ``"t" in line`` still
picks windows and events). The start's ``t`` is 0 and its ``t_utc`` the host clock when the
session started; the summary's ``t`` is the stream's end, and it holds the session's
``start_utc`` and ``end_utc`` (host clock) and ``first_sample_utc`` (the anchor).

Stopping: SIGINT/SIGTERM/SIGHUP (``handle_signals``) and a failed output set one flag
every source kind polls, and the session ends cleanly with its summary; the caller decides
the exit status (`SessionResult.signum`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from anyecg_edge.runtime import Model
from anyecg_edge.stream.engine import SinkFailedError, StreamEngine, utc_iso
from anyecg_edge.stream.sources import SourceSpec

log = logging.getLogger(__name__)

__all__ = ["SessionResult", "StreamOutputError", "StreamSession", "open_jsonl", "reason"]


class StreamOutputError(OSError):
    """The --jsonl output (a file or stdout) failed mid-stream: the source was stopped."""


def reason(exc: BaseException) -> str:
    """An exception as a short phrase (``No space left on device, ENOSPC``)."""
    if isinstance(exc, OSError) and exc.strerror:
        name = errno.errorcode.get(exc.errno or 0)
        return f"{exc.strerror}, {name}" if name else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def open_jsonl(path: Path | str) -> IO[str]:
    """``path`` opened line-buffered for the session's JSONL (one-line error if it cannot).
    Opened without truncating: the session empties it when it writes its first line, so a
    refusal before that (a --serve port in use) leaves an existing file as it was."""
    try:
        fh = open(path, "a", buffering=1)  # noqa: SIM115 (the session closes it)
        _TRUNCATE_AT_START.add(fh)
        return fh
    except OSError as exc:
        raise StreamOutputError(
            f"--jsonl {path}: cannot open for writing ({reason(exc)})"
        ) from None


# Files `open_jsonl` opened: only those are emptied at the start (never stdout redirected
# to a user's file, never a stream a library caller passed in).
_TRUNCATE_AT_START: weakref.WeakSet[IO[str]] = weakref.WeakSet()


def _empty_if_file(fh: IO[str]) -> None:
    """Truncate a JSONL opened by `open_jsonl` when it is a regular file (a pipe, a FIFO or
    a terminal cannot be and need not be)."""
    if fh not in _TRUNCATE_AT_START:
        return
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            fh.seek(0)
            fh.truncate(0)


class _Output:
    """JSONL lines (one per window / event) + the live view, fed from both threads. Lines
    never hold NaN/Infinity (`anyecg_edge.jsonsafe`: null plus the reason)."""

    def __init__(self, jsonl: IO[str] | None, live: Any | None = None) -> None:
        self.jsonl = jsonl
        self.live = live
        self.dashboard: Any = None  # stream/serve.py's Dashboard (never raises)

    def __call__(self, item: dict[str, Any]) -> None:
        if self.jsonl is not None:
            from anyecg_edge.jsonsafe import dumps

            self.jsonl.write(dumps(item, separators=(",", ":"), default=str) + "\n")
        if self.live is not None:
            self.live.update(item)
        if self.dashboard is not None:
            self.dashboard.update(item)


# Signals that end a stream cleanly (summary written) for every source kind.
_STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Stopper:
    """SIGINT/SIGTERM/SIGHUP (and a failed output) -> one flag every source kind polls: the
    file replay between blocks (its pacing waits on the flag), BLE sources through a
    watcher task. Python-level handlers, not the event loop's: asyncio resets its handlers
    to the default when the loop closes, and a SIGTERM while the summary is written would
    then kill the process."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()

    @contextlib.contextmanager
    def installed(self, enabled: bool = True, linger: bool = False) -> Iterator[Stopper]:
        """The stop signals set the flag inside the block. ``linger``: once a stop signal
        came, they stay caught after the block (its caller exits next: a second Ctrl-C
        must not break the summary being written or the exit into a traceback)."""
        old: dict[int, Any] = {}
        for sig in _STOP_SIGNALS if enabled else ():
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                old[sig] = signal.signal(sig, self)
        try:
            yield self
        finally:
            if not (linger and self.signum is not None):
                for sig, handler in old.items():
                    with contextlib.suppress(ValueError, OSError, TypeError):
                        signal.signal(sig, handler)


@dataclass
class SessionResult:
    summary: dict[str, Any]
    #: The stop signal's number when a signal ended the session (None otherwise).
    signum: int | None = None

    @property
    def interrupted(self) -> bool:
        return bool(self.summary.get("interrupted"))


@dataclass
class StreamSession:
    """A model, a source and where the results go; `run` streams until the source ends,
    ``duration_s``, a stop signal or a failed output.

    ``jsonl``: an open text stream (closed at the end unless ``close_jsonl`` is False, as for
    stdout); ``jsonl_name`` names it in error lines. ``live``: a rich live view (on
    ``console`` when given). ``handle_signals``: stop cleanly on SIGINT/SIGTERM/SIGHUP;
    without it Ctrl-C propagates (after the summary is written)."""

    model: Model
    spec: SourceSpec
    model_label: str
    hop_s: float = 1.0
    smooth_s: float = 30.0
    queue_size: int = 2
    lossless: bool = False
    jsonl: IO[str] | None = None
    jsonl_name: str = "-"
    close_jsonl: bool = True
    live: bool = False
    console: Any = None
    handle_signals: bool = True
    #: The caller exits once a stop signal ended the session (the CLI): the stop signals
    #: then stay caught (`Stopper.installed`'s ``linger``) instead of being restored.
    exit_after_signal: bool = False
    stopper: Stopper = field(default_factory=Stopper)
    #: A `serve.ServeAddress`: serve the live browser dashboard there while streaming.
    serve: Any = None
    #: `stream --record DIR` (BLE sources): the raw notifications, events and WFDB signal.
    record_dir: Path | None = None

    def run(
        self,
        record: Any = None,
        *,
        speed: float = 1.0,
        duration_s: float | None = None,
        loop: bool = False,
        **ble: Any,
    ) -> SessionResult:
        """Stream ``record`` (a file source's `Record`), the recording of a ``replay:DIR``
        ``spec``, or else the BLE source of ``spec`` (``ble``: `run_ble`'s faults, lead, fs,
        hci, silence_timeout_s, find_timeout_s, max_reconnects). Raises `StreamOutputError` when the JSONL output
        failed (the summary is then not written)."""
        start_epoch = time.time()
        output = _Output(self.jsonl)
        if self.serve is not None:
            # Bound before anything is written: a port in use fails in one line, no output.
            from anyecg_edge.stream.serve import Dashboard

            output.dashboard = Dashboard(self.serve, source=self.spec.label, model=self.model_label)
            output.dashboard.start(echo=lambda line: print(line, file=sys.stderr, flush=True))
        try:
            return self._run(output, start_epoch, record, speed, duration_s, loop, ble)
        finally:
            if output.dashboard is not None:
                output.dashboard.close()

    def _run(
        self,
        output: _Output,
        start_epoch: float,
        record: Any,
        speed: float,
        duration_s: float | None,
        loop: bool,
        ble: dict[str, Any],
    ) -> SessionResult:
        if self.jsonl is not None:
            _empty_if_file(self.jsonl)
            start = {"source": self.spec.label, "model": self.model_label, "hop_s": self.hop_s,
                     "t": 0.0, "t_utc": utc_iso(start_epoch)}  # fmt: skip
            try:
                output({"start": start})
                self.jsonl.flush()
            except OSError as exc:
                self._close_output()
                raise StreamOutputError(
                    f"--jsonl {self.jsonl_name}: cannot write ({reason(exc)})"
                ) from None
        engine = StreamEngine(
            self.model, hop_s=self.hop_s, smooth_s=self.smooth_s, queue_size=self.queue_size,
            lossless=self.lossless, sink=output,
        )  # fmt: skip
        if output.dashboard is not None:
            output.dashboard.attach(engine)
        stopper = self.stopper
        engine.on_failure = lambda exc: stopper.event.set()  # a dead output stops the source
        view = None
        if self.live:
            from anyecg_edge.stream.live import LiveView

            view = LiveView(engine, source=self.spec.label)
            output.live = view
        interrupted = False
        info: dict[str, Any] = {}
        failure: BaseException | None = None
        live_ctx = None
        recorder = None
        if self.record_dir is not None:
            from anyecg_edge.stream.recording import Recorder

            recorder = Recorder(
                self.record_dir, {"source": self.spec.label, "model": self.model_label}
            )
        source_error: Exception | None = None
        with stopper.installed(self.handle_signals, linger=self.exit_after_signal):
            engine.start()
            try:
                if view is not None:
                    from anyecg_edge.stream.live import live_display

                    # log records print above it, no stale panel
                    live_ctx = live_display(view, console=self.console)
                    live_ctx.__enter__()
                if self.spec.kind == "replay":
                    from anyecg_edge.stream.recording import run_replay

                    info = run_replay(
                        self.spec.target, engine, speed=speed, duration_s=duration_s,
                        should_stop=stopper.event.is_set, wait=stopper.event.wait,
                        recorder=recorder,
                    )  # fmt: skip
                elif record is not None:
                    from anyecg_edge.stream.sources import run_file

                    info = run_file(
                        record, engine, speed=speed, duration_s=duration_s, loop=loop,
                        should_stop=stopper.event.is_set, wait=stopper.event.wait,
                    )  # fmt: skip
                else:
                    info = _run_ble_until_stopped(
                        self.spec, engine, stopper, speed=speed, duration_s=duration_s,
                        loop=loop, recorder=recorder, **ble,
                    )  # fmt: skip
            except SinkFailedError:
                pass  # reported below from engine.sink_error
            except KeyboardInterrupt:
                interrupted = True
                if not self.handle_signals:
                    raise  # (the summary is written on the way out)
            except Exception as exc:
                # The source gave up (a device not found again, a link given up on): the
                # summary says why, and travels with the error for `--json`.
                source_error = exc
                raise
            finally:
                if recorder is not None:
                    info["recording"] = _close_recording(recorder, info)
                if source_error is not None:
                    info = {**info, "error": reason(source_error)}
                summary, failure = self._finish(
                    engine, live_ctx, info, interrupted or stopper.signum is not None,
                    start_epoch, output,
                )  # fmt: skip
                if source_error is not None:
                    source_error.session_summary = summary  # type: ignore[attr-defined]
        if failure is not None:
            raise StreamOutputError(
                f"--jsonl {self.jsonl_name}: cannot write ({reason(failure)}); the stream was "
                f"stopped after {summary['windows']} windows"
            )
        return SessionResult(summary, stopper.signum)

    def _finish(
        self,
        engine: StreamEngine,
        live_ctx: Any,
        info: dict[str, Any],
        interrupted: bool,
        start_epoch: float,
        output: _Output,
    ) -> tuple[dict[str, Any], BaseException | None]:
        """Close the engine and the view, write the summary line and close the output."""
        summary = engine.close()
        if live_ctx is not None:
            live_ctx.__exit__(None, None, None)
        anchor = engine.utc_anchor
        summary = {
            "source": self.spec.label, "model": self.model_label, "hop_s": self.hop_s,
            **summary, "interrupted": interrupted, "source_info": info,
            "t": summary["stream_s"], "t_utc": engine.utc_at(summary["stream_s"]),
            "start_utc": utc_iso(start_epoch),
            "first_sample_utc": None if anchor is None else engine.utc_at(0.0),
            "end_utc": utc_iso(time.time()),
        }  # fmt: skip
        failure = engine.sink_error
        if output.dashboard is not None:
            output.dashboard.update({"summary": summary})
        if self.jsonl is not None and failure is None:
            try:
                output({"summary": summary})
                self.jsonl.flush()
            except OSError as exc:
                failure = exc
        close_error = self._close_output()
        return summary, failure or close_error

    def _close_output(self) -> BaseException | None:
        if self.jsonl is None or not self.close_jsonl:
            return None
        try:
            self.jsonl.close()
        except OSError as exc:  # the last buffered line did not fit
            return exc
        return None


def _close_recording(recorder: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Finish a recording (WFDB header, annotations, session.json); a failure there is
    reported in the summary, not raised over the session's own result."""
    try:
        recorder.close(info)
    except Exception as exc:  # a full disk at the end: the raw log is still replayable
        log.warning("--record %s: not completed (%s)", recorder.folder, reason(exc))
        return {"dir": str(recorder.folder), "error": reason(exc)}
    return {"dir": str(recorder.folder), "records": recorder.records,
            "wfdb": recorder.meta.get("wfdb")}  # fmt: skip


def _run_ble_until_stopped(
    spec: SourceSpec, engine: StreamEngine, stopper: Stopper, **kwargs: Any
) -> dict[str, Any]:
    """Run a BLE source until its end, a stop signal or a failed output (``stopper``),
    which stop it cleanly (stop command, disconnect). Returns the source info."""
    from anyecg_edge.stream.sources import run_ble

    result: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()

        async def watch() -> None:
            # The handlers only set a threading flag; this carries it into the loop.
            while not stop.is_set():
                if stopper.event.is_set():
                    stop.set()
                    return
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        try:
            result.update(await run_ble(spec, engine, stop=stop, **kwargs))
        finally:
            watcher.cancel()

    asyncio.run(main())
    return result


def simulated_session(
    model_path: Path,
    record: Path,
    *,
    duration_s: float,
    speed: float = 20.0,
    hop_s: float = 1.0,
    profile: str = "polar",
    faults: str | None = None,
    jsonl: Path | None = None,
    threads: int = 1,
    live_console: Any = None,
) -> dict[str, Any]:
    """Stream ``record`` from a simulated wearable (bumble GATT link; a paced file replay
    where bumble is missing) through ``model_path`` -- what `bench` and `demo` run, the same
    session as ``anyecg-edge stream --source sim-PROFILE:RECORD``. JSONL lines go to
    ``jsonl``; a rich live view to ``live_console`` when given. Ctrl-C propagates (after the
    summary is written). Returns the summary."""
    import importlib.util

    from anyecg_edge.firmware_bridge.faults import FaultSpec
    from anyecg_edge.runtime import load_model
    from anyecg_edge.stream.sources import load_record

    model = load_model(model_path, threads=threads)
    have_ble = importlib.util.find_spec("bumble") is not None
    spec = SourceSpec.parse(f"sim-{profile}:{record}" if have_ble else f"file:{record}")
    session = StreamSession(
        model, spec, str(model_path), hop_s=hop_s,
        jsonl=open_jsonl(jsonl) if jsonl is not None else None, jsonl_name=str(jsonl),
        live=live_console is not None, console=live_console, handle_signals=False,
    )  # fmt: skip
    if have_ble:
        # (a simulated wearable keeps sampling its record round, as it always did here)
        result = session.run(
            speed=speed, duration_s=duration_s, loop=True, faults=FaultSpec.parse(faults)
        )
    else:
        rec = load_record(record, lead=None, fs=None)
        result = session.run(rec, speed=speed, duration_s=duration_s)
    return result.summary
