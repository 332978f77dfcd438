"""The streaming engine: contiguous sample blocks in, per-window lab estimates out.

    blocks (any rate) -> ring buffer -> every hop: the last 10 s of raw samples
    -> quality gate (raw mV, device rate) -> preprocess (resample to 500 Hz + the
    authors' chain) -> model -> per-lab probabilities -> exponential smoothing

Why the window is resampled per hop (not the stream once): it is exactly what the batch
path (`anyecg_edge.predict`) does to a record, so a replayed file gives the same
numbers as `predict`; the polyphase resampler costs ~1 ms per window.

Threads: ``push`` runs on the receiving side (BLE callbacks, file replay) and only
copies the window out of the ring; gating, preprocessing and inference run on one
worker thread behind a bounded queue. Reception never waits for inference: when the
queue is full the oldest waiting window is dropped and counted (``drop`` event). A
file replayed as fast as possible (``lossless=True``) waits instead: a file can.

Gaps: blocks carry a segment id (see `anyecg_edge.firmware_bridge.sequencer`); a new
segment empties the window, so no window ever spans a gap (the windows it would have
produced are counted as ``skipped_gap``).

Latency: from the arrival of the block holding a window's last sample
(``Block.arrival_ns``, ``time.perf_counter_ns``) to the window's result.

Time: every window and event carries ``t`` (stream time, s: the device's clock, or the
record's) and ``t_utc`` (ISO-8601 UTC). ``t_utc`` is the host's clock anchored once, when the
first samples arrived (given to the last sample of that first block), plus the stream time
since: the device clock measures intervals only, so a host clock step mid-session moves
nothing. Before the first sample ``t_utc`` is the host clock at the moment of writing.

Failures never hang: a sink that raises (a full disk, a closed pipe) is recorded once as
``sink_error``, every later item is discarded, ``on_failure`` is called (the CLI stops the
source with it) and a lossless ``push`` stops waiting; every queue wait and the worker join
are bounded, so ``close`` returns even when the worker is gone.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from typing import Any

import numpy as np

from anyecg_edge.estimates import interval_bounds, lab_entry
from anyecg_edge.runtime import Model
from anyecg_edge.signal import SignalError, assess_quality, preprocess
from anyecg_edge.signal.windows import raw_window_samples
from anyecg_edge.stream.latency import LatencyStats
from anyecg_edge.stream.ring import RingBuffer
from anyecg_edge.stream.types import Block, FrameFlags

__all__ = ["StreamEngine", "StreamError", "resampling_rate", "utc_iso"]

log = logging.getLogger(__name__)

Sink = Callable[[dict[str, Any]], None]


class StreamError(ValueError):
    """A bad streaming setting (one line naming the option and what was expected)."""


class SinkFailedError(StreamError):
    """``push`` after the sink failed: the stream cannot deliver results any more."""


# Longest single wait on the queue: waits loop on it, re-checking for failure/shutdown.
_POLL_S = 0.1


# A device rate within this of nominal is treated as nominal (exact small up/down).
_NOMINAL_TOLERANCE = 1e-4
# Largest denominator of the resampling ratio for a measured rate: keeps the polyphase
# filter small (130.04 Hz -> 500 Hz as 173/45, i.e. 130.058 Hz, 0.013 % off).
_MAX_DENOMINATOR = 200


def resampling_rate(fs_est: float, nominal_fs: float | None, target_fs: float) -> float:
    """The rate a window is resampled from: nominal when the estimate agrees with it,
    else the estimate rounded to a ratio target/fs with a small denominator."""
    if nominal_fs and abs(fs_est / nominal_fs - 1.0) <= _NOMINAL_TOLERANCE:
        return float(nominal_fs)
    ratio = Fraction(target_fs / fs_est).limit_denominator(_MAX_DENOMINATOR)
    return float(target_fs * ratio.denominator / ratio.numerator)


def utc_iso(epoch_s: float) -> str:
    """POSIX seconds -> ISO-8601 UTC with milliseconds (``2026-12-07T00:32:16.123+00:00``)."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Job:
    raw: np.ndarray
    fs: float
    t_end_s: float
    segment: int
    arrival_ns: int
    lead_off: bool


