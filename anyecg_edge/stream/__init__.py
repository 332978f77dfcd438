"""Streaming engine (issue 7, no torch): ring buffer -> rolling 10 s windows every hop ->
quality gate + preprocess (resample to 500 Hz) -> model -> smoothed per-lab estimates,
with gap skipping, backpressure and per-window latency.

* `StreamEngine` (engine.py): push `Block`s (from a file replay or from the BLE
  sequencer), get one dict per window and per event through a sink.
* `sources`: ``file:PATH`` replay, ``sim-<profile>:PATH`` simulated wearables over a real
  GATT exchange, ``<profile>:ADDR`` real devices.
* `live.LiveView`: the rich terminal view.
"""

from anyecg_edge.stream.engine import StreamEngine, StreamError, resampling_rate
from anyecg_edge.stream.latency import LatencyStats
from anyecg_edge.stream.ring import RingBuffer

__all__ = ["LatencyStats", "RingBuffer", "StreamEngine", "StreamError", "resampling_rate"]
