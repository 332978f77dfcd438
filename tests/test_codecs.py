"""Wearable codecs: known vectors, round trips, fuzzing (random and truncated frames never
crash a decoder and are counted), the C reference encoder against the Python decoder,
and the sequencer's promise: no accepted sample lost, reordered or duplicated."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from anyecg_edge.firmware_bridge import anyecg, movesense, polar
from anyecg_edge.firmware_bridge.encoders import FrameEncoder
from anyecg_edge.firmware_bridge.faults import FaultInjector, FaultSpec
from anyecg_edge.firmware_bridge.frames import FrameError, FrameFlags
from anyecg_edge.firmware_bridge.profiles import (
    RELEARN_FRAMES,
    AnyEcgProfile,
    FrameDecoder,
    MovesenseProfile,
    PolarH10Profile,
    profile_for_advertisement,
)
from anyecg_edge.firmware_bridge.sequencer import Block, SeqEvent, Sequencer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

C_DIR = Path(__file__).resolve().parents[1] / "firmware_bridge" / "c"
FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=400, deadline=None)


# --- the device registry and the standard Heart Rate / Battery services -------------------
def test_registry_one_module_per_wearable():
    from anyecg_edge.firmware_bridge import devices
    from anyecg_edge.firmware_bridge.profiles import PROFILES

    from anyecg_edge import firmware_bridge
    from anyecg_edge.stream import types

    assert sorted(devices.WEARABLES) == ["anyecg", "movesense", "polar"]
    for name, w in devices.WEARABLES.items():
        assert PROFILES[name] is w.profile and w.profile.name == name
    # the old import paths are the very same modules and classes
    assert polar is devices.polar and movesense is devices.movesense and anyecg is devices.anyecg
    assert PolarH10Profile is devices.polar.PolarH10Profile
    assert firmware_bridge.Block is types.Block and FrameFlags is types.FrameFlags
    with pytest.raises(ValueError, match="unknown profile 'garmin'; expected one of"):
        FrameEncoder("garmin", 250.0)
    # each family's encoder facts (what the simulator used to hard-code)
    assert [FrameEncoder(n, 250.0).bits for n in ("polar", "movesense", "anyecg")] == [24, 32, 24]
    assert FrameEncoder("anyecg", 250.0, anyecg_format=0).samples_per_frame == 113


@given(
    hr=st.integers(0, 0xFFFF),
    rr=st.lists(st.integers(1, 0xFFFF), max_size=8),
    contact=st.sampled_from([None, True, False]),
)
@ROUND_TRIP
def test_heart_rate_measurement_round_trip(hr, rr, contact):
    from anyecg_edge.firmware_bridge.devices import heart_rate as hrs

    m = hrs.decode_measurement(hrs.encode_measurement(hr, rr, contact=contact))
    assert m.hr_bpm == hr and m.contact is contact and m.energy_kj is None
    assert [round(ms * 1.024) for ms in m.rr_ms] == rr  # 1/1024 s, exactly back


def test_heart_rate_measurement_vectors_and_errors():
    from anyecg_edge.firmware_bridge.devices import heart_rate as hrs

    # flags 0x16: uint8 rate, contact supported + detected, RR present (what an H10 sends)
    m = hrs.decode_measurement(bytes.fromhex("16 48 00 04 e8 03"))
    assert (m.hr_bpm, m.rr_ms, m.contact) == (72, (1000.0, 976.6), True)
    # uint16 rate and energy expended, no contact bits
    m = hrs.decode_measurement(bytes.fromhex("09 2c 01 10 00"))
    assert (m.hr_bpm, m.energy_kj, m.contact, m.rr_ms) == (300, 16, None, ())
    assert m.to_event() == {"event": "heart_rate", "hr_bpm": 300, "rr_ms": [], "energy_kj": 16}
    for bad in ("", "16", "01 48", "08 48 00", "16 48 00"):
        with pytest.raises(FrameError, match="heart rate measurement") as err:
            hrs.decode_measurement(bytes.fromhex(bad))
        assert err.value.reason == "heart_rate"


# --- Polar H10 -------------------------------------------------------------------------
def test_polar_sdk_vector():
    # Polar's own SDK test: two samples and a 2e9 ns last-sample timestamp.
    frame = polar.decode_ecg_frame(bytes.fromhex("00 00 94 35 77 00 00 00 00 00 02 80 ff 02 80 00"))
    assert frame.codes.tolist() == [-32766, 32770]
    assert frame.t_ns == 2_000_000_000 and frame.t_ref == "last"
    assert frame.samples_mv.tolist() == [-32.766, 32.77]


def test_polar_control_responses():
    ok = polar.decode_control_response(bytes.fromhex("f0 02 00 00 00 00"))
    assert (ok.op, ok.measurement_type, ok.ok) == (2, 0, True)
    assert polar.decode_control_response(bytes.fromhex("f0 02 00 05 00")).error == 5
    running = polar.decode_control_response(bytes.fromhex("f0 02 00 06 00"))
    assert not running.ok and "already" in running.message
    assert "MTU" in polar.decode_control_response(bytes.fromhex("f0 01 00 0a")).message
    settings_resp = polar.decode_control_response(
        bytes.fromhex("f0 01 00 00 00 00 01 82 00 01 01 0e 00")
    )
    assert polar.parse_settings(settings_resp.params) == {0: [130], 1: [14]}
    with pytest.raises(FrameError):
        polar.decode_control_response(bytes.fromhex("0f 05 00"))  # stale read, not a reply


@pytest.mark.parametrize("ftype", [1, 2, 3, 0x80, 0x81])
def test_polar_other_frame_types_rejected(ftype):
    data = bytes([0]) + (10**9).to_bytes(8, "little") + bytes([ftype]) + bytes(6)
    with pytest.raises(FrameError) as err:
        polar.decode_ecg_frame(data)
    assert err.value.reason == "frame_type"


def test_polar_mtu_cut_frame_rejected():
    full = polar.encode_ecg_frame(np.arange(73), 10**12)
    assert len(full) == 229
    decoder = FrameDecoder(PolarH10Profile())
    assert decoder.feed(full) is not None
    assert decoder.feed(full[:20]) is None  # default ATT MTU 23 cuts to 20 bytes
    assert decoder.feed(full[: 10 + 3 * 40]) is None  # cut on a sample boundary
    assert decoder.stats.malformed == {"truncated": 2}


def _frames(profile, n_frames, spf):
    enc = FrameEncoder(profile, 130.0 if profile == "polar" else 128.0, samples_per_frame=spf)
    return [enc.encode(np.arange(k * spf, (k + 1) * spf), k * spf) for k in range(n_frames)]


@pytest.mark.parametrize(
    ("profile", "cut"),
    [("polar", 40), ("polar", 72), ("movesense", 15), ("movesense", 12), ("movesense", 4)],
)
def test_short_frame_rejected_even_first_after_start(profile, cut):
    # No sequence numbers, no CRC: a frame cut on a sample boundary decodes. The stream's
    # frame length starts from the protocol's, so even the very first frame (of a fresh
    # decoder, i.e. after a start) is rejected when short, and counted.
    spf = {"polar": polar.SAMPLES_PER_FRAME, "movesense": movesense.SAMPLES_PER_FRAME}[profile]
    frames = _frames(profile, 3, spf)
    header = len(frames[0]) - spf * (3 if profile == "polar" else 4)
    short = frames[0][: header + cut * (3 if profile == "polar" else 4)]
    prof = PolarH10Profile() if profile == "polar" else MovesenseProfile()
    decoder = FrameDecoder(prof)
    assert decoder.feed(short) is None and decoder.last_reason == "truncated"
    assert all(decoder.feed(f).n == spf for f in frames[1:])
    assert decoder.feed(short) is None  # and later in the stream as well
    assert decoder.stats.malformed == {"truncated": 2} and decoder.stats.frames == 2


@pytest.mark.parametrize("profile", ["polar", "movesense"])
@pytest.mark.parametrize("spf", [8, 40])
def test_other_frame_size_relearned_after_agreeing_frames(profile, spf):
    # A device sending another frame size than the protocol's: its first frames are
    # rejected (and counted) until RELEARN_FRAMES in a row agree; from then on that is
    # the stream's length, and a frame of another length is rejected again.
    frames = _frames(profile, RELEARN_FRAMES + 3, spf)
    decoder = FrameDecoder(PolarH10Profile() if profile == "polar" else MovesenseProfile())
    got = [decoder.feed(f) for f in frames]
    assert got[: RELEARN_FRAMES - 1] == [None] * (RELEARN_FRAMES - 1)
    assert all(f is not None and f.n == spf for f in got[RELEARN_FRAMES - 1 :])
    expected = "truncated" if spf < {"polar": 73, "movesense": 16}[profile] else "frame_length"
    assert decoder.stats.malformed == {expected: RELEARN_FRAMES - 1}
    assert decoder.feed(_frames(profile, 1, spf - 1)[0]) is None
    assert decoder.last_reason == "truncated"
    # frames of another length that do not agree with each other never take over
    other = [_frames(profile, 1, n)[0] for n in (spf + 1, spf + 2) * RELEARN_FRAMES]
    assert all(decoder.feed(f) is None for f in other)
    assert decoder.feed(frames[0]).n == spf


@ROUND_TRIP
@given(
    st.lists(st.integers(-(1 << 23), (1 << 23) - 1), min_size=1, max_size=80),
    st.integers(0, (1 << 64) - 1),
)
def test_polar_round_trip(samples, t_ns):
    frame = polar.decode_ecg_frame(polar.encode_ecg_frame(np.array(samples), t_ns))
    assert frame.codes.tolist() == samples and frame.t_ns == t_ns


# --- Movesense ---------------------------------------------------------------------------
@ROUND_TRIP
@given(
    st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=40),
    st.integers(0, (1 << 32) - 1),
)
def test_movesense_round_trip(samples, t_ms):
    frame = movesense.decode_ecg_frame(movesense.encode_ecg_frame(np.array(samples), t_ms))
    assert frame.codes.tolist() == samples and frame.t_ns == t_ms * 1_000_000
    assert frame.t_ref == "first"


def test_movesense_commands():
    assert movesense.subscribe_command(128) == b"\x01\x61Meas/ECG/128"
    assert movesense.decode_command_result(movesense.encode_command_result(97, 200)) == (97, 200)
    with pytest.raises(FrameError) as err:
        movesense.decode_ecg_frame(movesense.encode_command_result(97, 200))
    assert err.value.reason == "packet_type"
    other_ref = movesense.encode_ecg_frame(np.arange(4), 5, ref=12)
    with pytest.raises(FrameError, match="reference"):
        movesense.decode_ecg_frame(other_ref)
    with pytest.raises(ValueError, match="125, 128"):
        MovesenseProfile(fs_hz=130)


# --- AnyECG open profile -----------------------------------------------------------------
def test_anyecg_crc_check_value():
    assert anyecg.crc16(b"123456789") == 0x29B1


@ROUND_TRIP
@given(
    st.sampled_from([0, 1, 2]),
    st.data(),
    st.integers(0, (1 << 32) - 1),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 7),
)
def test_anyecg_round_trip(fmt, data, seq, t_us, flags):
    bits = 8 * anyecg.FORMATS[fmt]
    samples = data.draw(
        st.lists(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1), min_size=1, max_size=80)
    )
    raw = anyecg.encode_frame(np.array(samples), seq=seq, t_us=t_us, fmt=fmt, flags=flags)
    frame = anyecg.decode_frame(raw, uv_per_code=0.5)
    assert frame.codes.tolist() == samples
    assert (frame.seq, frame.t_ns, int(frame.flags)) == (seq, t_us * 1000, flags)
    assert np.allclose(frame.samples_mv, np.array(samples) * 0.5e-3)


def test_anyecg_every_truncation_and_bit_flip_rejected():
    raw = anyecg.encode_frame(np.arange(-30, 45) * 1000, seq=7, t_us=123, fmt=1)
    assert anyecg.max_samples(247, 1) == 75 and len(raw) == anyecg.OVERHEAD + 75 * 3 <= 247 - 3
    for cut in range(len(raw)):
        with pytest.raises(FrameError):
            anyecg.decode_frame(raw[:cut], 1.0)
    for i in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            with pytest.raises(FrameError):
                anyecg.decode_frame(bytes(bad), 1.0)


def test_anyecg_config_round_trip_and_errors():
    cfg = anyecg.AnyEcgConfig(fs_hz=360.0, fmt=0, nv_per_lsb=2500, lead="MLII", battery_pct=87)
    assert anyecg.AnyEcgConfig.decode(cfg.encode()) == cfg
    assert cfg.uv_per_code == 2.5
    unknown = anyecg.AnyEcgConfig(fs_hz=130.04, lead="V2")
    assert anyecg.AnyEcgConfig.decode(unknown.encode()).battery_pct is None
    for bad in (b"", b"\x02" + cfg.encode()[1:], cfg.encode()[:-1], cfg.encode() + b"x"):
        with pytest.raises(FrameError):
            anyecg.AnyEcgConfig.decode(bad)
    assert FrameDecoder(AnyEcgProfile()).feed(b"\x01" * 30) is None  # no config read yet


def test_advertisement_to_profile():
    assert (
        profile_for_advertisement("Polar H10 A1B2C3D4", ["0000180d-0000-1000-8000-00805f9b34fb"])
        == "polar"
    )
    assert profile_for_advertisement("Movesense 174630000192", []) == "movesense"
    assert profile_for_advertisement(None, [anyecg.SERVICE_UUID.upper()]) == "anyecg"
    assert profile_for_advertisement("Fitbit", []) is None


# --- fuzzing: random bytes never crash a decoder, and are counted ------------------------
def _decoders():
    any_profile = AnyEcgProfile(config=anyecg.AnyEcgConfig(fs_hz=250.0))
    return [
        FrameDecoder(PolarH10Profile()),
        FrameDecoder(MovesenseProfile()),
        FrameDecoder(any_profile),
    ]


@FUZZ
@given(st.binary(min_size=0, max_size=260))
def test_random_bytes_never_crash_decoders(data):
    for decoder in _decoders():
        frame = decoder.feed(data)  # must not raise
        stats = decoder.stats
        assert stats.frames + stats.n_malformed == 1
        if frame is not None:
            assert frame.n >= 1 and frame.codes.dtype == np.int64


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["polar", "movesense", "anyecg"]), st.data())
def test_truncated_and_mutated_frames_never_crash(profile, data):
    enc = FrameEncoder(profile, 250.0)
    codes = np.array(data.draw(st.lists(st.integers(-5000, 5000), min_size=1, max_size=60)))
    raw = bytearray(enc.encode(codes, data.draw(st.integers(0, 10**6))))
    cut = data.draw(st.integers(0, len(raw)))
    for i in data.draw(st.lists(st.integers(0, max(0, len(raw) - 1)), max_size=3)):
        raw[i] = data.draw(st.integers(0, 255))
    decoder = {d.profile.name: d for d in _decoders()}[profile]
    decoder.feed(bytes(raw[:cut]))
    assert decoder.stats.frames + decoder.stats.n_malformed == 1


# --- the C reference encoder ---------------------------------------------------------------
@pytest.fixture(scope="module")
def c_encoder(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc/cc) on PATH to build the reference encoder")
    out = tmp_path_factory.mktemp("c") / "libanyecg.so"
    cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", "-shared", "-fPIC"]
    subprocess.run([*cmd, "-o", str(out), str(C_DIR / "anyecg_encoder.c")], check=True)
    lib = ctypes.CDLL(str(out))
    u8p = ctypes.POINTER(ctypes.c_uint8)
    lib.anyecg_crc16.restype = ctypes.c_uint16
    lib.anyecg_crc16.argtypes = [u8p, ctypes.c_size_t]
    lib.anyecg_max_samples.restype = ctypes.c_size_t
    lib.anyecg_max_samples.argtypes = [ctypes.c_uint16, ctypes.c_uint8]
    lib.anyecg_encode_frame.restype = ctypes.c_size_t
    lib.anyecg_encode_frame.argtypes = [
        u8p, ctypes.c_size_t, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64,
        ctypes.POINTER(ctypes.c_int32), ctypes.c_uint8,
    ]  # fmt: skip
    lib.anyecg_encode_config.restype = ctypes.c_size_t
    lib.anyecg_encode_config.argtypes = [
        u8p, ctypes.c_size_t, ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint8,
        ctypes.c_char_p,
    ]  # fmt: skip
    lib.anyecg_stream_encode.restype = ctypes.c_size_t
    return lib


class _CStream(ctypes.Structure):
    _fields_ = [("seq", ctypes.c_uint32), ("format", ctypes.c_uint8), ("flags", ctypes.c_uint8)]


def _c_frame(lib, codes, flags, fmt, seq, t_us, cap=512):
    buf = (ctypes.c_uint8 * cap)()
    arr = (ctypes.c_int32 * max(1, len(codes)))(*[int(c) for c in codes])
    n = lib.anyecg_encode_frame(buf, cap, flags, fmt, seq, t_us, arr, len(codes))
    return bytes(buf[:n])


def test_c_encoder_matches_python_byte_for_byte(c_encoder):
    lib = c_encoder
    data = b"123456789"
    assert lib.anyecg_crc16((ctypes.c_uint8 * 9)(*data), 9) == 0x29B1
    rng = np.random.default_rng(7)
    for i in range(3000):
        fmt = int(rng.integers(0, 3))
        bits = 8 * anyecg.FORMATS[fmt]
        n = int(rng.integers(1, anyecg.max_samples(247, fmt) + 1))
        codes = rng.integers(-(1 << (bits - 1)), (1 << (bits - 1)), size=n)
        if i % 3 == 0:  # include the extremes of the range
            codes[0], codes[-1] = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        seq = int(rng.integers(0, 1 << 32))
        t_us = int(rng.integers(0, 1 << 63))
        flags = int(rng.integers(0, 8))
        c_bytes = _c_frame(lib, codes, flags, fmt, seq, t_us)
        assert c_bytes == anyecg.encode_frame(codes, seq=seq, t_us=t_us, fmt=fmt, flags=flags)
        frame = anyecg.decode_frame(c_bytes, 1.0)
        assert np.array_equal(frame.codes, codes) and frame.seq == seq
    for mtu in (23, 27, 100, 185, 247, 517):
        for fmt in (0, 1, 2):
            assert lib.anyecg_max_samples(mtu, fmt) == anyecg.max_samples(mtu, fmt)


def test_c_encoder_rejects_bad_input(c_encoder):
    lib = c_encoder
    assert _c_frame(lib, [1 << 15], 0, 0, 0, 0) == b""  # does not fit int16
    assert _c_frame(lib, [-(1 << 23) - 1], 0, 1, 0, 0) == b""  # does not fit int24
    assert _c_frame(lib, [1, 2], 0, 7, 0, 0) == b""  # unknown format
    assert _c_frame(lib, [], 0, 1, 0, 0) == b""  # no samples
    assert _c_frame(lib, [1] * 10, 0, 2, 0, 0, cap=40) == b""  # buffer too small


def test_c_config_and_stream(c_encoder):
    lib = c_encoder
    buf = (ctypes.c_uint8 * 64)()
    n = lib.anyecg_encode_config(buf, 64, 1, 360_000, 1000, 90, b"MLII")
    cfg = anyecg.AnyEcgConfig.decode(bytes(buf[:n]))
    assert cfg == anyecg.AnyEcgConfig(
        fs_hz=360.0, fmt=1, nv_per_lsb=1000, lead="MLII", battery_pct=90
    )
    assert lib.anyecg_encode_config(buf, 64, 1, 360_000, 1000, 101, b"I") == 0  # battery > 100
    assert lib.anyecg_encode_config(buf, 64, 1, 360_000, 1000, 255, b"X" * 17) == 0
    # A stream advances its sample counter (wrapping at 2**32) by each frame's size.
    stream = _CStream(seq=(1 << 32) - 10, format=0, flags=FrameFlags.LEAD_OFF)
    lib.anyecg_stream_encode.argtypes = [
        ctypes.POINTER(_CStream), ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t,
        ctypes.c_uint64, ctypes.POINTER(ctypes.c_int32), ctypes.c_uint8,
    ]  # fmt: skip
    seqs = []
    for k in range(3):
        samples = (ctypes.c_int32 * 8)(*range(k * 8, k * 8 + 8))
        m = lib.anyecg_stream_encode(ctypes.byref(stream), buf, 64, 1000 * k, samples, 8)
        frame = anyecg.decode_frame(bytes(buf[:m]), 1.0)
        seqs.append(frame.seq)
        assert frame.flags == FrameFlags.LEAD_OFF and frame.codes.tolist() == list(
            range(k * 8, k * 8 + 8)
        )
    assert seqs == [(1 << 32) - 10, (1 << 32) - 2, 6]


# --- the sequencer: every accepted sample exactly once, in order ---------------------------
# Each family's real rate is off its nominal one (Polar H10: 130.04 Hz for 130).
FS_TRUE = {"polar": 130.04, "movesense": 128.03, "anyecg": 130.04}


def _replay(profile, spec, *, n_frames=300, garbage=0, seed=0):
    """Source codes -> device frames -> link faults (+ garbage) -> decoder -> sequencer.

    Source codes are unique so every output sample maps back to one source index."""
    rng = np.random.default_rng(seed)
    enc = FrameEncoder(profile, FS_TRUE[profile], anyecg_format=1)
    spf = enc.samples_per_frame
    total = n_frames * spf
    codes = rng.permutation(np.arange(-total // 2, total - total // 2))
    prof = {
        "polar": PolarH10Profile(),
        "movesense": MovesenseProfile(fs_hz=128),
        "anyecg": AnyEcgProfile(config=anyecg.AnyEcgConfig(fs_hz=130.0, fmt=1)),
    }[profile]
    decoder, seq = FrameDecoder(prof), Sequencer(prof.nominal_fs)
    injector = FaultInjector(FaultSpec.parse(spec))
    out: list = []
    delivered_intact: set[int] = set()
    n_garbage = 0
    for k in range(n_frames):
        raw = enc.encode(codes[k * spf : (k + 1) * spf], k * spf)
        air = injector.process(raw)
        if garbage and rng.random() < garbage:
            air.insert(int(rng.integers(0, len(air) + 1)), rng.bytes(int(rng.integers(0, 250))))
            n_garbage += 1
        for note in air:
            if note == raw:
                delivered_intact.add(k)
            frame = decoder.feed(note)
            if frame is not None:
                out.extend(seq.push(frame, k))
    out.extend(seq.flush())
    return codes, spf, out, decoder, seq, injector, delivered_intact, n_garbage


def _check_exactly_once(codes, spf, out, seq, delivered_intact):
    index_of = {int(c): i for i, c in enumerate(codes)}
    blocks = [o for o in out if isinstance(o, Block)]
    idx = np.array([index_of[int(c)] for b in blocks for c in b.codes])
    assert np.all(np.diff(idx) > 0), "a sample was duplicated or reordered"
    # contiguous within a segment, and segment-local indices count up from 0
    for a, b in zip(blocks, blocks[1:], strict=False):
        if a.segment == b.segment:
            assert b.seg_index == a.seg_index + a.n
            assert index_of[int(b.codes[0])] == index_of[int(a.codes[-1])] + 1
        else:
            assert b.seg_index == 0
    gaps = [o for o in out if isinstance(o, SeqEvent) and o.kind == "gap"]
    assert len(gaps) == blocks[-1].segment - blocks[0].segment
    # Every intact delivered frame is in the output, except one that arrived after a
    # later frame had already opened the stream (nothing to insert it before).
    got_frames = {i // spf for i in idx}
    lost = delivered_intact - got_frames
    assert all(k < idx[0] // spf for k in lost), f"intact delivered frames lost: {lost}"
    assert seq.counts["late"] >= len(lost)
    return blocks, gaps, idx


@pytest.mark.parametrize("profile", ["polar", "movesense", "anyecg"])
@pytest.mark.parametrize(
    "spec", ["", "drop=0.03", "dup=0.05,reorder=0.05", "drop=0.02,dup=0.03,reorder=0.04"]
)
def test_sequencer_exactly_once(profile, spec):
    codes, spf, out, decoder, seq, inj, intact, _ = _replay(profile, spec + ",seed=3")
    blocks, gaps, idx = _check_exactly_once(codes, spf, out, seq, intact)
    assert seq.counts["duplicate"] == inj.counts["duplicated"]
    # every run of lost frames shows up as one gap of its samples: exact with sequence
    # numbers, +-1 sample per gap from timestamps (Movesense stamps whole ms)
    missing = sum(g.details["missing_samples"] for g in gaps)
    lost = len(codes) - len(idx) - idx[0] - (len(codes) - 1 - idx[-1])
    assert abs(missing - lost) <= (0 if profile == "anyecg" else len(gaps))
    assert len(gaps) <= inj.counts["dropped"]
    if not inj.counts["dropped"]:
        assert not gaps and len(idx) == len(codes)
    # the real rate comes from the timestamps, not the nominal rate
    assert seq.fs_est == pytest.approx(FS_TRUE[profile], rel=2e-4)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["polar", "movesense", "anyecg"]),
    st.floats(0, 0.1),
    st.floats(0, 0.1),
    st.floats(0, 0.1),
    st.integers(0, 10_000),
)
def test_sequencer_exactly_once_random_faults(profile, drop, dup, reorder, seed):
    spec = f"drop={drop},dup={dup},reorder={reorder},seed={seed}"
    codes, spf, out, _, seq, _, intact, _ = _replay(profile, spec, n_frames=120, seed=seed)
    _check_exactly_once(codes, spf, out, seq, intact)


@pytest.mark.parametrize("profile", ["polar", "movesense"])
def test_truncated_frames_are_gaps_never_stitched(profile):
    # Frames cut on a sample boundary decode (no CRC); the first frame of the stream and
    # frames short by a tolerance's worth of samples (which the sequencer alone would
    # stitch on) included. Each is rejected and counted, and its hole is a gap.
    enc = FrameEncoder(profile, FS_TRUE[profile])
    spf, width = enc.samples_per_frame, (3 if profile == "polar" else 4)
    codes = np.arange(60 * spf)
    cuts = {0: spf // 2, 10: spf - 1, 20: spf - 4, 21: spf - 2, 35: 1, 50: spf - 3}
    decoder = FrameDecoder(PolarH10Profile() if profile == "polar" else MovesenseProfile())
    seq, out = Sequencer(decoder.profile.nominal_fs), []
    for k in range(60):
        raw = enc.encode(codes[k * spf : (k + 1) * spf], k * spf)
        if k in cuts:
            raw = raw[: len(raw) - width * (spf - cuts[k])]
        frame = decoder.feed(raw)
        if frame is not None:
            out.extend(seq.push(frame, k))
    out.extend(seq.flush())
    intact = set(range(60)) - set(cuts)
    blocks, gaps, idx = _check_exactly_once(codes, spf, out, seq, intact)
    assert decoder.stats.malformed == {"truncated": len(cuts)}
    assert len(idx) == len(intact) * spf
    assert len(gaps) == 4  # frames 10, 20-21, 35, 50; frame 0 only delays the start
    assert idx[0] == spf


@pytest.mark.parametrize("profile", ["polar", "movesense"])
def test_random_cuts_with_drops_and_reordering_exactly_once(profile):
    spec = "cut=0.05,drop=0.02,reorder=0.03,seed=5"  # (a dup would repeat a cut frame)
    codes, spf, out, decoder, seq, inj, intact, _ = _replay(profile, spec, n_frames=600)
    _check_exactly_once(codes, spf, out, seq, intact)
    assert decoder.stats.malformed == {"truncated": inj.counts["cut"]}
    assert inj.counts["cut"] > 10


def test_anyecg_stream_with_garbage_and_corruption():
    # The CRC rejects every random or corrupted notification; the rest is exact.
    codes, spf, out, decoder, seq, inj, intact, n_garbage = _replay(
        "anyecg", "drop=0.02,reorder=0.03,dup=0.03,corrupt=0.05,seed=11", n_frames=600, garbage=0.1
    )
    _check_exactly_once(codes, spf, out, seq, intact)
    assert decoder.stats.n_malformed == inj.counts["corrupted"] + n_garbage > 50


def test_profile_md_worked_example():
    # The worked example printed in firmware_bridge/PROFILE.md.
    raw = anyecg.encode_frame(np.array([100, -100, 32767, -32768]), seq=1000, t_us=2_000_000, fmt=0)
    doc = (Path(__file__).resolve().parents[1] / "firmware_bridge" / "PROFILE.md").read_text()
    assert (
        "01 00 00 04  e8 03 00 00  80 84 1e 00 00 00 00 00\n64 00 9c ff ff 7f 00 80  be a3" in doc
    )
    assert (
        raw.hex(" ")
        == "01 00 00 04 e8 03 00 00 80 84 1e 00 00 00 00 00 64 00 9c ff ff 7f 00 80 be a3"
    )
    cfg = anyecg.AnyEcgConfig(fs_hz=360.0, fmt=1, nv_per_lsb=1000, lead="MLII", battery_pct=90)
    assert cfg.encode().hex(" ") in doc