class StreamEngine:
    """Rolling-window inference over a live stream. Call ``start``, ``push`` blocks (and
    ``event`` dicts), then ``close`` for the summary. Thread-safe sink calls."""

    def __init__(
        self,
        model: Model,
        *,
        hop_s: float,
        nominal_fs: float | None = None,
        smooth_s: float = 30.0,
        queue_size: int = 2,
        lossless: bool = False,
        mains_hz: float | None | str = "model",
        sink: Sink | None = None,
    ) -> None:
        if not (math.isfinite(hop_s) and hop_s > 0):
            raise StreamError(f"--hop must be a positive number of seconds, got {hop_s!r}")
        if not (math.isfinite(smooth_s) and smooth_s >= 0):
            raise StreamError(f"--smooth must be a finite number >= 0 s, got {smooth_s!r}")
        if queue_size < 1:
            raise StreamError(f"--queue must be >= 1, got {queue_size!r}")
        meta = model.metadata
        self.model = model
        self.labs = list(model.labs)
        self.hop_s = float(hop_s)
        self.window_s = float(meta.window_s)
        self.target_fs = float(meta.fs)
        self.n_out = meta.window_samples
        self.nominal_fs = nominal_fs
        self.smooth_s = float(smooth_s)
        self.lossless = lossless
        self.mains_hz = meta.mains_hz if mains_hz == "model" else mains_hz
        self._sink = sink
        self._sink_lock = threading.Lock()
        #: The first exception the sink raised (None while it works); see the module doc.
        self.sink_error: BaseException | None = None
        #: Called once, from whichever thread saw the sink fail.
        self.on_failure: Callable[[BaseException], None] | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._worker: threading.Thread | None = None
        self._ring: RingBuffer | None = None
        self._segment: int | None = None
        self._next_end = 0  # segment-local end index of the next window
        self._lead_off: deque[tuple[int, int]] = deque()
        self._last_window_t: float | None = None
        self._pending_skip_from: float | None = None
        self._t_start = 0.0
        self._smoothed: np.ndarray | None = None
        self._smoothed_t: float | None = None
        self._smoothed_boot: np.ndarray | None = None
        self._thresholds = model.thresholds()
        self.latency = LatencyStats()
        # Worker time per window (gate + preprocess + its share of the model batch):
        # latency minus this is time spent waiting in the queue.
        self.compute = LatencyStats()
        self.counts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.stream_t = 0.0
        #: (stream time, host POSIX time) of the first samples' arrival; see the module doc.
        self.utc_anchor: tuple[float, float] | None = None
        self._t_wall0 = time.perf_counter()
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> StreamEngine:
        self._worker = threading.Thread(target=self._run_worker, name="anyecg-infer", daemon=True)
        self._worker.start()
        return self

    def close(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Finish the queued windows (at most ``timeout_s``) and return the summary."""
        if not self._closed:
            self._closed = True
            if self._pending_skip_from is not None:
                self._count_skipped(self.stream_t + self.hop_s)
            worker = self._worker
            if worker is not None:
                deadline = time.monotonic() + timeout_s
                # Bounded: a dead worker never empties a full queue (the old unbounded put
                # hung here after the sink failed).
                while worker.is_alive() and time.monotonic() < deadline:
                    try:
                        self._queue.put(None, timeout=_POLL_S)
                        break
                    except queue.Full:
                        if self.sink_error is not None:
                            self._drain()
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    log.warning(
                        "inference worker still busy after %.0f s; not waited for", timeout_s
                    )
                    self.counts["unfinished"] += self._queue.qsize()
        return self.summary()

    @property
    def failed(self) -> bool:
        """The sink failed: results can no longer be delivered."""
        return self.sink_error is not None

    def _drain(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self.counts["discarded"] += 1

    # --- receiving side -------------------------------------------------------------------
    def utc_at(self, t_s: float) -> str:
        """ISO-8601 UTC of stream time ``t_s`` (host clock before the first sample)."""
        anchor = self.utc_anchor
        if anchor is None:
            return utc_iso(time.time())
        return utc_iso(anchor[1] + (t_s - anchor[0]))

    def event(self, ev: dict[str, Any]) -> None:
        """Forward a source/transport event (gap, reconnect, ...) to the sink and count it."""
        self.events[ev.get("event", "?")] += 1
        if "t" not in ev:  # stamp transport events with the stream time they happened at
            ev = {"event": ev.get("event"), "t": round(self.stream_t, 3), **ev}
        if "t_utc" not in ev:
            ev = {**ev, "t_utc": self.utc_at(float(ev["t"]))}
        self._emit(ev)

    def push(self, block: Block) -> None:
        if self.sink_error is not None or block.n == 0:
            return  # (a failed output: the caller stops its source through on_failure)
        if self.utc_anchor is None:
            # The host's clock when this block arrived, given to its last sample.
            age_s = (
                max(0, time.perf_counter_ns() - block.arrival_ns) / 1e9 if block.arrival_ns else 0.0
            )
            self.utc_anchor = (block.t_first_s + block.n / block.fs_hz, time.time() - age_s)
        if self._ring is None or block.segment != self._segment:
            self._new_segment(block)
        assert self._ring is not None
        if block.flags & FrameFlags.LEAD_OFF:
            self._lead_off.append((block.seg_index, block.seg_index + block.n))
        # Blocks larger than the ring's spare room are taken in pieces.
        spare = self._ring.capacity - self._window_len(block) - 1
        start = 0
        while start < block.n:
            stop = min(block.n, start + max(1, spare))
            self._ring.extend(block.samples_mv[start:stop])
            self._schedule(block)
            start = stop
        self.stream_t = block.t_first_s + block.n / block.fs_hz

    def _new_segment(self, block: Block) -> None:
        fs = resampling_rate(block.fs_hz, self.nominal_fs, self.target_fs)
        # Room for a window, a hop and large incoming blocks.
        capacity = 2 * math.ceil(self.window_s * fs * 1.1) + math.ceil(self.hop_s * fs) + 8192
        if self._ring is None or self._ring.capacity < capacity:
            self._ring = RingBuffer(capacity)
        self._ring.clear()
        if self._segment is None:
            self._t_start = block.t_first_s
        elif self._pending_skip_from is None:
            # Windows continue on a hop grid from the last one (or from where the first
            # would have ended); those that would have spanned the gap are counted.
            self._pending_skip_from = (
                self._last_window_t
                if self._last_window_t is not None
                else self._t_start + self.window_s - self.hop_s
            )
        self._segment = block.segment
        self._lead_off.clear()
        self._next_end = self._window_len(block)
        if block.seg_index != 0:
            log.warning("segment %d starts at index %d", block.segment, block.seg_index)

    def _fs(self, block: Block) -> float:
        return resampling_rate(block.fs_hz, self.nominal_fs, self.target_fs)

    def _window_len(self, block: Block) -> int:
        """Raw samples whose resampling yields at least the model's window."""
        return raw_window_samples(self.n_out, self._fs(block), self.target_fs)

    def _schedule(self, block: Block) -> None:
        ring = self._ring
        assert ring is not None
        while self._next_end <= ring.total:
            end = self._next_end
            fs = self._fs(block)
            n_win = self._window_len(block)
            if end < n_win:
                self._next_end = n_win
                continue
            t_end = block.t_first_s + (end - block.seg_index) / block.fs_hz
            if self._pending_skip_from is not None:
                self._count_skipped(t_end)
            while self._lead_off and self._lead_off[0][1] <= end - n_win:
                self._lead_off.popleft()
            lead_off = any(a < end and b > end - n_win for a, b in self._lead_off)
            job = _Job(
                ring.window(end, n_win), fs, t_end, block.segment, block.arrival_ns, lead_off
            )
            self._submit(job)
            self.counts["scheduled"] += 1
            self._last_window_t = t_end
            self._next_end = end + max(1, round(self.hop_s * fs))

    def _count_skipped(self, t_first_new: float) -> None:
        t_last = self._pending_skip_from
        self._pending_skip_from = None
        if t_last is None:
            return
        skipped = max(0, math.ceil((t_first_new - t_last) / self.hop_s - 1e-6) - 1)
        self.counts["skipped_gap"] += skipped

    def _submit(self, job: _Job) -> None:
        if self.lossless:
            # Wait for room, but never forever: not once the sink failed or the worker died.
            while True:
                if self.sink_error is not None:
                    raise SinkFailedError(f"the stream's output failed: {self.sink_error}")
                if self._worker is not None and not self._worker.is_alive():
                    raise StreamError("the inference worker stopped; no window can be scored")
                try:
                    self._queue.put(job, timeout=_POLL_S)
                    return
                except queue.Full:
                    continue
        try:
            self._queue.put_nowait(job)
            return
        except queue.Full:
            pass
        # Inference is behind: drop the oldest waiting window, keep the newest.
        try:
            old = self._queue.get_nowait()
        except queue.Empty:
            old = None
        self._queue.put_nowait(job)
        if old is not None:
            self.counts["dropped"] += 1
            self.event(
                {
                    "event": "drop",
                    "reason": "backpressure",
                    "t": round(old.t_end_s, 3),
                    "dropped_total": self.counts["dropped"],
                }
            )

    # --- worker -----------------------------------------------------------------------------
    def _run_worker(self) -> None:
        done = False
        while not done:
            try:
                job = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if job is None:
                break
            if self.sink_error is not None:  # nowhere to deliver: drop, keep the queue moving
                self.counts["discarded"] += 1
                continue
            batch = [job]
            # Whatever else is waiting goes through the model in one batch.
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            try:
                self._process(batch)
            except Exception as exc:  # never let one window stop the stream
                log.warning(
                    "window processing failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG)
                )
                self.counts["errors"] += len(batch)
                self.event({"event": "error", "where": "inference", "error": str(exc)})

    def _process(self, batch: list[_Job]) -> None:
        t0 = time.perf_counter_ns()
        gated: list[tuple[_Job, list[str], float | None]] = []
        accepted: list[np.ndarray] = []
        for job in batch:
            reasons, hr = self._gate(job)
            if not reasons:
                try:
                    x = preprocess(
                        job.raw, job.fs, mains_hz=self.mains_hz, target_fs=self.target_fs
                    )
                    accepted.append(x[-self.n_out :])
                except SignalError as exc:
                    reasons = [f"preprocess: {exc}"]
            gated.append((job, reasons, hr))
        probs = boot = finite = None
        if accepted:
            logits = self.model.logits(np.stack(accepted)[:, None, :])
            # A NaN/inf output would poison the smoothed state for good: that window is
            # rejected instead (never a NaN estimate).
            finite = np.isfinite(logits).all(axis=1)
            with np.errstate(invalid="ignore"):
                probs = self.model.calibrate(logits)
                boot = self.model.bootstrap_probabilities(logits)
        compute_ms = (time.perf_counter_ns() - t0) / 1e6 / len(batch)
        k = 0
        for job, reasons, hr in gated:
            window_probs = None
            if not reasons:
                assert probs is not None and finite is not None
                if finite[k]:
                    window_probs = probs[k]
                    self._smooth(window_probs, None if boot is None else boot[k], job.t_end_s)
                else:
                    reasons = ["model: non-finite output"]
                k += 1
            self.compute.add(compute_ms)
            self._finish(job, reasons, hr, window_probs)

    def _gate(self, job: _Job) -> tuple[list[str], float | None]:
        try:
            report = assess_quality(job.raw, job.fs)
        except SignalError as exc:
            return [f"quality: {exc}"], None
        reasons = list(report.reasons)
        if job.lead_off:
            reasons.insert(0, "lead_off")
        hr = report.metrics.get("heart_rate_bpm")
        hr = None if hr is None or not math.isfinite(hr) else round(float(hr), 1)
        return reasons, hr

    def _smooth(self, p: np.ndarray, boot: np.ndarray | None, t: float) -> None:
        """Exponential smoothing of the probabilities and, alike, of each bootstrap
        calibration's probabilities (so the interval belongs to the smoothed estimate)."""
        p = p.astype(np.float64)
        if self._smoothed is None or self.smooth_s == 0 or self._smoothed_t is None:
            self._smoothed, self._smoothed_boot = p, boot
        else:
            w = 1.0 - math.exp(-max(0.0, t - self._smoothed_t) / self.smooth_s)
            self._smoothed = self._smoothed + w * (p - self._smoothed)
            if boot is not None and self._smoothed_boot is not None:
                self._smoothed_boot = self._smoothed_boot + w * (boot - self._smoothed_boot)
        self._smoothed_t = t

    def _finish(
        self, job: _Job, reasons: list[str], hr: float | None, probs: np.ndarray | None
    ) -> None:
        latency_ms = (time.perf_counter_ns() - job.arrival_ns) / 1e6
        self.latency.add(latency_ms)
        self.counts["windows"] += 1
        self.counts["accepted" if probs is not None else "rejected"] += 1
        smoothed = self._smoothed
        out = {
            "t": round(job.t_end_s, 3),
            "t_utc": self.utc_at(job.t_end_s),
            "t_start": round(job.t_end_s - self.window_s, 3),
            "segment": job.segment,
            "fs_hz": round(job.fs, 4),
            "quality": {"ok": not reasons, "reasons": reasons, "heart_rate_bpm": hr},
            "labs": None if smoothed is None else self._estimates(compact=True),
            "window_labs": None if probs is None else self._labs_dict(probs),
            "latency_ms": round(latency_ms, 3),
        }
        self._emit(out)

    def _estimates(self, *, compact: bool) -> dict[str, dict[str, Any]]:
        """Per-lab entries of the smoothed estimate (call, threshold, interval)."""
        assert self._smoothed is not None
        meta = self.model.metadata
        bounds = interval_bounds(self._smoothed_boot, meta.interval_level)
        return {
            lab: lab_entry(
                meta, j, float(self._smoothed[j]), float(self._thresholds[j]), bounds,
                compact=compact,
            )
            for j, lab in enumerate(self.labs)
        }  # fmt: skip

    def _labs_dict(self, p: np.ndarray) -> dict[str, float]:
        return {lab: round(float(v), 4) for lab, v in zip(self.labs, p, strict=True)}

    def _emit(self, item: dict[str, Any]) -> None:
        if self._sink is None or self.sink_error is not None:
            return
        with self._sink_lock:
            if self.sink_error is not None:
                return
            try:
                self._sink(item)
            except Exception as exc:  # full disk, closed pipe...: stop, never retry
                self.sink_error = exc
                failed = exc
            else:
                return
        log.debug("sink failed: %s", failed)
        if self.on_failure is not None:
            self.on_failure(failed)

    # --- results ----------------------------------------------------------------------------
    def top_labs(self, k: int = 5) -> list[dict[str, Any]]:
        """The smoothed estimates, highest first (empty before the first accepted window)."""
        if self._smoothed is None:
            return []
        order = np.argsort(-self._smoothed)[:k]
        entries = self._estimates(compact=True)
        return [{"lab": self.labs[i], **entries[self.labs[i]]} for i in order]

    def summary(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._t_wall0
        c = self.counts
        return {
            "windows": c["windows"],
            "accepted": c["accepted"],
            "rejected": c["rejected"],
            "dropped": c["dropped"],
            "skipped_gap": c["skipped_gap"],
            "errors": c["errors"],
            "latency_ms": self.latency.summary(),
            "compute_ms": self.compute.summary(),
            "stream_s": round(self.stream_t, 3),
            "wall_s": round(wall, 3),
            "speed": round(self.stream_t / wall, 2) if wall > 0 else None,
            "events": dict(sorted(self.events.items())),
            "top_labs": self.top_labs(),
        }
