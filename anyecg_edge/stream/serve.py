"""`stream --serve [HOST:]PORT`: a live browser dashboard of a running stream (issue 16).

The page (``static/``: one HTML, one script, one style sheet, no CDN, ~20 KB) shows the
last 10 s of ECG scrolling, signal quality, heart rate, the smoothed per-lab estimates with
their calibration interval, threshold and call, the events (gaps, reconnects) and the
latency. Research estimates, never diagnoses: the page says so.

Design:

* :class:`Dashboard` is an observer of the stream: ``update(item)`` takes every item the
  engine emits (windows, events, the start and summary lines - the JSONL's items) and
  ``push_block(block)`` the sample blocks (:meth:`Dashboard.attach` tees them from an
  engine). Both only append to bounded buffers under a lock: the stream never waits for
  the network, and a stalled server cannot grow memory.
* The server (aiohttp) runs its own event loop on its own thread, so it works beside the
  file replay (a plain loop) and the BLE sources (their own asyncio loop) alike. Every
  ``FLUSH_S`` it sends what came in to each WebSocket client as JSON messages; a client
  that falls behind is disconnected (its page reconnects and gets a fresh snapshot).
* Bound to 127.0.0.1 unless asked otherwise: any other host needs ``--serve-public``
  (there is no authentication; a warning line says so).

aiohttp is imported only when a dashboard starts: a device install without it runs every
other command, and ``--serve`` without it fails in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import numpy as np

__all__ = [
    "Dashboard",
    "ServeAddress",
    "ServeError",
    "ServeUnavailableError",
    "dashboard_meta",
    "parse_address",
    "require_aiohttp",
    "serve_option",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"
HISTORY_S = 10.0  # ECG kept for a page that connects (what it draws)
DISPLAY_FS_MAX_HZ = 250.0  # samples sent per second at most (a 500 Hz record: every 2nd)
FLUSH_S = 0.1  # how often new samples and items go out
STATUS_S = 1.0  # how often the counters go out
MAX_CLIENTS = 16  # a Pi serving more pages than this is being hammered, not watched
_CLIENT_QUEUE = 64  # messages a client may lag (6 s of flushes) before it is dropped
_CLOSE_TIMEOUT_S = 1.0  # a page's close handshake (all pages close at once)
_PENDING_ITEMS = 2000  # items kept while the server thread is behind (oldest dropped)
_N_EVENTS = 30
_STATIC = ("index.html", "app.js", "style.css")
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-]{1,253}$")


class ServeError(OSError):
    """The dashboard could not listen (port in use, host not local, permission)."""


class ServeUnavailableError(ImportError):
    """``--serve`` without aiohttp installed."""


def require_aiohttp() -> None:
    """Raise :class:`ServeUnavailableError` (one line) when aiohttp is not installed."""
    if importlib.util.find_spec("aiohttp") is None:
        raise ServeUnavailableError(
            "--serve needs aiohttp, which is not installed: pip install 'anyecg-edge[serve]'"
        )


@dataclass(frozen=True)
class ServeAddress:
    host: str
    port: int  # 0: any free port (the one taken is printed)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a name: only 'localhost' is known to stay on this machine
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_address(text: str, *, public: bool = False) -> ServeAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> :class:`ServeAddress`. Without a host:
    127.0.0.1 (0.0.0.0 with ``public``). A host other than loopback needs ``public``.
    Raises ValueError with the reason (the CLI turns it into a usage error)."""
    text = text.strip()
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>[^:]*)", text)
    if m:
        host = m.group("v6") or m.group("host")
        port_text = m.group("port")
    else:
        host, port_text = "", text
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(
            f"expected [HOST:]PORT with PORT a whole number 0-65535 (0: any free port), got {text!r}"
        )
    if not host:
        host = PUBLIC_HOST if public else DEFAULT_HOST
    elif not _HOST_RE.match(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not a host name or IP address") from None
    address = ServeAddress(host, int(port_text))
    if not address.loopback and not public:
        raise ValueError(
            f"{host} is reachable from other machines and the page has no password: "
            "add --serve-public to serve on it (default host: 127.0.0.1)"
        )
    return address


def serve_option(text: str | None, public: bool) -> ServeAddress | None:
    """``stream --serve TEXT [--serve-public]`` checked when the line is parsed: a usage
    error for a malformed address, a non-local host without --serve-public or
    --serve-public alone; a one-line error when aiohttp is missing."""
    import click

    if text is None:
        if public:
            raise click.UsageError("--serve-public applies with --serve [HOST:]PORT")
        return None
    try:
        address = parse_address(text, public=public)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--serve'") from None
    require_aiohttp()
    return address


def dashboard_meta(engine: Any, *, source: str, model: str | None = None) -> dict[str, Any]:
    """What the page needs once: labs (name, unit, threshold, calibrated), window, hop."""
    from anyecg_edge import RESEARCH_USE_NOTE
    from anyecg_edge.estimates import lab_entry

    meta = engine.model.metadata
    thresholds = engine.model.thresholds()
    labs = []
    for j, lab in enumerate(engine.labs):
        e = lab_entry(meta, j, 0.0, float(thresholds[j]), None)
        labs.append(
            {"lab": lab, "display_name": e["display_name"], "unit": e["unit"],
             "threshold": e["threshold"], "calibrated": e["calibrated"]}
        )  # fmt: skip
    return {
        "source": source,
        "model": model,
        "labs": labs,
        "interval_level": meta.interval_level,
        "window_s": engine.window_s,
        "hop_s": engine.hop_s,
        "history_s": HISTORY_S,
        "disclaimer": RESEARCH_USE_NOTE,
    }


class _Decimator:
    """Every k-th sample (k = ceil(fs / DISPLAY_FS_MAX_HZ)), phase kept across blocks of
    one segment: the page needs the shape, not the full rate."""

    def __init__(self) -> None:
        self.segment: int | None = None
        self.skip = 0  # samples to skip at the start of the next block

    def __call__(self, block: Any) -> dict[str, Any] | None:
        fs = float(block.fs_hz)
        if not (math.isfinite(fs) and fs > 0) or block.n == 0:
            return None
        k = max(1, math.ceil(fs / DISPLAY_FS_MAX_HZ - 1e-9))
        if block.segment != self.segment:
            self.segment, self.skip = block.segment, 0
        start = min(self.skip, block.n)
        y = np.asarray(block.samples_mv[start::k], dtype=np.float64)
        self.skip = (start - block.n) % k
        if y.size == 0:
            return None
        y = np.where(np.isfinite(y), y, np.nan)
        return {
            "t0": round(float(block.t_first_s) + start / fs, 4),
            "fs": round(fs / k, 4),
            "seg": int(block.segment),
            # 1 µV steps: the trace needs no more, and the messages stay small
            "y": [None if math.isnan(v) else round(v, 3) for v in y.tolist()],
        }


class Dashboard:
    """A live page of one stream. ``start`` (binds, raises :class:`ServeError`), feed it with
    ``update`` / ``push_block`` from any thread, ``close`` at the end."""

    def __init__(
        self,
        address: ServeAddress,
        *,
        source: str,
        model: str | None = None,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.address = address
        self.meta: dict[str, Any] = {"source": source, "model": model, "labs": [],
                                     "history_s": HISTORY_S}  # fmt: skip
        self.engine: Any | None = None  # counters and latency percentiles, once attached
        self._hello: dict[str, Any] = {"type": "hello", **self.meta}
        self.flush_s = flush_s
        self.url: str | None = None
        self.port: int | None = None
        self._lock = threading.Lock()
        self._decimate = _Decimator()
        self._history: deque[dict[str, Any]] = deque()  # ECG chunks of the last HISTORY_S
        self._pending_ecg: list[dict[str, Any]] = []
        self._pending: deque[dict[str, Any]] = deque(maxlen=_PENDING_ITEMS)
        self._last_window: dict[str, Any] | None = None
        self._events: deque[dict[str, Any]] = deque(maxlen=_N_EVENTS)
        self._link = "starting"
        self._hr_device: dict[str, Any] | None = None
        self._ended: dict[str, Any] | None = None
        self._windows = 0
        self._latency: deque[float] = deque(maxlen=600)
        self._started_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.pages_served = 0
        self.pages_open = 0
        self.pages_dropped = 0  # pages that fell behind (their queue full) and were closed

    # --- observer side (stream threads) ---------------------------------------------------
    def attach(self, engine: Any) -> Dashboard:
        """Show ``engine``'s stream: its labs and thresholds, counters and latency, and its
        blocks (``engine.push`` is teed to :meth:`push_block` after the engine took each, so
        a failing dashboard can never cost the stream a sample). Items still come through
        :meth:`update` (the session's output)."""
        meta = dashboard_meta(engine, source=self.meta["source"], model=self.meta["model"])
        with self._lock:
            self.meta = meta
            self.engine = engine
            # Pages that connected while the model loaded learn the labs now.
            self._hello = {"type": "hello", **meta}
            self._pending.append(self._hello)
        push = engine.push

        def push_and_show(block: Any) -> None:
            push(block)
            try:
                self.push_block(block)
            except Exception as exc:  # the page is a view; the stream goes on without it
                log.debug("dashboard: block not shown: %s", exc)

        engine.push = push_and_show
        return self

    def push_block(self, block: Any) -> None:
        chunk = self._decimate(block)
        if chunk is None:
            return
        with self._lock:
            self._pending_ecg.append(chunk)
            self._history.append(chunk)
            self._trim_history(chunk)
            if len(self._pending_ecg) > len(self._history):  # server behind: keep 10 s
                del self._pending_ecg[: len(self._pending_ecg) - len(self._history)]

    def _trim_history(self, last: dict[str, Any]) -> None:
        t_end = last["t0"] + len(last["y"]) / last["fs"]
        h = self._history
        while h and (h[0]["t0"] + len(h[0]["y"]) / h[0]["fs"] < t_end - HISTORY_S or len(h) > 5000):
            h.popleft()

    def update(self, item: dict[str, Any]) -> None:
        """One item as the JSONL has it: a window, an event, ``{"start": ...}`` or
        ``{"summary": ...}``. Never raises: it is called from the engine's sink, where an
        exception would stop the stream."""
        try:
            self._update(item)
        except Exception as exc:
            log.debug("dashboard: item not shown: %s", exc)

    def _update(self, item: dict[str, Any]) -> None:
        if "summary" in item:
            msg = {"type": "end", "summary": _end_summary(item["summary"])}
            with self._lock:
                if self._ended is not None:  # (the session's JSONL line and its own call)
                    return
                self._ended = msg
                self._link = "ended"
                self._pending.append(msg)
            return
        if "start" in item:
            return  # (the page has the source from meta)
        kind = item.get("event")
        with self._lock:
            if kind is None:
                if "latency_ms" not in item:
                    return
                self._windows += 1
                self._latency.append(float(item["latency_ms"]))
                self._last_window = {"type": "window", **item}
                self._pending.append(self._last_window)
                if self._link == "starting":  # a file replay has no link events
                    self._link = "streaming"
                return
            self._link = _LINK_STATE.get(str(kind), self._link)
            msg = {"type": "event", **item}
            if kind in _HR_EVENTS:
                # The device's own HR, once a second: a value to show, not an event to list
                # (it would push the gaps and reconnects out of a new page's snapshot).
                self._hr_device = dict(item)
                self._pending.append(msg)
                return
            self._events.append(msg)
            self._pending.append(msg)

    # --- what a page gets -----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        eng = self.engine
        if eng is not None:
            c = eng.counts
            counts = {
                k: int(c[k]) for k in ("windows", "accepted", "rejected", "dropped", "skipped_gap")
            }
            lat = eng.latency.summary()
            latency = {k: lat.get(k) for k in ("n", "p50", "p95", "p99", "max")}
            stream_s = round(float(eng.stream_t), 3)
        else:
            counts = {"windows": self._windows}
            arr = np.asarray(self._latency)
            latency = {"n": int(arr.size)}
            if arr.size:
                latency.update(
                    p50=round(float(np.percentile(arr, 50)), 3),
                    p99=round(float(np.percentile(arr, 99)), 3),
                )
            stream_s = None
        return {
            "type": "status",
            "link": self._link,
            "counts": counts,
            "latency_ms": latency,
            "stream_s": stream_s,
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "pages": {"open": self.pages_open, "dropped": self.pages_dropped},
            "hr_device": self._hr_device,
        }

    def snapshot(self, *, live: bool = True) -> list[dict[str, Any]]:
        """Messages that bring a page up to date. For a ``live`` page what is still pending
        is left out: the next flush sends it to every page, this one included."""
        with self._lock:
            pending = set()
            if live:
                pending = {id(m) for m in self._pending} | {id(c) for c in self._pending_ecg}
            out: list[dict[str, Any]] = []
            if id(self._hello) not in pending:
                out.append(self._hello)
            chunks = [c for c in self._history if id(c) not in pending]
            if chunks:
                out.append({"type": "ecg", "chunks": chunks})
            events = [e for e in self._events if id(e) not in pending]
            if events:
                out.append({"type": "events", "events": events})
            if self._last_window is not None and id(self._last_window) not in pending:
                out.append(self._last_window)
            out.append(self._status_locked())
            if self._ended is not None:
                out.append(self._ended)
            return out

    def _take_pending(self) -> list[dict[str, Any]]:
        with self._lock:
            out: list[dict[str, Any]] = []
            if self._pending_ecg:
                out.append({"type": "ecg", "chunks": self._pending_ecg})
                self._pending_ecg = []
            out.extend(self._pending)
            self._pending.clear()
            return out

    # --- server thread --------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0, *, echo: Callable[[str], None] | None = None) -> str:
        """Bind and serve; returns the page's URL (and says where with ``echo``: the URL,
        and a warning when the page is open to the network). Raises :class:`ServeError`
        in one line."""
        require_aiohttp()
        self._thread = threading.Thread(target=self._thread_main, name="anyecg-serve", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise ServeError(
                f"--serve {self._where()}: the web server did not start in {timeout_s:g} s"
            )
        if self._start_error is not None:
            raise ServeError(
                f"--serve {self._where()}: cannot listen ({_reason(self._start_error)})"
            )
        assert self.url is not None
        if echo is not None:
            if not self.address.loopback:
                echo(
                    f"Warning: the dashboard on {self.address.host} is open to the network "
                    "without a password; anyone who can reach this machine sees the stream"
                )
            echo(f"dashboard: {self.url}")
        return self.url

    def _where(self) -> str:
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"{host}:{self.address.port}"

    def close(self, timeout_s: float = 10.0) -> None:
        """Send the last items, close the pages' connections and stop the server."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by start(), or logged after it
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                log.warning("dashboard server stopped: %s", exc)
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()
        files = _load_static()
        clients: set[_Client] = set()

        async def page(request: web.Request) -> web.Response:
            name = request.match_info.get("name") or "index.html"
            body = files.get(name)
            if body is None:
                raise web.HTTPNotFound()
            ctype = _CONTENT_TYPES[name[name.rfind(".") :]]
            return web.Response(body=body, content_type=ctype, charset="utf-8", headers=_HEADERS)

        async def state(request: web.Request) -> web.Response:
            from anyecg_edge.jsonsafe import dumps

            return web.Response(
                text=dumps(self.snapshot(live=False), default=str),
                content_type="application/json",
                headers=_HEADERS,
            )

        async def websocket(request: web.Request) -> web.StreamResponse:
            if len(clients) >= MAX_CLIENTS:
                raise web.HTTPServiceUnavailable(text="too many dashboard pages open")
            # timeout: how long close() waits for the page's close frame (aiohttp: 10 s). A
            # page that never answers held the server thread past close()'s join, and the
            # interpreter then exited around it (tracebacks from its teardown).
            ws = web.WebSocketResponse(heartbeat=20.0, timeout=_CLOSE_TIMEOUT_S)
            await ws.prepare(request)
            client = _Client(ws)
            for msg in self.snapshot():
                client.offer(_encode(msg))
            clients.add(client)
            self.pages_open = len(clients)
            self.pages_served += 1
            sender = asyncio.create_task(client.run())
            try:
                async for _ in ws:  # the page sends nothing we act on; this sees the close
                    pass
            finally:
                clients.discard(client)
                sender.cancel()
            return ws

        @web.middleware
        async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
            refused = _refused(request.host, request.headers.get("Origin"), self.address)
            if refused:
                raise web.HTTPForbidden(text=refused)
            return await handler(request)

        app = web.Application(middlewares=[guard])
        app.router.add_get("/", page)
        app.router.add_get("/ws", websocket)
        app.router.add_get("/state.json", state)
        app.router.add_get("/{name:[a-z]+\\.(?:js|css|html)}", page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.address.host, self.address.port)
            await site.start()
            port = _bound_port(runner, self.address.port)
            self.port = port
            self.url = self.address.url(port)
            self._ready.set()
            next_status = 0.0
            while not self._stop.is_set():
                with _suppress_timeout():
                    await asyncio.wait_for(self._stop.wait(), self.flush_s)
                msgs = self._take_pending()
                now = time.monotonic()
                if now >= next_status or self._stop.is_set():
                    msgs.append(self.status())
                    next_status = now + STATUS_S
                texts = [_encode(m) for m in msgs]  # once, whatever the number of pages
                for client in list(clients):
                    for text in texts:
                        if not client.offer(text):
                            clients.discard(client)  # too slow: dropped, its page reconnects
                            self.pages_dropped += 1
                            break
                self.pages_open = len(clients)
            # Let the senders deliver the last items (the summary) before the sockets close.
            await asyncio.gather(*(c.drain(1.0) for c in clients), return_exceptions=True)
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        finally:
            await runner.cleanup()


class _Client:
    """One page's WebSocket and its bounded outbox."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=_CLIENT_QUEUE)
        self.dropped = False

    def offer(self, text: str) -> bool:
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            asyncio.ensure_future(self.close())
            return False

    async def run(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                await self.ws.send_str(text)
                self.queue.task_done()
        except (ConnectionError, RuntimeError) as exc:  # the page went away mid-send
            log.debug("dashboard: page gone: %s", exc)
            self.dropped = True

    async def drain(self, timeout_s: float) -> None:
        with _suppress_timeout():
            await asyncio.wait_for(self.queue.join(), timeout_s)

    async def close(self) -> None:
        try:
            await self.ws.close()
        except Exception as exc:  # a peer gone mid-close
            log.debug("dashboard: close failed: %s", exc)


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, (asyncio.TimeoutError, TimeoutError))


_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Everything from this server; the page loads nothing else.
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
}

_LINK_STATE = {
    "connected": "streaming",
    "reconnect": "streaming",
    "disconnect": "reconnecting",
    "silence": "no data: reconnecting",
    "connect_failed": "connecting",
    "gave_up": "link given up",
}
# Heart-rate events from the standard Heart Rate service (device-side HR, RR intervals).
_HR_EVENTS = {"heart_rate"}


def _encode(msg: dict[str, Any]) -> str:
    from anyecg_edge.jsonsafe import dumps

    return dumps(msg, separators=(",", ":"), default=str)


_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}


def _refused(host: str, origin: str | None, address: ServeAddress) -> str | None:
    """Why a request is refused, or None. On loopback only requests naming this machine
    (a DNS-rebound name would reach the page otherwise); WebSockets only from this page's
    own origin (browsers let any site open a WebSocket to 127.0.0.1)."""
    name = urlsplit(f"//{host}").hostname or ""
    if address.loopback and not (name in _LOCAL_NAMES or name.startswith("127.")):
        return f"this dashboard answers to 127.0.0.1/localhost only, not {host!r}"
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return "cross-origin request refused"
    return None


def _end_summary(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("windows", "accepted", "rejected", "dropped", "skipped_gap", "stream_s", "wall_s",
            "interrupted", "latency_ms", "events")  # fmt: skip
    return {k: s[k] for k in keep if k in s}


def _load_static() -> dict[str, bytes]:
    root = resources.files("anyecg_edge.stream") / "static"
    return {name: (root / name).read_bytes() for name in _STATIC}


def _bound_port(runner: Any, asked: int) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return asked


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"host not found: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        # (asyncio's bind error carries the address in strerror; the code says it all)
        name = errno.errorcode.get(exc.errno)
        text = os.strerror(exc.errno)
        return f"{text}, {name}" if name else text
    return " ".join(str(exc).split()) or type(exc).__name__
