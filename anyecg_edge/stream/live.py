"""Live terminal view (rich) of a running stream: link state, signal quality, heart
rate, window counters, latency and the top smoothed lab estimates with their call and
calibration interval.

Every line is laid out for the console's width (tested at 80, 120 and 200 columns):
nothing wraps and nothing is cut mid-word; a long source path is shortened in the middle,
an event line keeps the fields that fit and ends in an ellipsis. Show it with
:func:`live_display`, which also routes log records through the display (a record
written straight to the terminal under a live display leaves a stale copy of the panel
above it).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from anyecg_edge.stream.engine import StreamEngine

__all__ = ["LiveView", "live_display"]

_LINK_EVENTS = {
    "connected": "streaming",
    "reconnect": "streaming",
    "disconnect": "reconnecting",
    "silence": "no data: reconnecting",
    "connect_failed": "connecting",
}

# Columns the panel's border and padding take from the console width.
_PANEL_CHROME = 4
_MIN_BAR, _MAX_BAR = 6, 20
_LABS_TITLE = "Top lab estimates (smoothed P(abnormal))"
_N_EVENTS = 5


def _shorten(text: str, width: int) -> str:
    """``text`` within ``width`` cells, the middle replaced by an ellipsis if needed (the
    head and tail of a path are the informative parts)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _event_line(item: dict[str, Any], width: int) -> str:
    """``t  kind: k=v, k=v`` with as many whole fields as fit in ``width``; dropped
    fields are marked by a trailing ellipsis, never a field cut in two."""
    kind = str(item.get("event"))
    t = item.get("t")
    line = (f"{t:7.1f} s  " if isinstance(t, (int, float)) else "") + kind
    fields = [f"{k}={v}" for k, v in item.items() if k not in ("event", "t")]
    if len(line) > width:
        return _shorten(line, width)
    for i, field in enumerate(fields):
        sep = ": " if i == 0 else ", "
        more = i + 1 < len(fields)
        if len(line) + len(sep) + len(field) + (3 if more else 0) > width:
            return line + (" …" if len(line) + 2 <= width else "")
        line += sep + field
    return line


