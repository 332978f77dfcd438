"""The dashboard's web server: aiohttp on its own thread and event loop, serving the static
page, ``/state.json`` and one WebSocket per page with a bounded outbox (a page that falls
behind is dropped; it reconnects and gets a fresh snapshot). It knows nothing of the
stream: every ``flush_s`` it sends what the dashboard hands over."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from anyecg_edge.stream.serve_address import ServeAddress, ServeError, refusal, require_aiohttp

log = logging.getLogger("anyecg_edge.stream.serve")  # one logger for the dashboard, as before

STATUS_S = 1.0  # how often the counters go out
MAX_CLIENTS = 16  # a Pi serving more pages than this is being hammered, not watched
_CLIENT_QUEUE = 64  # messages a client may lag (6 s of flushes) before it is dropped
_CLOSE_TIMEOUT_S = 1.0  # a page's close handshake (all pages close at once)
_STATIC = ("index.html", "app.js", "style.css")
_CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}

Messages = Callable[[], list[dict[str, Any]]]


class PageServer:
    """Serves the pages of one dashboard. ``snapshot(live=...)`` brings a new page up to
    date, ``take_pending()`` gives what came in since the last flush, ``status()`` the
    counters sent every ``STATUS_S``. ``start`` binds (raises :class:`ServeError`),
    ``close`` sends the last items and stops."""

    def __init__(
        self,
        address: ServeAddress,
        *,
        snapshot: Callable[..., list[dict[str, Any]]],
        take_pending: Messages,
        status: Callable[[], dict[str, Any]],
        flush_s: float,
    ) -> None:
        self.address = address
        self.snapshot = snapshot
        self.take_pending = take_pending
        self.status = status
        self.flush_s = flush_s
        self.url: str | None = None
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.pages_served = 0
        self.pages_open = 0
        self.pages_dropped = 0  # pages that fell behind (their queue full) and were closed

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
            refused = refusal(request.host, request.headers.get("Origin"), self.address)
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
                msgs = self.take_pending()
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


def _encode(msg: dict[str, Any]) -> str:
    from anyecg_edge.jsonsafe import dumps

    return dumps(msg, separators=(",", ":"), default=str)


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
