"""The sequencer's reorder window, probed at and beyond its depth.

``FaultInjector``'s ``reorder`` fault only swaps neighbours (a frame moved by one), which
leaves the window's depth untested. Here one frame is delivered ``m`` positions late (after
the ``m`` frames that follow it), for each wearable family: up to ``reorder_depth`` frames
held the hole is filled (no gap, nothing lost); one frame more and the hole is a gap of
exactly that frame's samples, the frame itself counted ``late``. Frames come from the real
encoders and decoders; the depth is written out here, not read from the sequencer.
"""

from __future__ import annotations

import numpy as np
import pytest
from anyecg_edge.firmware_bridge import anyecg
from anyecg_edge.firmware_bridge.encoders import FrameEncoder
from anyecg_edge.firmware_bridge.profiles import (
    AnyEcgProfile,
    FrameDecoder,
    MovesenseProfile,
    PolarH10Profile,
)
from anyecg_edge.firmware_bridge.sequencer import Block, SeqEvent, Sequencer

PROFILES = ("polar", "movesense", "anyecg")
FS_TRUE = {"polar": 130.04, "movesense": 128.03, "anyecg": 130.04}  # real rates, off nominal
N_FRAMES = 40
K = 10  # the frame that is delayed


def _decoder(profile: str) -> FrameDecoder:
    return FrameDecoder(
        {
            "polar": PolarH10Profile(),
            "movesense": MovesenseProfile(fs_hz=128),
            "anyecg": AnyEcgProfile(config=anyecg.AnyEcgConfig(fs_hz=130.0, fmt=1)),
        }[profile]
    )


def _deliver(profile: str, order: list[int], **seq_kw) -> tuple[int, list, Sequencer]:
    """Encode frames 0..N_FRAMES-1 (sample codes 0, 1, 2, ...), deliver them in ``order``."""
    enc = FrameEncoder(profile, FS_TRUE[profile], anyecg_format=1)
    spf = enc.samples_per_frame
    raws = [enc.encode(np.arange(k * spf, (k + 1) * spf), k * spf) for k in range(N_FRAMES)]
    decoder = _decoder(profile)
    seq = Sequencer(decoder.profile.nominal_fs, **seq_kw)
    out: list = []
    for arrival, k in enumerate(order):
        frame = decoder.feed(raws[k])
        assert frame is not None
        out.extend(seq.push(frame, arrival))
    out.extend(seq.flush())
    return spf, out, seq


def _late_by(m: int, k: int = K) -> list[int]:
    """Arrival order with frame ``k`` delivered after frames k+1..k+m."""
    order = [i for i in range(N_FRAMES) if i != k]
    order.insert(k + m, k)
    return order


def _early_by(m: int, k: int = K) -> list[int]:
    """Arrival order with frame ``k + m`` delivered before frame ``k``."""
    order = [i for i in range(N_FRAMES) if i != k + m]
    order.insert(k, k + m)
    return order


def _samples_and_gaps(out: list) -> tuple[np.ndarray, list[dict]]:
    blocks = [o for o in out if isinstance(o, Block)]
    codes = np.concatenate([b.codes for b in blocks]).astype(np.int64)
    # every sample released once, in order: the codes count up strictly
    assert np.all(np.diff(codes) > 0), "a sample was duplicated or released out of order"
    gaps = [o.to_dict() for o in out if isinstance(o, SeqEvent) and o.kind == "gap"]
    return codes, gaps


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("m", [1, 2])
def test_a_frame_late_within_the_window_is_put_back(profile: str, m: int) -> None:
    spf, out, seq = _deliver(profile, _late_by(m))
    codes, gaps = _samples_and_gaps(out)
    assert gaps == []
    np.testing.assert_array_equal(codes, np.arange(N_FRAMES * spf))
    # The m frames that overtook it waited for it.
    assert seq.counts == {"duplicate": 0, "late": 0, "gap": 0, "clock_jump": 0, "reordered": m}


@pytest.mark.parametrize("profile", PROFILES)
def test_a_frame_late_one_beyond_the_window_is_a_gap(profile: str) -> None:
    # Default depth 2: the third frame held declares the hole a gap; the frame that finally
    # arrives is late and dropped, everything else is released once and in order.
    spf, out, seq = _deliver(profile, _late_by(3))
    codes, gaps = _samples_and_gaps(out)
    assert len(gaps) == 1 and gaps[0]["missing_samples"] == spf
    lost = np.arange(K * spf, (K + 1) * spf)
    np.testing.assert_array_equal(codes, np.setdiff1d(np.arange(N_FRAMES * spf), lost))
    assert seq.counts["late"] == 1 and seq.counts["gap"] == 1
    assert seq.counts["reordered"] == 2  # the two held frames after the gap's frame


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("depth", "m", "filled"), [(4, 4, True), (4, 5, False), (1, 1, True),
                                                    (1, 2, False), (0, 1, False)])  # fmt: skip