class LiveView:
    """Feed it every JSONL item (``update``); render with :func:`live_display` (or any
    rich console: it lays itself out for the width it is given)."""

    def __init__(self, engine: StreamEngine, *, source: str, top_k: int = 5) -> None:
        self.engine = engine
        self.source = source
        self.top_k = top_k
        self.link = "starting"
        self.last_window: dict[str, Any] | None = None
        self.recent: deque[dict[str, Any]] = deque(maxlen=_N_EVENTS)
        self.device_hr: dict[str, Any] | None = None  # the last heart_rate record
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def update(self, item: dict[str, Any]) -> None:
        with self._lock:
            kind = item.get("event")
            if kind == "heart_rate":  # the device's own HR, once a second: a value, not an event
                self.device_hr = item
                return
            if kind is None:
                self.last_window = item
                if self.link == "starting":  # a file replay has no link events
                    self.link = "streaming"
                return
            self.link = _LINK_EVENTS.get(kind, self.link)
            self.recent.append(dict(item))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(40, options.max_width)
        inner = width - _PANEL_CHROME
        with self._lock:
            win = self.last_window
            recent = list(self.recent)
            link = self.link
        yield Panel(
            Group(
                self._head(win, link, inner),
                self._labs(inner),
                Panel(
                    self._events(recent, inner - _PANEL_CHROME),
                    title="events",
                    border_style="dim",
                ),
            ),
            title=_shorten("AnyECG-Edge stream (research estimates, not a diagnosis)", inner),
            width=width,
        )

    def _head(self, win: dict[str, Any] | None, link: str, inner: int) -> Table:
        eng = self.engine
        c = eng.counts
        label_w = 10  # "heart rate" + the grid's 2-cell gap
        value_w = max(10, inner - label_w - 2)
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold", no_wrap=True, width=label_w)
        head.add_column(no_wrap=True, overflow="ellipsis", max_width=value_w)

        def row(label: str, *parts: tuple[str, str]) -> None:
            text = Text(no_wrap=True, overflow="ellipsis")
            for s, style in parts:
                text.append(s, style=style)
            head.add_row(label, text)

        link_style = "green" if link == "streaming" else "yellow"
        src = _shorten(self.source, max(8, value_w - len(link) - 2))
        row("source", (src + "  ", ""), (link, link_style))
        if win is None:
            row("signal", ("waiting for the first 10 s window...", "dim"))
        else:
            q = win["quality"]
            where = f"   (window ending t={win['t']:.1f} s)"
            if q["ok"]:
                row("signal", ("good", "green"), (where, ""))
            else:
                reasons = _shorten(", ".join(q["reasons"]), max(8, value_w - 10 - len(where)))
                row("signal", ("rejected", "red"), (": " + reasons + where, ""))
            hr = q.get("heart_rate_bpm")
            dev = self.device_hr
            row(
                "heart rate",
                ("--" if hr is None else f"{hr:.0f} bpm", ""),
                ("" if dev is None else f"   device {dev['hr_bpm']} bpm", "dim"),
            )
        counts = (
            f"{c['windows']} ({c['accepted']} used, {c['rejected']} rejected, "
            f"{c['dropped']} dropped, {c['skipped_gap']} skipped at gaps)"
        )
        if len(counts) > value_w:
            counts = (
                f"{c['windows']}: {c['accepted']} used, {c['rejected']} rej., "
                f"{c['dropped']} drop., {c['skipped_gap']} gap"
            )
        row("windows", (counts, ""))
        lat = eng.latency.summary()
        row(
            "latency",
            ("--" if not lat["n"] else f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms", ""),
        )
        elapsed = time.perf_counter() - self._t0
        row("stream", (f"{eng.stream_t:.1f} s of signal in {elapsed:.1f} s", ""))
        return head

    def _labs(self, inner: int) -> Table | Text:
        rows = self.engine.top_labs(self.top_k)
        if not rows:
            # An empty table is only as wide as its headers and would wrap its title.
            return Text(
                _shorten(f"{_LABS_TITLE}: after the first accepted window", inner),
                style="dim",
                no_wrap=True,
            )
        level = self.engine.model.metadata.interval_level
        iv_head = f"{level:.0%} interval" if level else "interval"
        names = [str(r["lab"]) for r in rows]
        status_w = max(len("flag"), *(len(_flag(r)[0]) for r in rows))
        fixed = {"P": 5, "iv": max(len(iv_head), 9), "flag": status_w}
        # Each column costs its content + 2 padding + 1 rule; the table 1 more rule.
        chrome = 1 + 3 * 5
        longest = max(len("lab"), *map(len, names))
        room = inner - chrome - sum(fixed.values())  # for the lab name and the bar
        if longest + _MAX_BAR <= room:
            lab_w, bar_w = longest, _MAX_BAR
        else:  # narrow: names shortened (not below 20) before the bar goes
            lab_w = min(longest, max(20, room - _MIN_BAR))
            bar_w = min(_MAX_BAR, room - lab_w)
        if bar_w < _MIN_BAR:
            bar_w = 0
            lab_w = max(len("lab"), min(longest, room + 3))  # + the bar column's chrome
        table = Table(
            title=_LABS_TITLE if len(_LABS_TITLE) <= inner else None,
            min_width=min(inner, len(_LABS_TITLE) + 2),
            expand=False,
        )
        table.add_column("lab", no_wrap=True, overflow="ellipsis", max_width=lab_w)
        table.add_column("P", justify="right", no_wrap=True)
        table.add_column(iv_head, justify="right", no_wrap=True)
        if bar_w:
            table.add_column("", no_wrap=True, width=bar_w)
        table.add_column("flag", no_wrap=True)
        for r, name in zip(rows, names, strict=True):
            p = r["probability"]
            iv = r["interval"]
            flag, style = _flag(r)
            cells: list[Any] = [
                _shorten(name, lab_w),
                f"{p:.3f}",
                f"{iv[0]:.2f}–{iv[1]:.2f}" if iv else "-",
            ]
            if bar_w:
                cells.append(Text("#" * round(p * bar_w), style=style or "cyan"))
            cells.append(Text(flag, style=style))
            table.add_row(*cells)
        return table

    @staticmethod
    def _events(recent: list[dict[str, Any]], width: int) -> Text:
        if not recent:
            return Text("no events", style="dim")
        return Text(
            "\n".join(_event_line(e, width) for e in recent),
            style="dim",
            no_wrap=True,
            overflow="ellipsis",
        )


def _flag(row: dict[str, Any]) -> tuple[str, str]:
    """The call column: (text, style)."""
    if row["abnormal"] is None:
        return str(row["status"]), "dim"
    if row["abnormal"]:
        return "ABNORMAL", "bold red"
    return "normal", "green"


@contextlib.contextmanager
def live_display(
    view: LiveView, *, console: Console | None = None, refresh_per_second: float = 4
) -> Iterator[Live]:
    """Show ``view`` in a rich Live display until the block ends (the last frame stays).

    Log records go through the display while it runs: rich redirects ``sys.stdout`` /
    ``sys.stderr`` to print above the panel, but logging's handlers keep the streams
    they were created with, and a record written there moves the cursor under rich, so
    the next frame is drawn below an old one (the stale "starting" panel)."""
    before = {"stdout": sys.stdout, "stderr": sys.stderr}
    live = Live(view, console=console, refresh_per_second=refresh_per_second, transient=False)
    with live:
        swapped: list[tuple[logging.StreamHandler, Any]] = []
        for handler in logging.getLogger().handlers:
            if not isinstance(handler, logging.StreamHandler):
                continue
            for name, original in before.items():
                proxy = getattr(sys, name)
                if handler.stream is original and proxy is not original:
                    swapped.append((handler, handler.setStream(proxy)))
        try:
            yield live
        finally:
            for handler, stream in swapped:
                handler.setStream(stream)
