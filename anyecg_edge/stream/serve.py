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

This module is the observer; ``serve_http`` the web server (thread, pages, WebSockets),
``serve_address`` the ``--serve`` address and which requests are refused.

aiohttp is imported only when a dashboard starts: a device install without it runs every
other command, and ``--serve`` without it fails in one line.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from anyecg_edge.stream.serve_address import (
    DEFAULT_HOST,
    PUBLIC_HOST,
    ServeAddress,
    ServeError,
    ServeUnavailableError,
    parse_address,
    require_aiohttp,
    serve_option,
)
from anyecg_edge.stream.serve_address import refusal as _refused  # noqa: F401 (tests use it)
from anyecg_edge.stream.serve_http import PageServer

__all__ = [
    "DEFAULT_HOST",
    "PUBLIC_HOST",
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

HISTORY_S = 10.0  # ECG kept for a page that connects (what it draws)
DISPLAY_FS_MAX_HZ = 250.0  # samples sent per second at most (a 500 Hz record: every 2nd)
FLUSH_S = 0.1  # how often new samples and items go out
_PENDING_ITEMS = 2000  # items kept while the server thread is behind (oldest dropped)
_N_EVENTS = 30


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
        self._server = PageServer(
            address,
            snapshot=self.snapshot,
            take_pending=self._take_pending,
            status=self.status,
            flush_s=flush_s,
        )

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

    # --- the web server (serve_http.PageServer) -------------------------------------------
    def start(self, timeout_s: float = 15.0, *, echo: Callable[[str], None] | None = None) -> str:
        """Bind and serve; returns the page's URL (and says where with ``echo``: the URL,
        and a warning when the page is open to the network). Raises :class:`ServeError`
        in one line."""
        return self._server.start(timeout_s, echo=echo)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send the last items, close the pages' connections and stop the server."""
        self._server.close(timeout_s)

    @property
    def url(self) -> str | None:
        return self._server.url

    @property
    def port(self) -> int | None:
        return self._server.port

    @property
    def pages_served(self) -> int:
        return self._server.pages_served

    @property
    def pages_open(self) -> int:
        return self._server.pages_open

    @property
    def pages_dropped(self) -> int:
        """Pages that fell behind (their queue full) and were closed."""
        return self._server.pages_dropped


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


def _end_summary(s: dict[str, Any]) -> dict[str, Any]:
    keep = ("windows", "accepted", "rejected", "dropped", "skipped_gap", "stream_s", "wall_s",
            "interrupted", "latency_ms", "events")  # fmt: skip
    return {k: s[k] for k in keep if k in s}
