"""Streaming engine (issue 7, no torch): ring buffer -> rolling 10 s windows every hop ->
quality gate + preprocess (resample to 500 Hz) -> model -> smoothed per-lab estimates,
with gap skipping, backpressure and per-window latency.

* `StreamEngine` (engine.py): push `Block`s (from a file replay or from the BLE
  sequencer), get one dict per window and per event through a sink.
* `types`: `Block`, `SeqEvent`, `FrameFlags` - what sources produce (the BLE side
  imports them from here).
* `sources`: ``file:PATH`` replay, ``sim-<profile>:PATH`` simulated wearables over a real
  GATT exchange, ``<profile>:ADDR`` real devices.
* `live.LiveView`: the rich terminal view.

The names below load on first use (PEP 562): the BLE side imports ``stream.types``
without pulling in the engine's model runtime (~2.7 s of imports).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anyecg_edge.stream.engine import StreamEngine, StreamError, resampling_rate
    from anyecg_edge.stream.latency import LatencyStats
    from anyecg_edge.stream.ring import RingBuffer

__all__ = ["LatencyStats", "RingBuffer", "StreamEngine", "StreamError", "resampling_rate"]

_HOME = {
    "LatencyStats": "latency",
    "RingBuffer": "ring",
    "StreamEngine": "engine",
    "StreamError": "engine",
    "resampling_rate": "engine",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
