"""The sequencer's exact outputs on small hand-made frame sequences: event fields and
times, block times and arrival stamps, counts, the host-clock and late-horizon boundaries.
Written to kill the mutants `make mutate` found alive (tests/mutate.py); the end-to-end
properties are in test_reorder.py, test_codecs.py and test_hostile.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from anyecg_edge.firmware_bridge.frames import Frame, FrameFlags
from anyecg_edge.firmware_bridge.sequencer import Block, SeqEvent, Sequencer

FS = 100.0
MS = 1_000_000  # ns


def _ts_frame(k: int, n: int = 10, *, shift_ns: int = 0, t_ref: str = "last") -> Frame:
    """Frame k of a timestamp-only device (Polar-like: stamp of the last sample)."""
    first = k * n
    ref = first + (n - 1 if t_ref == "last" else 0)
    return Frame(np.arange(first, first + n), 1000.0, ref * 10 * MS + shift_ns, t_ref)  # type: ignore[arg-type]


def _seq_frame(k: int, n: int = 10, *, seq_shift: int = 0, t_shift_ns: int = 0) -> Frame:
    """Frame k of a device with a sample counter and first-sample stamps (AnyECG-like)."""
    first = k * n
    return Frame(np.arange(first, first + n), 1000.0, first * 10 * MS + t_shift_ns, "first",
                 seq=first + seq_shift)  # fmt: skip


def _run(seq: Sequencer, frames: list[Frame], arrivals_ms: list[float]) -> list:
    out: list = []
    for f, a in zip(frames, arrivals_ms, strict=True):
        out.extend(seq.push(f, int(a * MS)))
    return out


def _blocks(out: list) -> list[tuple]:
    return [(b.segment, b.seg_index, round(b.t_first_s, 6), b.arrival_ns, int(b.codes[0]))
            for b in out if isinstance(b, Block)]  # fmt: skip


def _events(out: list) -> list[dict]:
    return [o.to_dict() for o in out if isinstance(o, SeqEvent)]


# --- trailing stall ------------------------------------------------------------------------


def test_trailing_stall_needs_a_host_clock_and_a_frame() -> None:
    seq = Sequencer(FS)
    _run(seq, [_ts_frame(0)], [0])
    assert seq.trailing_stall(10**12) is None  # no time_scale: arrival times are no clock
    assert Sequencer(FS, time_scale=1.0).trailing_stall(10**12) is None  # nothing arrived


@pytest.mark.parametrize(
    ("scale", "silent_ms", "stall_s"),
    [
        (1.0, 2100, 2.1),
        (1.0, 2099.999, None),  # at the slack + 0.1 s of shutdown: a stall
        (2.0, 1500, 3.0),
        (2.0, 1095, None),  # device seconds: host time x the replay speed
        (3.0, 0, None),
        (3.0, 1041.15, 3.123),
    ],  # fmt: skip
)
def test_trailing_stall_boundary_and_fields(scale: float, silent_ms: float, stall_s) -> None:
    seq = Sequencer(FS, time_scale=scale)
    _run(seq, [_ts_frame(0), _ts_frame(1)], [0, 100])
    ev = seq.trailing_stall(int((100 + silent_ms) * MS))
    if stall_s is None:
        assert ev is None
    else:
        assert ev is not None
        assert ev.to_dict() == {"event": "stall", "t": 0.2, "duration_s": stall_s, "at_end": True}


# --- clock faults ----------------------------------------------------------------------------


def test_one_corrupted_stamp_is_a_clock_jump_then_reverted_exactly() -> None:
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_ts_frame(k) for k in range(6)]
    frames[3] = _ts_frame(3, shift_ns=1000_123_450 * MS // 1000)  # +1000.12345 s
    out = _run(seq, frames, [0, 100, 200, 323.456, 400, 500])
    assert _events(out)[1:] == [{"event": "clock_jump_reverted", "t": 0.4}]
    jump = _events(out)[0]
    assert jump["event"] == "clock_jump" and jump["t"] == 0.3
    assert jump["reason"] == "beyond_host_clock" and jump["host_elapsed_s"] == 0.1235
    assert jump["jump_s"] == pytest.approx(1000.1234, abs=1.1e-4)
    assert round(jump["jump_s"], 4) == jump["jump_s"]  # 4 decimals
    assert _blocks(out) == [
        (0, 10 * k, round(0.1 * k, 6), int(a * MS), 10 * k)
        for k, a in enumerate([0, 100, 200, 323.456, 400, 500])
    ]
    assert seq.counts == {"duplicate": 0, "late": 0, "gap": 0, "clock_jump": 1, "reordered": 0}


def test_a_clock_that_jumps_for_good_is_followed() -> None:
    # Two persistent jumps (+1000 s, then +500 s), each arriving on time: two clock_jumps,
    # the stream's time continues with the samples, no gap, no revert.
    seq = Sequencer(FS, time_scale=1.0)
    shifts = [0, 0, 1000_000, 1000_000, 1500_000, 1500_000]  # ms
    frames = [_ts_frame(k, shift_ns=s * MS) for k, s in enumerate(shifts)]
    out = _run(seq, frames, [0, 100, 200, 300, 400, 500])
    assert [e["event"] for e in _events(out)] == ["clock_jump", "clock_jump"]
    assert [e["t"] for e in _events(out)] == [0.2, 0.4]
    assert _blocks(out) == [(0, 10 * k, round(0.1 * k, 6), k * 100 * MS, 10 * k) for k in range(6)]
    assert seq.counts["clock_jump"] == 2 and seq.counts["gap"] == 0


def test_a_counter_that_jumps_ahead_of_the_host_clock() -> None:
    # Counter and stamps jump together by 10^6 samples (10^4 s) arriving on time: one
    # clock_jump (beyond the host clock), samples continuous; no second jump from the stamp.
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_seq_frame(k) for k in range(3)]
    frames += [_seq_frame(k, seq_shift=10**6, t_shift_ns=10**4 * 10**9) for k in range(3, 6)]
    out = _run(seq, frames, [0, 100, 200, 300, 400, 500])
    evs = _events(out)
    assert [e["event"] for e in evs] == ["clock_jump"] and evs[0]["reason"] == "beyond_host_clock"
    assert evs[0]["jump_s"] == 10000.0 and evs[0]["t"] == 0.3
    assert _blocks(out) == [(0, 10 * k, round(0.1 * k, 6), k * 100 * MS, 10 * k) for k in range(6)]


def test_a_counter_and_stamp_that_disagree_are_a_clock_jump_without_gap() -> None:
    # Counter continuous, stamp +2 s from frame 3 on: the samples are continuous, the time
    # base is re-anchored (stream time keeps counting with the samples).
    seq = Sequencer(FS)
    frames = [_seq_frame(k, t_shift_ns=(2 * 10**9 if k >= 3 else 0)) for k in range(5)]
    out = _run(seq, frames, [0, 1, 2, 3, 4])
    assert _events(out) == [{"event": "clock_jump", "t": 0.3, "jump_s": 2.0}]
    assert [b[2] for b in _blocks(out)] == [0.0, 0.1, 0.2, 0.3, 0.4]


# --- gaps, late frames, resets ---------------------------------------------------------------


def test_gap_event_fields() -> None:
    # The counter decides the hole's size (10 samples), not the stamp (1 sample late here).
    seq = Sequencer(FS, reorder_depth=0)
    frames = [_seq_frame(0), _seq_frame(1), _seq_frame(3, t_shift_ns=10 * MS), _seq_frame(4)]
    out = _run(seq, frames, [0, 1, 2, 3])
    assert _events(out) == [{"event": "gap", "t": 0.2, "duration_s": 0.1, "missing_samples": 10,
                             "reason": "sequence"}]  # fmt: skip
    assert _blocks(out) == [(0, 0, 0.0, 0, 0), (0, 10, 0.1, MS, 10), (1, 0, 0.31, 2 * MS, 30),
                            (1, 10, 0.4, 3 * MS, 40)]  # fmt: skip


def test_late_event_fields_and_counts() -> None:
    # frame 2 arrives after 3..6 (depth 2): a gap, then frame 2 is late (in the hole)
    seq = Sequencer(FS)
    order = [0, 1, 3, 4, 5, 6, 2, 7]
    out = _run(seq, [_seq_frame(k) for k in order], list(range(8)))
    evs = _events(out)
    assert evs[1] == {"event": "late", "t": 0.7, "samples": 10, "behind_samples": 50}
    assert seq.counts == {"duplicate": 0, "late": 1, "gap": 1, "clock_jump": 0, "reordered": 2}
    # a second late frame adds to the counts
    out = seq.push(_seq_frame(5), 9)  # a released frame again: a duplicate
    assert out == [] and seq.counts["duplicate"] == 1


@pytest.mark.parametrize(("behind", "late"), [(34, True), (35, False)])
def test_the_late_horizon_boundary(behind: int, late: bool) -> None:
    # 8-sample frames, depth 2: a frame up to (2 + 2) * 8 + 2 = 34 samples behind is late;
    # one sample more (off the frame grid, in no hole) is a clock reset.
    seq = Sequencer(FS)
    out = _run(seq, [_seq_frame(k, n=8) for k in range(6)], list(range(6)))
    stale = Frame(np.arange(1000, 1008), 1000.0, None, "first", seq=48 - behind)
    out = seq.push(stale, 6)
    if late:
        assert _events(out) == [{"event": "late", "t": 0.48, "samples": 8, "behind_samples": 34}]
        assert seq.counts["late"] == 1 and seq.segment == 0
    else:
        assert _events(out) == [{"event": "gap", "t": 0.48, "duration_s": None,
                                 "missing_samples": None, "reason": "clock_reset"}]  # fmt: skip
        assert seq.counts["gap"] == 1 and seq.segment == 1


def test_a_late_frame_with_a_jittered_stamp_is_still_in_its_hole() -> None:
    # Timestamp-only frames: frame 2 arrives 5 frames late, its stamp 1 sample early
    # (jitter within the tolerance): still the hole's frame, not a clock reset.
    seq = Sequencer(FS)
    frames = [_ts_frame(k) for k in (0, 1, 3, 4, 5, 6, 7)] + [_ts_frame(2, shift_ns=-10 * MS)]
    out = _run(seq, frames, list(range(8)))
    assert [e["event"] for e in _events(out)] == ["gap", "late"]
    assert seq.segment == 1 and seq.counts["late"] == 1


def test_resets_count_and_keep_the_reorder_window() -> None:
    # Two clock resets (counter restarts off the old grid), then a swapped pair after the
    # second one: put back in order, no gap (the window works again after a reset).
    seq = Sequencer(FS)
    frames = [_seq_frame(k) for k in range(6)]
    frames += [_seq_frame(k, seq_shift=-57) for k in (6, 7)]  # reset 1
    frames += [_seq_frame(k, seq_shift=-300) for k in (8, 9, 11, 10, 12)]  # reset 2, a swap
    out = _run(seq, frames, list(range(len(frames))))
    gaps = [e for e in _events(out) if e["event"] == "gap"]
    assert [g["reason"] for g in gaps] == ["clock_reset", "clock_reset"]
    assert seq.counts["gap"] == 2 and seq.segment == 2 and seq.counts["reordered"] == 1
    blocks = _blocks(out)
    assert [b[0] for b in blocks] == [0] * 6 + [1] * 2 + [2] * 5
    assert [b[1] for b in blocks[6:8]] == [0, 10] and [b[1] for b in blocks[8:]] == [
        0,
        10,
        20,
        30,
        40,
    ]
    assert [b[4] for b in blocks] == [10 * k for k in range(13)]


def test_device_reset_flag_and_reconnect_reason() -> None:
    seq = Sequencer(FS)
    out = _run(seq, [_seq_frame(0), _seq_frame(1)], [0, 1])
    flagged = Frame(np.arange(20, 30), 1000.0, 0, "first", seq=0, flags=FrameFlags.TIME_RESET)
    out = seq.push(flagged, 2)
    assert _events(out)[0]["reason"] == "device_reset" and seq.segment == 1
    assert seq.break_segment("disconnect") == []

    def counter_only(seq_no: int) -> Frame:
        return Frame(np.arange(seq_no + 20, seq_no + 30), 1000.0, None, "first", seq=seq_no)

    out = seq.push(counter_only(10), 3)  # continues the counter: no gap
    assert _events(out) == []
    seq.break_segment("disconnect")
    out = seq.push(counter_only(50), 4)  # 30 samples lost over the reconnect
    assert _events(out) == [{"event": "gap", "t": 0.4, "duration_s": 0.3,
                             "missing_samples": 30, "reason": "disconnect"}]  # fmt: skip


# --- more exact cases ------------------------------------------------------------------------


def test_lead_off_and_battery_events() -> None:
    seq = Sequencer(FS)
    flags = [FrameFlags.NONE, FrameFlags.LEAD_OFF, FrameFlags.LEAD_OFF | FrameFlags.BATTERY_LOW,
             FrameFlags.BATTERY_LOW, FrameFlags.BATTERY_LOW, FrameFlags.NONE,
             FrameFlags.BATTERY_LOW]  # fmt: skip
    frames = [dataclasses.replace(_seq_frame(k), flags=f) for k, f in enumerate(flags)]
    out = _run(seq, frames, list(range(len(frames))))
    assert _events(out) == [
        {"event": "lead_off", "t": 0.1},
        {"event": "battery_low", "t": 0.2},
        {"event": "lead_on", "t": 0.3},
        {"event": "battery_low", "t": 0.6},  # low again after it had recovered
    ]
    assert [b.flags for b in out if isinstance(b, Block)] == flags


def test_counter_and_stamps_wrap() -> None:
    # A 64-sample counter and a 1.28 s stamp period wrap several times: no gap; then a
    # hole of 20 samples (30 ahead, beyond a third of the counter's period) is a gap
    # (depth 0: released at once, the next frame is read against it).
    seq = Sequencer(FS, reorder_depth=0)
    out: list = []
    for k in [*range(20), 22, 23]:
        first = 10 * k
        fr = Frame(np.arange(first, first + 10), 1000.0, (first * 10 * MS) % (128 * 10 * MS),
                   "first", seq=first % 64, seq_modulo=64, t_modulo_ns=128 * 10 * MS)  # fmt: skip
        out.extend(seq.push(fr, k))
    out.extend(seq.flush())
    assert [(e["event"], e.get("missing_samples")) for e in _events(out)] == [("gap", 20)]
    assert [b[4] for b in _blocks(out)] == [10 * k for k in [*range(20), 22, 23]]
    assert [b[2] for b in _blocks(out)][-1] == 2.3
    # frame 20 (lost in the hole) turns up, 30 samples before the last frame's counter
    # value across a wrap: read as behind (late), not as 34 ahead
    again = Frame(np.arange(200, 210), 1000.0, (200 * 10 * MS) % (128 * 10 * MS), "first",
                  seq=200 % 64, seq_modulo=64, t_modulo_ns=128 * 10 * MS)  # fmt: skip
    late = {"event": "late", "t": 2.4, "samples": 10, "behind_samples": 40}
    assert _events(seq.push(again, 30)) == [late]


@pytest.mark.parametrize("t_ref", ["first", "last"])
def test_frames_of_varying_size_keep_their_times(t_ref: str) -> None:
    sizes = [10, 7, 13, 10, 4, 16]
    starts = np.cumsum([0, *sizes[:-1]])
    seq = Sequencer(FS)
    out: list = []
    for i, (s, n) in enumerate(zip(starts, sizes, strict=True)):
        ref = s + (n - 1 if t_ref == "last" else 0)
        out.extend(seq.push(Frame(np.arange(s, s + n), 1000.0, int(ref) * 10 * MS, t_ref), i))  # type: ignore[arg-type]
    assert _events(out) == []
    assert [b[2] for b in _blocks(out)] == [round(s / FS, 6) for s in starts]


def test_a_counter_only_device_loses_a_frame_right_after_the_first() -> None:
    seq = Sequencer(FS, reorder_depth=0)
    frames = [Frame(np.arange(s, s + 10), 1000.0, None, "first", seq=s) for s in (0, 20, 30)]
    out = _run(seq, frames, [0, 1, 2])
    assert [e["missing_samples"] for e in _events(out)] == [10]


def test_frames_without_timing_and_a_stamp_of_zero() -> None:
    seq = Sequencer(FS)
    out = _run(
        seq, [Frame(np.arange(k, k + 5), 1000.0, None, "first") for k in range(3)], [0, 1, 2]
    )
    assert _events(out) == [] and len(_blocks(out)) == 3
    # a stamp of exactly 0 is a position like any other: its repeat is a duplicate
    seq = Sequencer(FS)
    frames = [_ts_frame(0, t_ref="first"), _ts_frame(1, t_ref="first"), _ts_frame(0, t_ref="first")]
    out = _run(seq, frames, [0, 1, 2])
    assert seq.counts["duplicate"] == 1 and len(_blocks(out)) == 2


def test_a_non_integer_clock_jump_and_its_count() -> None:
    seq = Sequencer(FS)
    frames = [_seq_frame(k, t_shift_ns=(2_123_450_000 if k >= 3 else 0)) for k in range(5)]
    out = _run(seq, frames, [0, 1, 2, 3, 4])
    (ev,) = _events(out)
    assert (
        ev["jump_s"] == pytest.approx(2.1234, abs=1.1e-4) and round(ev["jump_s"], 4) == ev["jump_s"]
    )
    assert seq.counts["clock_jump"] == 1


def test_time_continues_by_the_host_clock_after_a_reset() -> None:
    # A reset 5 s (host) after the last frame: the new segment starts 5 s - one frame later.
    seq = Sequencer(FS)
    frames = [_seq_frame(0), _seq_frame(1), _seq_frame(2, seq_shift=-500)]
    out = _run(seq, frames, [0, 100, 5100])
    assert [b[2] for b in _blocks(out)] == [0.0, 0.1, 5.1]
    seq = Sequencer(FS, time_scale=3.0)  # a replay at x3: 5 host s are 15 device s
    out = _run(seq, frames, [0, 100, 5100])
    assert [b[2] for b in _blocks(out)] == [0.0, 0.1, 15.1]


def test_a_reconnect_gap_then_the_stream_goes_on() -> None:
    seq = Sequencer(FS)
    out = _run(seq, [_seq_frame(0), _seq_frame(1)], [0, 1])
    seq.break_segment("disconnect")
    out = _run(seq, [_seq_frame(4), _seq_frame(5), _seq_frame(6)], [2, 3, 4])
    assert [e["missing_samples"] for e in _events(out)] == [20]
    assert [b[:2] for b in _blocks(out)] == [(1, 0), (1, 10), (1, 20)]


def test_two_late_frames_count_twice_and_a_stale_one_reorders_nothing() -> None:
    seq = Sequencer(FS)
    order = [0, 1, 3, 4, 5, 6, 2, 7, 8, 10, 11, 12, 13, 9, 14]
    _run(seq, [_seq_frame(k) for k in order], list(range(len(order))))
    assert seq.counts == {"duplicate": 0, "late": 2, "gap": 2, "clock_jump": 0, "reordered": 4}
    # a stale frame 2 frames back, off the frame grid (not a duplicate), before any gap
    seq = Sequencer(FS)
    _run(seq, [_seq_frame(k) for k in range(5)], list(range(5)))
    seq.push(Frame(np.arange(10), 1000.0, None, "first", seq=33), 5)
    assert seq.counts["late"] == 1 and seq.counts["reordered"] == 0


def test_two_frames_of_one_hole_turn_up_late() -> None:
    # frames 2 and 3 lost (one gap of 20), then both turn up: the first accounts for the
    # two frames released past the hole, the second adds nothing
    seq = Sequencer(FS)
    order = [0, 1, 4, 5, 6, 7, 2, 3, 8]
    _run(seq, [_seq_frame(k) for k in order], list(range(len(order))))
    assert seq.counts == {"duplicate": 0, "late": 2, "gap": 1, "clock_jump": 0, "reordered": 2}


def test_gap_duration_has_4_decimals() -> None:
    seq = Sequencer(130.0, reorder_depth=0)
    frames = [Frame(np.arange(s, s + 10), 1000.0, None, "first", seq=s) for s in (0, 10, 30)]
    (gap,) = _events(_run(seq, frames, [0, 1, 2]))
    assert gap["duration_s"] == 0.0769  # 10 / 130 s


def test_the_host_clock_bound_scales_with_the_replay_speed() -> None:
    # At x3 a frame 4 s (device) ahead arriving 1 s (host) later can follow lost samples
    # (bound 1 x 3 x 1.5 + 2 = 6.5 s): a gap, not a clock jump.
    seq = Sequencer(FS, time_scale=3.0, reorder_depth=0)
    out = _run(seq, [_seq_frame(0), _seq_frame(1), _seq_frame(41)], [0, 100, 1100])
    assert [(e["event"], e.get("missing_samples")) for e in _events(out)] == [("gap", 390)]


def test_stamp_jitter_within_a_quarter_frame_is_not_a_gap() -> None:
    # 16-sample frames (Movesense-like): tolerance max(2, 16/4) = 4 samples; 3 is jitter.
    seq = Sequencer(FS)
    frames = [_ts_frame(k, n=16, t_ref="first", shift_ns=(30 * MS if k == 3 else 0))
              for k in range(6)]  # fmt: skip
    out = _run(seq, frames, list(range(6)))
    assert _events(out) == [] and len(_blocks(out)) == 6


def test_a_second_fault_right_after_the_first_is_not_a_revert() -> None:
    seq = Sequencer(FS, time_scale=1.0)
    shifts = [0, 0, 1000_000, 3000_000, 3000_000]  # ms: +1000 s, then +2000 s more
    frames = [_ts_frame(k, shift_ns=s * MS) for k, s in enumerate(shifts)]
    out = _run(seq, frames, [0, 100, 200, 300, 400])
    assert [e["event"] for e in _events(out)] == ["clock_jump", "clock_jump"]


def test_the_rate_estimate_survives_a_gap() -> None:
    # True rate 101 Hz (nominal 100), frame 15 lost: after 3 s the estimate spans the gap.
    seq = Sequencer(FS)
    out: list = []
    for k in [*range(15), *range(16, 31)]:
        first = 10 * k
        fr = Frame(np.arange(first, first + 10), 1000.0, round(first * 1e9 / 101), "first")
        out.extend(seq.push(fr, k))
    assert [e["missing_samples"] for e in _events(out) if e["event"] == "gap"] == [10]
    assert seq.fs_est == pytest.approx(101.0, rel=1e-6)


def test_a_frame_lost_over_a_reconnect_that_turns_up_late() -> None:
    seq = Sequencer(FS)
    _run(seq, [_seq_frame(0), _seq_frame(1)], [0, 1])
    seq.break_segment("disconnect")
    _run(seq, [_seq_frame(k) for k in range(4, 10)], list(range(2, 8)))
    out = seq.push(_seq_frame(2), 8)  # 80 samples behind: beyond the horizon, in the hole
    assert [e["event"] for e in _events(out)] == ["late"] and seq.segment == 1


def test_after_a_clock_jump_a_gap_still_advances_stream_time() -> None:
    # The stamps jump +1000 s for good at frame 3 (re-anchored there); frame 6 is lost
    # later: the frames after the hole start 0.1 s later in stream time, not right on.
    seq = Sequencer(FS, time_scale=1.0)
    ks = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10]
    frames = [_ts_frame(k, shift_ns=(1000 * 10**9 if k >= 3 else 0)) for k in ks]
    out = _run(seq, frames, [100 * k for k in ks])
    evs = _events(out)
    assert [e["event"] for e in evs] == ["clock_jump", "gap"]
    assert evs[1]["missing_samples"] == 10 and evs[1]["t"] == 0.6
    blocks = _blocks(out)
    assert [b[2] for b in blocks] == [round(0.1 * k, 6) for k in ks]
    assert [b[0] for b in blocks] == [0] * 6 + [1] * 4


def test_a_corrupted_stamp_is_reverted_when_the_next_stamp_jitters() -> None:
    # Real stamps jitter: the frame after the corrupted one is 3 ms (0.3 samples) off the
    # old time base, well within a quarter frame: still a revert, not a second jump.
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_ts_frame(k) for k in range(6)]
    frames[3] = _ts_frame(3, shift_ns=1000 * 10**9)
    frames[4] = _ts_frame(4, shift_ns=3 * MS)
    out = _run(seq, frames, [0, 100, 200, 300, 400, 500])
    assert [e["event"] for e in _events(out)] == ["clock_jump", "clock_jump_reverted"]
    # (stream time follows the stamps again: the jittered frame at its stamp)
    assert [b[2] for b in _blocks(out)] == [0.0, 0.1, 0.2, 0.3, 0.403, 0.5]


def test_a_clock_reset_keeps_arrivals_and_the_reorder_window_at_once() -> None:
    # A counter restart (clock reset) and, right after it, a swapped pair: the swap is put
    # back in order (the window works from the first frame after the reset), and the
    # blocks carry their arrival times (the host clock goes on checking).
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_seq_frame(k) for k in range(4)]
    frames += [_seq_frame(k, seq_shift=-300) for k in (4, 6, 5, 7)]
    arrivals = [0, 100, 200, 300, 400, 500, 510, 700]
    out = _run(seq, frames, arrivals)
    assert [g["reason"] for g in _events(out)] == ["clock_reset"]
    assert seq.counts["reordered"] == 1 and seq.counts["gap"] == 1
    blocks = _blocks(out)
    assert [b[3] for b in blocks] == [a * MS for a in (0, 100, 200, 300, 400, 510, 500, 700)]
    assert [b[4] for b in blocks] == [10 * k for k in range(8)]


def test_a_swap_right_after_the_first_frame_is_put_back_in_order() -> None:
    seq = Sequencer(FS)
    out = _run(seq, [_seq_frame(k) for k in (0, 2, 1, 3)], [0, 1, 2, 3])
    assert _events(out) == [] and seq.counts["reordered"] == 1
    assert [b[4] for b in _blocks(out)] == [0, 10, 20, 30]


def test_battery_low_from_the_first_frame_is_reported() -> None:
    seq = Sequencer(FS)
    frames = [dataclasses.replace(_seq_frame(k), flags=FrameFlags.BATTERY_LOW) for k in range(2)]
    assert _events(_run(seq, frames, [0, 1])) == [{"event": "battery_low", "t": 0.0}]


def test_a_timestamp_device_reconnect_gap_and_its_late_frame() -> None:
    # Polar-like (stamps only): two frames lost over a reconnect are a gap at once, with
    # the reconnect's reason; one of them turning up later (beyond the reorder horizon)
    # is late, in the hole, not a clock reset. Blocks keep their arrival times.
    seq = Sequencer(FS)
    out = _run(seq, [_ts_frame(0), _ts_frame(1)], [0, 1])
    seq.break_segment("disconnect")
    out += _run(seq, [_ts_frame(k) for k in range(4, 10)], list(range(2, 8)))
    out += seq.push(_ts_frame(2), 8 * MS)
    assert [(e["event"], e.get("missing_samples"), e.get("reason")) for e in _events(out)] == [
        ("gap", 20, "disconnect"), ("late", None, None)]  # fmt: skip
    assert [b[3] for b in _blocks(out)] == [k * MS for k in range(8)]
    assert seq.segment == 1 and seq.counts["late"] == 1


def test_a_frame_lost_right_after_the_first_stamped_frame_is_a_gap() -> None:
    for frames in ([_ts_frame(0), _ts_frame(2), _ts_frame(3), _ts_frame(4)],
                   [_ts_frame(0, t_ref="first"), _ts_frame(2, t_ref="first"),
                    _ts_frame(3, t_ref="first"), _ts_frame(4, t_ref="first")]):  # fmt: skip
        seq = Sequencer(FS, reorder_depth=2)
        out = _run(seq, frames, [0, 1, 2, 3]) + seq.flush()
        assert [e.get("missing_samples") for e in _events(out)] == [10]
        assert [b[2] for b in _blocks(out)] == [0.0, 0.2, 0.3, 0.4]


def test_the_host_clock_bound_for_a_short_wait() -> None:
    # 0.1 s (host) after the last frame, a frame may lie at most 0.1 x 1.5 + 2 = 2.15 s
    # (device) ahead: 2.5 s ahead is a clock jump, 2.0 s a gap. (Arrivals far from host
    # time 0: the bound depends on the time between arrivals only.)
    for ahead_frames, event in ((25, "clock_jump"), (20, "gap")):
        seq = Sequencer(FS, time_scale=1.0, reorder_depth=0)
        frames = [_seq_frame(0), _seq_frame(1), _seq_frame(1 + ahead_frames)]
        out = _run(seq, frames, [10_000, 10_100, 10_200])
        assert [e["event"] for e in _events(out)] == [event], ahead_frames


def test_counter_and_stamp_disagreements_count_and_keep_stream_time() -> None:
    # Stamps start at 5 s (device clock since power-on); counter continuous; the stamp
    # jumps +2 s at frame 3 and +3 s more at frame 5: two clock jumps, stream time goes on
    # with the samples from 0.
    seq = Sequencer(FS)
    shift = [0, 0, 0, 2, 2, 5, 5]
    frames = [_seq_frame(k, t_shift_ns=(5 + shift[k]) * 10**9) for k in range(7)]
    out = _run(seq, frames, list(range(7)))
    assert [e["jump_s"] for e in _events(out)] == [2.0, 3.0]
    assert seq.counts["clock_jump"] == 2
    assert [b[2] for b in _blocks(out)] == [round(0.1 * k, 6) for k in range(7)]


def test_a_device_reset_block_keeps_its_arrival() -> None:
    seq = Sequencer(FS)
    _run(seq, [_seq_frame(0), _seq_frame(1)], [0, 1])
    flagged = Frame(np.arange(20, 30), 1000.0, 0, "first", seq=0, flags=FrameFlags.TIME_RESET)
    # (a new segment; stream time goes on where the stream was)
    assert _blocks(seq.push(flagged, 7 * MS)) == [(1, 0, 0.2, 7 * MS, 20)]


# --- clock faults on a stamp-only device (found by a new-user run, 2026-12-07) -------------
def test_a_corrupted_stamp_then_a_lost_frame_is_reverted_with_a_gap() -> None:
    # Frame 3's stamp is corrupted far ahead (a clock_jump), frame 4 is lost, frame 5 comes
    # on the old time base: reverted (it was one bad stamp) and frame 4 is a gap. Before,
    # the revert needed frame 4 itself; frame 5 was a "clock_reset" placed 1000 s back, and
    # stream time went negative.
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_ts_frame(k) for k in range(3)]
    frames += [_ts_frame(3, shift_ns=1000 * 10**9), _ts_frame(5), _ts_frame(6)]
    out = _run(seq, frames, [0, 100, 200, 300, 500, 600])
    assert [(e["event"], e.get("missing_samples")) for e in _events(out)] == [
        ("clock_jump", None), ("clock_jump_reverted", None), ("gap", 10)]  # fmt: skip
    times = [b[2] for b in _blocks(out)]
    assert times == [0.0, 0.1, 0.2, 0.3, 0.5, 0.6]  # the lost frame's 0.1 s is the gap
    assert [b[4] for b in _blocks(out)] == [0, 10, 20, 30, 50, 60]  # every sample kept


def test_stream_time_never_runs_back_after_a_fault() -> None:
    # Frame 2 waits for its hole (frame 1 lost), then a stamp 1000 s ahead arrives: the held
    # frame is placed on its own time base first, and nothing is placed before the stream.
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_ts_frame(0), _ts_frame(2), _ts_frame(3, shift_ns=1000 * 10**9), _ts_frame(4)]
    out = _run(seq, frames, [0, 200, 300, 400])
    times = [b[2] for b in _blocks(out)]
    assert times == sorted(times) and min(times) >= 0.0
    assert [b[4] for b in _blocks(out)] == [0, 20, 30, 40]


def test_a_stamp_clock_stepping_back_keeps_its_samples() -> None:
    # A Movesense-like clock steps back 3 s while frames keep arriving on schedule: new
    # samples (not repeats), so a clock_jump re-anchors and every sample is kept in order.
    # They were dropped as "duplicates" (their stamps repeated earlier ones), silently.
    seq = Sequencer(FS, time_scale=1.0)
    frames = [_ts_frame(k) for k in range(40)]
    frames += [_ts_frame(k, shift_ns=-3 * 10**9) for k in range(40, 45)]
    out = _run(seq, frames, [100 * k for k in range(45)])
    events = _events(out)
    assert [(e["event"], e.get("reason")) for e in events] == [("clock_jump", "behind_host_clock")]
    assert seq.counts["duplicate"] == 0 and seq.counts["gap"] == 0
    assert [b[4] for b in _blocks(out)] == [10 * k for k in range(45)]
    times = [b[2] for b in _blocks(out)]
    assert times == pytest.approx([0.1 * k for k in range(45)])
    # A true repeat (same stamp, same samples) is still a duplicate.
    assert seq.push(_ts_frame(44, shift_ns=-3 * 10**9), 4500 * MS) == []
    assert seq.counts["duplicate"] == 1
