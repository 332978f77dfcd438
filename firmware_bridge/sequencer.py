"""Frames -> an ordered, gap-marked sample stream, from the device's own timing.

Radio links lose, repeat and reorder notifications, reconnects lose the time base, and
device clocks drift or jump. The sequencer puts every accepted sample exactly once, in
order, into *segments* of contiguous samples and says why a segment ended:

* position of a frame: its sequence number (AnyECG: a sample counter) when it has one,
  else its device timestamp converted to samples with the rate estimated from the
  timestamps themselves (the Polar H10's real rate drifts 128-131 Hz);
* in order (within the tolerance): released at once, no added latency;
* ahead (a hole): held, up to ``reorder_depth`` frames, so a reordered frame can fill
  the hole; when the hole stays open a ``gap`` event ends the segment;
* behind: an exact repeat of a recent frame is a ``duplicate`` (dropped, counted); a
  frame a little older, or one that falls in the hole of a gap already reported (however
  late it comes), is ``late``: dropped, counted and reported by a ``late`` event - its
  samples were declared missing, releasing them now would put them after later ones. Any
  other big step back is a clock reset (new segment);
* with sequence numbers, a timestamp that disagrees with the counter is a
  ``clock_jump``: the samples are continuous, only the time base is re-anchored.
  Without sequence numbers a forward timestamp jump cannot be told from lost frames
  and is reported as a gap (the safe reading).

Tolerance: max(2 samples, a quarter frame). A lost Polar frame is 73 samples, a lost
Movesense frame 16, so a lost frame is never mistaken for timestamp jitter.

Device time is checked against the host clock when ``time_scale`` is given (device seconds
per host second: 1 for a real device, the replay speed for a simulated one): a frame
further ahead than the host's elapsed time since the last frame allows (x1.5, + 2 s) cannot
follow lost samples: it is a ``clock_jump`` (a corrupted or jumped timestamp / counter), the
time base is re-anchored on it and its samples continue the stream; a gap is never longer
than the host clock allows. When the next frame agrees with the time base from before the
fault again (an isolated corrupted timestamp), that base is restored, no gap either.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from anyecg_edge.firmware_bridge.frames import Frame

# Block and SeqEvent live in the stream package (what it consumes); re-exported here.
from anyecg_edge.stream.types import Block, FrameFlags, SeqEvent

__all__ = ["Block", "SeqEvent", "Sequencer"]

# The rate estimate is trusted once its anchor spans this much device time.
MIN_RATE_SPAN_S = 2.0
# Estimates further than this from nominal mean a broken span: measure afresh.
MAX_RATE_DEVIATION = 0.05
# Host-clock bound on a frame's advance: elapsed host time x time_scale x this margin
# (arrival jitter, bursts after a busy radio), plus this slack in device seconds.
HOST_MARGIN = 1.5
HOST_SLACK_S = 2.0


def _digest(frame: Frame) -> int:
    """The frame's samples, hashed: a repeated notification repeats them too."""
    data = frame.codes if frame.codes is not None else frame.samples_mv
    return hash(data.tobytes())


def _unwrap(value: int, last: int | None, modulo: int | None) -> int:
    """The unwrapped value nearest to ``last`` that is congruent to ``value``."""
    if modulo is None or last is None:
        return value
    half = modulo // 2
    return last + ((value - last + half) % modulo) - half


@dataclass
class _Pending:
    frame: Frame
    arrival_ns: int
    key: float


Output = list  # of Block | SeqEvent