def test_the_window_follows_reorder_depth(profile: str, depth: int, m: int, filled: bool) -> None:
    spf, out, seq = _deliver(profile, _late_by(m), reorder_depth=depth)
    codes, gaps = _samples_and_gaps(out)
    if filled:
        assert gaps == [] and codes.size == N_FRAMES * spf
        assert seq.counts["reordered"] == m
    else:
        assert [g["missing_samples"] for g in gaps] == [spf]
        assert codes.size == (N_FRAMES - 1) * spf and seq.counts["late"] == 1


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("m", [2, 3, 6])
def test_a_frame_early_by_several_positions_waits_alone(profile: str, m: int) -> None:
    # Frame K+m arrives before frame K: one frame held, however far ahead it is.
    spf, out, seq = _deliver(profile, _early_by(m))
    codes, gaps = _samples_and_gaps(out)
    assert gaps == []
    np.testing.assert_array_equal(codes, np.arange(N_FRAMES * spf))
    assert seq.counts["reordered"] == 1


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("m", [4, 9, 25])
def test_a_frame_late_far_beyond_the_window_is_dropped_not_replayed(profile: str, m: int) -> None:
    # Beyond the late horizon the frame still falls in the hole of the gap already
    # reported: dropped and reported, not taken for a clock reset and replayed after
    # later samples (the bug: codes went back by m + 1 frames, a second 'clock_reset' gap).
    spf, out, seq = _deliver(profile, _late_by(m))
    codes, gaps = _samples_and_gaps(out)
    assert [g["missing_samples"] for g in gaps] == [spf]
    lost = np.arange(K * spf, (K + 1) * spf)
    np.testing.assert_array_equal(codes, np.setdiff1d(np.arange(N_FRAMES * spf), lost))
    late = [o.to_dict() for o in out if isinstance(o, SeqEvent) and o.kind == "late"]
    assert len(late) == 1 and late[0]["samples"] == spf
    assert late[0]["behind_samples"] == (m + 1) * spf  # behind the next expected sample
    assert seq.counts["late"] == 1 and seq.counts["gap"] == 1 and seq.counts["reordered"] == 2


def _deliver_with_reset(profile: str, k: int, *, reconnect: bool) -> tuple[int, list]:
    """Frames 0..N_FRAMES-1 in order, but from frame ``k`` on the device's clock and
    counter restart from zero (a reboot without the reset flag); ``reconnect``: the link
    went down just before. The new clock is off the old frame grid by 7 samples (an exact
    repeat of a recent frame's position would be a duplicate)."""
    enc = FrameEncoder(profile, FS_TRUE[profile], anyecg_format=1)
    spf = enc.samples_per_frame
    decoder = _decoder(profile)
    seq = Sequencer(decoder.profile.nominal_fs)
    out: list = []
    for i in range(N_FRAMES):
        index = i * spf if i < k else (i - k) * spf + 7
        frame = decoder.feed(enc.encode(np.arange(i * spf, (i + 1) * spf), index))
        assert frame is not None
        if i == k and reconnect:
            out.extend(seq.break_segment("disconnect"))
        out.extend(seq.push(frame, i))
    out.extend(seq.flush())
    return spf, out


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("reconnect", [False, True])
def test_a_device_clock_reset_starts_a_new_segment(profile: str, reconnect: bool) -> None:
    # The restarted clock is far behind but in no reported hole: a reset, every sample kept
    # and in order, one gap of unknown length with the reason.
    spf, out = _deliver_with_reset(profile, 25, reconnect=reconnect)
    codes, gaps = _samples_and_gaps(out)
    np.testing.assert_array_equal(codes, np.arange(N_FRAMES * spf))
    reason = "disconnect" if reconnect else "clock_reset"
    assert gaps == [{"event": "gap", "t": gaps[0]["t"], "duration_s": None,
                     "missing_samples": None, "reason": reason}]  # fmt: skip
    blocks = [o for o in out if isinstance(o, Block)]
    assert [b.segment for b in blocks] == [0] * 25 + [1] * (N_FRAMES - 25)
    assert not [o for o in out if isinstance(o, SeqEvent) and o.kind == "late"]


@pytest.mark.parametrize("profile", PROFILES)
def test_a_reset_after_a_gap_is_still_a_reset(profile: str) -> None:
    # A reported hole does not swallow a reset that lands outside it: frame 5 lost (a gap),
    # then the clock restarts at zero at frame 25 (before the hole).
    enc = FrameEncoder(profile, FS_TRUE[profile], anyecg_format=1)
    spf = enc.samples_per_frame
    decoder = _decoder(profile)
    seq = Sequencer(decoder.profile.nominal_fs)
    out: list = []
    for i in range(N_FRAMES):
        if i == 5:
            continue
        index = i * spf if i < 25 else (i - 25) * spf + 7
        out.extend(seq.push(decoder.feed(enc.encode(np.arange(i * spf, (i + 1) * spf), index)), i))
    out.extend(seq.flush())
    codes, gaps = _samples_and_gaps(out)
    assert codes.size == (N_FRAMES - 1) * spf
    assert [g["reason"] for g in gaps] == [
        "sequence" if profile == "anyecg" else "timestamp",
        "clock_reset",
    ]
