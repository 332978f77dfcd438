"""Live terminal view (rich) of a running stream: link state, signal quality, heart
rate, window counters, latency and the top smoothed lab estimates."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from anyecg_edge.stream.engine import StreamEngine

__all__ = ["LiveView"]

_LINK_EVENTS = {
    "connected": "streaming",
    "reconnect": "streaming",
    "disconnect": "reconnecting",
    "silence": "no data: reconnecting",
    "connect_failed": "reconnecting",
}


class LiveView:
    """Feed it every JSONL item (``update``); render with ``rich.live.Live(view)``."""

    def __init__(self, engine: StreamEngine, *, source: str, top_k: int = 5) -> None:
        self.engine = engine
        self.source = source
        self.top_k = top_k
        self.link = "starting"
        self.last_window: dict[str, Any] | None = None
        self.recent: deque[str] = deque(maxlen=5)
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()

    def update(self, item: dict[str, Any]) -> None:
        with self._lock:
            kind = item.get("event")
            if kind is None:
                self.last_window = item
                return
            self.link = _LINK_EVENTS.get(kind, self.link)
            details = ", ".join(f"{k}={v}" for k, v in item.items() if k not in ("event",))
            self.recent.append(f"{kind}: {details}"[:100])

    def __rich__(self) -> Panel:
        with self._lock:
            win = self.last_window
            recent = list(self.recent)
            link = self.link
        eng = self.engine
        c = eng.counts
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        link_style = "green" if link == "streaming" else "yellow"
        head.add_row("source", f"{self.source}  [{link_style}]{link}[/]")
        if win is None:
            head.add_row("signal", "[dim]waiting for the first 10 s window...[/]")
        else:
            q = win["quality"]
            quality = (
                "[green]good[/]" if q["ok"] else "[red]rejected[/]: " + ", ".join(q["reasons"])
            )
            head.add_row("signal", f"{quality}   (window ending t={win['t']:.1f} s)")
            hr = q.get("heart_rate_bpm")
            head.add_row("heart rate", "--" if hr is None else f"{hr:.0f} bpm")
        lat = eng.latency.summary()
        head.add_row(
            "windows",
            f"{c['windows']} ({c['accepted']} used, {c['rejected']} rejected, "
            f"{c['dropped']} dropped, {c['skipped_gap']} skipped at gaps)",
        )
        head.add_row(
            "latency",
            "--" if not lat["n"] else f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms",
        )
        head.add_row("stream", f"{eng.stream_t:.1f} s in {time.perf_counter() - self._t0:.1f} s")
        labs = Table(title="Top lab estimates (smoothed P(abnormal))", expand=False)
        labs.add_column("lab")
        labs.add_column("P", justify="right")
        labs.add_column("interval", justify="right")
        labs.add_column("")
        labs.add_column("call")
        for row in eng.top_labs(self.top_k):
            p = row["probability"]
            bar = "#" * round(p * 20)
            style = "red" if row["abnormal"] else "cyan"
            iv = row["interval"]
            labs.add_row(
                row["lab"],
                f"{p:.3f}",
                f"{iv[0]:.2f}–{iv[1]:.2f}" if iv else "-",
                Text(bar.ljust(20), style=style),
                row["status"],
            )
        events = Text("\n".join(recent) if recent else "no events", style="dim")
        return Panel(
            Group(head, labs, Panel(events, title="events", border_style="dim")),
            title="AnyECG-Edge stream (research estimates, not a diagnosis)",
        )