class Sequencer:
    """Feed frames in arrival order; get Blocks and SeqEvents in stream order."""

    def __init__(
        self, nominal_fs: float, *, reorder_depth: int = 2, time_scale: float | None = None
    ) -> None:
        self.nominal_fs = float(nominal_fs)
        # Device seconds per host second (None: arrival times are not a clock; no check).
        self.time_scale = time_scale
        self.fs_est = float(nominal_fs)
        self.reorder_depth = int(reorder_depth)
        self.segment = 0
        self.seg_count = 0  # samples released in the current segment
        self.counts = {"duplicate": 0, "late": 0, "gap": 0, "clock_jump": 0, "reordered": 0}
        self._pending: list[_Pending] = []
        # (key, content digest) of recently released frames: a duplicate repeats both. A
        # frame whose key repeats with other samples is not a repeat but a clock that
        # stepped back (it was dropped as a "duplicate", silently).
        self._recent: deque[tuple[float, int]] = deque(maxlen=64)
        self._started = False
        self._break_reason: str | None = None
        self._last_seq: int | None = None  # unwrapped seq of the last released frame
        self._next_seq: int | None = None
        self._last_t_ns: int | None = None  # unwrapped reference time of the last frame
        self._last_ref_index = 0  # its reference sample's index (segment-local)
        self._anchor: tuple[int, int] | None = None  # rate anchor (ref_index, t_ns)
        self._t0_ns: float | None = None  # device time that maps to stream time 0
        self._end_s = 0.0  # stream time just after the last released sample
        self._last_arrival_ns: int | None = None
        self._lead_off = False
        self._battery_low = False
        # The time base from before a clock fault (t0, last_t, last_ref_index), kept for
        # one frame: the next one may show the fault was one corrupted timestamp.
        self._pre_fault: tuple[float | None, int | None, int] | None = None
        # Frames released after the last gap that had waited for its hole: reordered only
        # if a frame of that hole turns up after all (late); a plain loss reorders nothing.
        self._held_at_gap = 0
        # Holes of recent gaps, (first, end) in first-sample key units (sequence numbers or
        # device ns): a frame that turns up in one is late however far behind it is.
        self._holes: deque[tuple[float, float]] = deque(maxlen=16)

    # --- public -----------------------------------------------------------------------
    def break_segment(self, reason: str) -> Output:
        """The link went down: frames held for reordering are released (their holes will
        not be filled now), and the next frame is checked for continuity; if samples were
        lost (or continuity cannot be told) a gap with this reason is reported."""
        out = self._flush_pending()
        if self._started:
            self._break_reason = reason
        return out

    def push(self, frame: Frame, arrival_ns: int) -> Output:
        out: Output = []
        if not self._started:
            self._begin(frame, arrival_ns)
            out.extend(self._release(frame, arrival_ns))
            return out
        key, seq_u, t_u = self._position(frame)
        d = self._distance(frame, seq_u, t_u)
        tol = self._tolerance(frame.n)
        pre_fault, self._pre_fault = self._pre_fault, None
        bound = self._host_bound(arrival_ns)
        if pre_fault is not None and abs(d) > tol and self._reverts(frame, t_u, pre_fault, bound):
            out.extend(self._revert_fault(frame, arrival_ns, seq_u, t_u, pre_fault))
        elif frame.flags & FrameFlags.TIME_RESET and abs(d) > tol:
            # The device says its counter/clock restarted (reboot): no continuity.
            out.extend(self._flush_pending())
            self._reset("device_reset", out)
            self._begin(frame, arrival_ns)
            out.extend(self._release(frame, arrival_ns))
        elif abs(d) <= tol:
            self._break_reason = None
            out.extend(self._release(frame, arrival_ns, seq_u, t_u))
            out.extend(self._drain())
        elif bound is not None and d > bound:
            out.extend(self._clock_fault(frame, arrival_ns, seq_u, t_u, d))
        elif d > tol and self._break_reason is None:
            self._pending.append(_Pending(frame, arrival_ns, key))
            self._pending.sort(key=lambda p: p.key)
            if len(self._pending) > self.reorder_depth:
                out.extend(self._gap_from_pending())
        elif d > tol:
            # After a reconnect nothing earlier is coming: the hole is a gap at once.
            out.append(self._gap_event(frame, seq_u, t_u, d))
            self._new_segment(round(d))
            out.extend(self._release(frame, arrival_ns, seq_u, t_u))
        else:
            out.extend(self._behind(frame, arrival_ns, key, seq_u, t_u, d))
        return out

    def flush(self) -> Output:
        """Release frames still held for reordering (end of stream)."""
        return self._flush_pending()

    def trailing_stall(self, now_ns: int) -> SeqEvent | None:
        """At the end of a session: a ``stall`` event when nothing arrived for longer than
        the host clock's slack before ``now_ns`` (a device that went silent near the end,
        before any watchdog could fire, would otherwise go unreported)."""
        if self.time_scale is None or self._last_arrival_ns is None:
            return None
        silent_s = max(0.0, (now_ns - self._last_arrival_ns) / 1e9) * self.time_scale
        # (+0.1 s of host time: the session's own shutdown after the last frame)
        if silent_s < HOST_SLACK_S + 0.1 * self.time_scale:
            return None
        return SeqEvent("stall", self._end_s, {"duration_s": round(silent_s, 3), "at_end": True})

    # --- the host clock -----------------------------------------------------------------
    def _host_bound(self, arrival_ns: int) -> float | None:
        """Most samples a frame can lie ahead of the expected position, by the host clock
        (None: no check)."""
        if self.time_scale is None or self._last_arrival_ns is None:
            return None
        elapsed_s = max(0.0, (arrival_ns - self._last_arrival_ns) / 1e9)
        return (elapsed_s * self.time_scale * HOST_MARGIN + HOST_SLACK_S) * self.fs_est

    def _clock_fault(
        self,
        frame: Frame,
        arrival_ns: int,
        seq_u: int | None,
        t_u: int | None,
        d: float,
        reason: str = "beyond_host_clock",
    ) -> Output:
        """A frame further ahead than the host clock allows (or, ``behind_host_clock``, new
        samples on schedule stamped far back): not lost samples but a clock (or counter)
        that jumped or a corrupted stamp. Counted, re-anchored on this frame, whose samples
        continue the stream."""
        # Frames held for reordering arrived before this one: they are placed on the time
        # base they belong to first (a gap if their hole stays open).
        out: Output = self._flush_pending()
        self.counts["clock_jump"] += 1
        elapsed = (arrival_ns - (self._last_arrival_ns or arrival_ns)) / 1e9
        out += [
            SeqEvent(
                "clock_jump", self._end_s,
                {"jump_s": round(d / self.fs_est, 4), "reason": reason,
                 "host_elapsed_s": round(elapsed, 4)},
            )
        ]  # fmt: skip
        self._pre_fault = (self._t0_ns, self._last_t_ns, self._last_ref_index)
        if t_u is not None:
            t_first = t_u - self._ref_offset(frame) * 1e9 / self.fs_est
            self._t0_ns = t_first - self._end_s * 1e9  # this frame starts where the stream is
            self._last_t_ns = None  # (no prediction across the fault: no second jump event)
        if seq_u is not None:
            self._next_seq = seq_u
        self._anchor = None
        out.extend(self._release(frame, arrival_ns, seq_u, t_u))
        out.extend(self._drain())
        return out

    def _reverts(self, frame: Frame, t_u: int | None, pre: tuple, bound: float | None) -> bool:
        """Does this frame continue the time base from before the last clock fault: in
        place, or after frames lost meanwhile (ahead by at most what the host clock allows)?"""
        _, last_t, last_ref = pre
        if t_u is None or last_t is None or frame.seq is not None:
            return False
        ref_index = self.seg_count + self._ref_offset(frame)
        ahead = (t_u - (last_t + (ref_index - last_ref) * 1e9 / self.fs_est)) * self.fs_est / 1e9
        tol = self._tolerance(frame.n)
        return -tol <= ahead <= max(tol, bound or 0.0)

    def _revert_fault(
        self, frame: Frame, arrival_ns: int, seq_u: int | None, t_u: int | None, pre: tuple
    ) -> Output:
        """The fault was one corrupted timestamp: back to the time base from before it."""
        self._t0_ns, self._last_t_ns, self._last_ref_index = pre
        self._anchor = None
        out: Output = [SeqEvent("clock_jump_reverted", self._end_s)]
        d = self._distance(frame, seq_u, t_u)
        if d > self._tolerance(frame.n):  # frames were lost after the corrupted one
            out.append(self._gap_event(frame, seq_u, t_u, d))
            self._new_segment(round(d))
        out.extend(self._release(frame, arrival_ns, seq_u, t_u))
        out.extend(self._drain())
        return out

    # --- positions --------------------------------------------------------------------
    @staticmethod
    def _tolerance(n: int) -> float:
        return max(2.0, 0.25 * n)

    @staticmethod
    def _ref_offset(frame: Frame) -> int:
        return frame.n - 1 if frame.t_ref == "last" else 0

    def _position(self, frame: Frame) -> tuple[float, int | None, int | None]:
        seq_u = None if frame.seq is None else _unwrap(frame.seq, self._last_seq, frame.seq_modulo)
        t_u = (
            None if frame.t_ns is None else _unwrap(frame.t_ns, self._last_t_ns, frame.t_modulo_ns)
        )
        key = float(seq_u) if seq_u is not None else float(t_u if t_u is not None else 0)
        return key, seq_u, t_u

    def _key_unit(self, seq_u: int | None) -> float:
        """One sample in key units: 1 with sequence numbers, else its device ns."""
        return 1.0 if seq_u is not None else 1e9 / self.fs_est

    def _first_key(self, frame: Frame, seq_u: int | None, t_u: int | None) -> float | None:
        """The key (sequence number or device ns) of the frame's first sample."""
        if seq_u is not None:
            return float(seq_u)
        if t_u is not None:
            return t_u - self._ref_offset(frame) * 1e9 / self.fs_est
        return None

    def _in_hole(self, frame: Frame, seq_u: int | None, t_u: int | None) -> bool:
        """Does the frame lie in the hole of a gap already reported?"""
        first = self._first_key(frame, seq_u, t_u)
        if first is None:
            return False
        unit = self._key_unit(seq_u)
        tol = self._tolerance(frame.n) * unit
        end = first + frame.n * unit
        return any(lo - tol <= first and end <= hi + tol for lo, hi in self._holes)

    def _t_pred(self, ref_index: int) -> float:
        assert self._last_t_ns is not None
        return self._last_t_ns + (ref_index - self._last_ref_index) * 1e9 / self.fs_est

    def _distance(self, frame: Frame, seq_u: int | None, t_u: int | None) -> float:
        """How many samples after the expected position this frame starts."""
        if seq_u is not None and self._next_seq is not None:
            return float(seq_u - self._next_seq)
        if t_u is None or self._last_t_ns is None:
            return 0.0
        ref_index = self.seg_count + self._ref_offset(frame)
        return (t_u - self._t_pred(ref_index)) * self.fs_est / 1e9

    def _stream_t_first(self, frame: Frame, t_u: int | None) -> float:
        if t_u is None or self._t0_ns is None:
            return self._end_s
        return (t_u - self._ref_offset(frame) * 1e9 / self.fs_est - self._t0_ns) / 1e9

    # --- release / segments -------------------------------------------------------------
    def _begin(self, frame: Frame, arrival_ns: int) -> None:
        """First frame of the stream, or first after the time base was lost."""
        self._started = True
        start_s = 0.0
        if self._last_arrival_ns is not None:
            # Time base lost: continue stream time by the host clock's elapsed time.
            scale = self.time_scale if self.time_scale is not None else 1.0
            elapsed = (arrival_ns - self._last_arrival_ns) / 1e9 * scale - frame.n / self.fs_est
            start_s = self._end_s + max(0.0, elapsed)
        if frame.t_ns is not None:
            t_first = frame.t_ns - self._ref_offset(frame) * 1e9 / self.fs_est
            self._t0_ns = t_first - start_s * 1e9
        else:
            self._t0_ns = None
        self._end_s = start_s

    def _release(
        self, frame: Frame, arrival_ns: int, seq_u: int | None = None, t_u: int | None = None
    ) -> Output:
        out: Output = []
        if seq_u is None and frame.seq is not None:
            seq_u = _unwrap(frame.seq, self._last_seq, frame.seq_modulo)
        if t_u is None and frame.t_ns is not None:
            t_u = _unwrap(frame.t_ns, self._last_t_ns, frame.t_modulo_ns)
        ref_index = self.seg_count + self._ref_offset(frame)
        if seq_u is not None and t_u is not None and self._last_t_ns is not None:
            # Samples are continuous by the counter; does the clock agree?
            jump_ns = t_u - self._t_pred(ref_index)
            if abs(jump_ns) * self.fs_est / 1e9 > self._tolerance(frame.n):
                self.counts["clock_jump"] += 1
                out.append(SeqEvent("clock_jump", self._end_s, {"jump_s": round(jump_ns / 1e9, 4)}))
                if self._t0_ns is not None:
                    self._t0_ns += jump_ns  # keep stream time continuous
                self._anchor = None
        t_first = self._stream_t_first(frame, t_u)
        behind_s = self._end_s - t_first
        if behind_s > self._tolerance(frame.n) / self.fs_est:
            # Accepted samples placed before samples already released: the time base is
            # wrong (e.g. re-anchored on a corrupted stamp). Stream time never runs back:
            # re-anchor here, say so, and keep the samples.
            self.counts["clock_jump"] += 1
            out.append(
                SeqEvent("clock_jump", self._end_s,
                         {"jump_s": round(-behind_s, 4), "reason": "behind_stream"})
            )  # fmt: skip
            if self._t0_ns is not None:
                self._t0_ns -= behind_s * 1e9
            self._anchor = None
            t_first = self._end_s
        self._flag_events(frame, out, t_first)
        out.append(
            Block(
                samples_mv=frame.samples_mv,
                codes=frame.codes,
                segment=self.segment,
                seg_index=self.seg_count,
                t_first_s=t_first,
                fs_hz=self.fs_est,
                arrival_ns=arrival_ns,
                flags=frame.flags,
            )
        )
        self.seg_count += frame.n
        self._end_s = t_first + frame.n / self.fs_est
        self._last_arrival_ns = arrival_ns
        if seq_u is not None:
            self._last_seq = seq_u
            self._next_seq = seq_u + frame.n
        if t_u is not None:
            self._last_t_ns = t_u
            self._last_ref_index = ref_index
            self._update_rate(ref_index, t_u)
        self._recent.append(
            (float(seq_u) if seq_u is not None else float(t_u or 0), _digest(frame))
        )
        return out

    def _update_rate(self, ref_index: int, t_ns: int) -> None:
        if self._anchor is None:
            self._anchor = (ref_index, t_ns)
            return
        a_idx, a_t = self._anchor
        span_s = (t_ns - a_t) / 1e9
        if span_s < MIN_RATE_SPAN_S:
            return
        fs = (ref_index - a_idx) / span_s
        if abs(fs / self.nominal_fs - 1.0) <= MAX_RATE_DEVIATION:
            self.fs_est = fs
        else:
            self._anchor = (ref_index, t_ns)

    def _flag_events(self, frame: Frame, out: Output, t_s: float) -> None:
        lead_off = bool(frame.flags & FrameFlags.LEAD_OFF)
        if lead_off != self._lead_off:
            self._lead_off = lead_off
            out.append(SeqEvent("lead_off" if lead_off else "lead_on", t_s))
        battery_low = bool(frame.flags & FrameFlags.BATTERY_LOW)
        if battery_low and not self._battery_low:
            out.append(SeqEvent("battery_low", t_s))
        self._battery_low = battery_low

    def _drain(self, *, after_gap: bool = False) -> Output:
        out: Output = []
        while self._pending:
            p = self._pending[0]
            _, seq_u, t_u = self._position(p.frame)
            d = self._distance(p.frame, seq_u, t_u)
            if abs(d) <= self._tolerance(p.frame.n):
                self._pending.pop(0)
                if after_gap:
                    self._held_at_gap += 1
                else:  # a frame that belongs before it arrived after it
                    self.counts["reordered"] += 1
                out.extend(self._release(p.frame, p.arrival_ns, seq_u, t_u))
            elif d < 0:
                self._pending.pop(0)
                out.extend(self._behind(p.frame, p.arrival_ns, p.key, seq_u, t_u, d))
            else:
                break
        return out

    def _gap_from_pending(self) -> Output:
        """The hole before the earliest held frame will not be filled: end the segment."""
        p = self._pending.pop(0)
        _, seq_u, t_u = self._position(p.frame)
        d = self._distance(p.frame, seq_u, t_u)
        out: Output = [self._gap_event(p.frame, seq_u, t_u, d)]
        self._new_segment(round(d))
        self._held_at_gap = 0
        out.extend(self._release(p.frame, p.arrival_ns, seq_u, t_u))
        out.extend(self._drain(after_gap=True))
        return out

    def _gap_event(self, frame: Frame, seq_u: int | None, t_u: int | None, d: float) -> SeqEvent:
        reason = self._break_reason or ("sequence" if seq_u is not None else "timestamp")
        self._break_reason = None
        self.counts["gap"] += 1
        missing = max(0, round(d))
        first = self._first_key(frame, seq_u, t_u)
        if first is not None:
            self._holes.append((first - d * self._key_unit(seq_u), first))
        return SeqEvent(
            "gap",
            self._end_s,
            {
                "duration_s": round(missing / self.fs_est, 4),
                "missing_samples": int(missing),
                "reason": reason,
            },
        )

    def _new_segment(self, missing: int) -> None:
        """Samples restart at index 0; the timing reference keeps counting through the
        gap (the missing samples), so the rate estimate survives it."""
        shift = self.seg_count + max(0, missing)
        self.segment += 1
        self.seg_count = 0
        self._last_ref_index -= shift
        if self._anchor is not None:
            self._anchor = (self._anchor[0] - shift, self._anchor[1])

    def _behind(self, frame: Frame, arrival_ns: int, key: float, seq_u, t_u, d: float) -> Output:
        if (key, _digest(frame)) in self._recent:
            self.counts["duplicate"] += 1
            return []
        # Older than the released stream but recent (a reordered frame whose hole was
        # already declared a gap, or a stale retransmission), or in the hole of a gap
        # reported earlier however late: dropped. Anything else far back: clock reset.
        horizon = (self.reorder_depth + 2) * frame.n + self._tolerance(frame.n)
        if -d <= horizon or self._in_hole(frame, seq_u, t_u):
            self.counts["late"] += 1
            # The hole's frame came after all: the frames released past it were reordered.
            self.counts["reordered"] += self._held_at_gap
            self._held_at_gap = 0
            return [
                SeqEvent("late", self._end_s, {"samples": frame.n, "behind_samples": round(-d)})
            ]
        if seq_u is None and self._break_reason is None and self._on_schedule(frame, arrival_ns):
            # New samples (not a repeat) arriving when the next frame was due, stamped far
            # back: the device clock stepped back (or one stamp is corrupted); the samples
            # continue the stream. A Movesense clock step of -3 s dropped them as duplicates.
            # (A counter that goes back is a device restart: the reset below.)
            return self._clock_fault(frame, arrival_ns, seq_u, t_u, d, "behind_host_clock")
        out: Output = self._flush_pending()
        self._reset(self._break_reason or "clock_reset", out)
        self._begin(frame, arrival_ns)
        out.extend(self._release(frame, arrival_ns))
        return out

    def _on_schedule(self, frame: Frame, arrival_ns: int) -> bool:
        """Did the frame arrive about when the next one was due, by the host clock?"""
        if self.time_scale is None or self._last_arrival_ns is None:
            return False
        elapsed_s = max(0.0, (arrival_ns - self._last_arrival_ns) / 1e9) * self.time_scale
        return elapsed_s <= HOST_MARGIN * frame.n / self.fs_est + HOST_SLACK_S

    def _reset(self, reason: str, out: Output) -> None:
        """Lose the time base: new segment, no continuity with what came before."""
        self.counts["gap"] += 1
        out.append(
            SeqEvent(
                "gap", self._end_s, {"duration_s": None, "missing_samples": None, "reason": reason}
            )
        )
        self._break_reason = None
        self.segment += 1
        self.seg_count = 0
        self._last_seq = self._next_seq = None
        self._last_t_ns = None
        self._last_ref_index = 0
        self._anchor = None
        self._recent.clear()
        self._holes.clear()
        self._started = False

    def _flush_pending(self) -> Output:
        out: Output = []
        while self._pending:
            out.extend(self._gap_from_pending())
        return out
