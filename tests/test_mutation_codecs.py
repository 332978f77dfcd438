"""The wearable codecs' refusals in full (message and reason code) and the fields a decoded
frame carries for the sequencer - written against the mutants `make mutate` found alive;
round trips and fuzzing are in test_codecs.py."""

from __future__ import annotations

import numpy as np
import pytest
from anyecg_edge.firmware_bridge import anyecg, movesense, polar
from anyecg_edge.firmware_bridge.frames import FrameError


def _refusal(fn, *args) -> tuple[str, str]:
    with pytest.raises(FrameError) as exc:
        fn(*args)
    return str(exc.value), exc.value.reason


def test_anyecg_refusals_and_fields() -> None:
    good = anyecg.encode_frame(np.arange(8), seq=5, t_us=1000, fmt=1, flags=0)
    assert _refusal(anyecg.decode_frame, b"\x01\x02\x03", 1.0) == (
        "AnyECG frame of 3 bytes; at least 20 expected", "truncated")  # fmt: skip
    assert _refusal(anyecg.decode_frame, bytes([2]) + good[1:], 1.0) == (
        "AnyECG frame version 2; this reader speaks 1", "version")  # fmt: skip
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    assert _refusal(anyecg.decode_frame, bytes(bad), 1.0) == (
        "AnyECG frame CRC mismatch (corrupted or truncated notification)", "crc")  # fmt: skip
    f = anyecg.decode_frame(good, 1.0)
    assert (f.t_ref, f.t_modulo_ns, f.seq) == ("first", (1 << 64) * 1000, 5)
    with pytest.raises(ValueError) as exc:
        anyecg.encode_frame(np.arange(3), seq=0, t_us=0, fmt=9, flags=0)
    assert str(exc.value) == "format must be one of [0, 1, 2], got 9"
    assert anyecg.max_samples(1000, 0) == 255 and anyecg.max_samples(1000, 2) == 244


def test_anyecg_config_refusals() -> None:
    assert _refusal(anyecg.AnyEcgConfig.decode, b"\x01\x02") == (
        "AnyECG config record '01 02': expected version 1 and >= 12 bytes", "config")  # fmt: skip
    cfg = anyecg.AnyEcgConfig(fs_hz=130.0, fmt=1).encode()
    no_fs = bytearray(cfg)
    no_fs[2:6] = b"\0\0\0\0"
    assert _refusal(anyecg.AnyEcgConfig.decode, bytes(no_fs)) == (
        "AnyECG config record '01 01 00 00 00 00 e8 03 00 00 ff 01 49': format 1, fs 0 mHz, "
        "1000 nV/LSB, lead name of 1 bytes is not valid", "config")  # fmt: skip
    no_nv = bytearray(cfg)
    no_nv[6:10] = b"\0\0\0\0"  # a zero scale alone is refused too
    assert _refusal(anyecg.AnyEcgConfig.decode, bytes(no_nv))[1] == "config"
    not_ascii = bytearray(cfg)
    not_ascii[-1] = 0xFF
    assert _refusal(anyecg.AnyEcgConfig.decode, bytes(not_ascii)) == (
        "AnyECG config record: lead name is not ASCII", "config")  # fmt: skip


def test_polar_refusals_and_fields() -> None:
    good = polar.encode_ecg_frame(np.arange(5), 10**9)
    assert _refusal(polar.decode_ecg_frame, good[:5]) == (
        "Polar PMD frame of 5 bytes; an ECG frame has a 10-byte header and at least one "
        "3-byte sample", "truncated")  # fmt: skip
    assert _refusal(polar.decode_ecg_frame, bytes([1]) + good[1:]) == (
        "Polar PMD frame of measurement type 0x01; expected 0x00 (ECG)", "measurement_type")  # fmt: skip
    compressed = bytearray(good)
    compressed[9] = 0x81
    assert _refusal(polar.decode_ecg_frame, bytes(compressed)) == (
        "Polar PMD ECG frame type 1 (compressed); the H10 sends type 0 uncompressed "
        "(3-byte samples)", "frame_type")  # fmt: skip
    f = polar.decode_ecg_frame(good)
    assert (f.t_ref, f.t_modulo_ns) == ("last", 1 << 64)
    assert _refusal(polar.parse_settings, bytes([0, 2, 1, 0])) == (
        "Polar settings '00 02 01 00' truncated", "control")  # fmt: skip
    assert polar.parse_settings(bytes([0, 2, 0x82, 0, 0x14, 0, 1, 1, 0x0E, 0])) == {
        0: [130, 20], 1: [14]}  # fmt: skip


def test_movesense_refusals() -> None:
    good = movesense.encode_ecg_frame(np.arange(16), 1000)
    cont = bytearray(good)
    cont[0] = 3
    assert _refusal(movesense.decode_ecg_frame, bytes(cont)) == (
        "Movesense notification type 0x03 (continuation); expected 0x02 (data)", "packet_type")  # fmt: skip
    other = bytearray(good)
    other[1] = 99
    assert _refusal(movesense.decode_ecg_frame, bytes(other)) == (
        "Movesense data for reference 99; the ECG subscription is 97", "reference")  # fmt: skip
    assert _refusal(movesense.decode_command_result, b"\x05") == (
        "Movesense command result '05'; expected '01 ref status(2)'", "control")  # fmt: skip
    with pytest.raises(ValueError, match="out of the int32 range"):
        movesense.encode_ecg_frame(np.array([1 << 31]), 0)
    movesense.encode_ecg_frame(np.array([(1 << 31) - 1, -(1 << 31)]), 0)  # the int32 limits


def test_anyecg_control_point_and_format_refusals() -> None:
    assert anyecg.decode_control_response(anyecg.encode_control_response(0x01, 2)) == (1, 2)
    assert anyecg.decode_control_response(bytes([0x82, 0])) == (2, 0)
    for bad in (b"\x01\x00", b"\x81", b"\x81\x00\x00"):  # no response bit / wrong length
        assert _refusal(anyecg.decode_control_response, bad)[1] == "control"
    assert _refusal(anyecg.decode_control_response, b"\x01\x00") == (
        "AnyECG control response '01 00'; expected '(0x80|op) status'", "control")  # fmt: skip
    good = anyecg.encode_frame(np.arange(8), seq=5, t_us=1000, fmt=1, flags=0)
    fmt5 = bytearray(good)
    fmt5[2] = 5
    fmt5[-2:] = anyecg.crc16(bytes(fmt5[:-2])).to_bytes(2, "little")  # a valid CRC
    assert _refusal(anyecg.decode_frame, bytes(fmt5), 1.0) == (
        "AnyECG sample format 5; expected 0, 1 or 2", "format")  # fmt: skip


def test_anyecg_profile_needs_its_config_and_the_wearable_sends_its_flags() -> None:
    from anyecg_edge.firmware_bridge.frames import FrameFlags

    good = anyecg.encode_frame(np.arange(8), seq=5, t_us=1000, fmt=1, flags=0)
    assert _refusal(anyecg.AnyEcgProfile().decode, good) == (
        "AnyECG frame before the config record was read", "config")  # fmt: skip
    cfg = anyecg.AnyEcgConfig(fs_hz=250.0, fmt=1, nv_per_lsb=500, lead="II", battery_pct=80)
    prof = anyecg.AnyEcgProfile(config=cfg)
    assert (prof.nominal_fs, prof.lead) == (250.0, "II")
    data = anyecg.WEARABLE.encode(np.array([4, -4]), t_first_ns=2_000_000, t_last_ns=6_000_000,
                                  seq=7, fmt=1, flags=int(FrameFlags.LEAD_OFF))  # fmt: skip
    f = prof.decode(data)
    assert f.flags == FrameFlags.LEAD_OFF and f.seq == 7
    assert f.t_ns == (anyecg.T_BASE_US + 2000) * 1000  # the first sample's device time
    assert f.codes.tolist() == [4, -4] and f.uv_per_code == 0.5
    d = prof.describe()
    assert (d["format"], d["nv_per_lsb"], d["battery_pct"]) == ("int24", 500, 80)


def test_movesense_and_polar_profiles_name_a_cut_frame() -> None:
    prof = movesense.MovesenseProfile()
    assert prof.decode(movesense.encode_ecg_frame(np.arange(16), 1000)).n == 16
    assert _refusal(prof.decode, movesense.encode_ecg_frame(np.arange(12), 1125)) == (
        "Movesense ECG frame of 12 samples; this stream's frames have 16 (cut in transit)",
        "truncated")  # fmt: skip
    p = polar.PolarH10Profile()
    assert _refusal(p.decode, polar.encode_ecg_frame(np.arange(70), 10**9)) == (
        "Polar PMD ECG frame of 70 samples; this stream's frames have 73 (cut in transit)",
        "truncated")  # fmt: skip


@pytest.mark.parametrize(
    ("mod", "fmt", "n", "bits"),
    [
        (polar, 0, 73, 24),
        (movesense, 0, 16, 32),
        (anyecg, 0, 113, 16),
        (anyecg, 1, 75, 24),
        (anyecg, 2, 56, 32),
    ],  # fmt: skip
)
def test_simulated_wearable_frames_decode_with_their_times(mod, fmt, n, bits) -> None:
    # What the simulator sends: a full frame of the widest codes its format holds, stamped
    # where the real device stamps it (Polar: last sample, ns; Movesense: first, ms;
    # AnyECG: first, us), decoded by the profile a central uses.
    w = mod.WEARABLE
    assert (w.samples_per_frame(fmt), w.sample_bits(fmt)) == (n, bits)
    hi = (1 << (bits - 1)) - 1
    codes = np.linspace(-hi - 1, hi, n).round().astype(np.int64)
    t_first_ns, t_last_ns = 3_000_000_000, 3_560_000_000
    data = w.encode(codes, t_first_ns=t_first_ns, t_last_ns=t_last_ns, seq=9, fmt=fmt, flags=0)
    prof = w.profile()
    if mod is anyecg:
        prof.config = anyecg.AnyEcgConfig(fs_hz=250.0, fmt=fmt)
    f = prof.decode(data)
    assert f.codes.tolist() == codes.tolist()
    want_ns = {polar: polar.T_BASE_NS + t_last_ns,
               movesense: (movesense.T_BASE_MS + 3000) * 1_000_000,
               anyecg: (anyecg.T_BASE_US + 3_000_000) * 1000}[mod]  # fmt: skip
    assert f.t_ns == want_ns


def test_polar_control_point_codec() -> None:
    # F0 op type err more params...: the H10's answers to get-settings / start / stop.
    r = polar.decode_control_response(polar.encode_control_response(0x01, 0, polar.ECG_SETTINGS))
    assert (r.op, r.measurement_type, r.error, r.more) == (1, 0, 0, False)
    assert r.ok and r.message == "success" and r.params == polar.ECG_SETTINGS
    assert polar.encode_control_response(0x02, 5, mtype=2) == bytes([0xF0, 2, 2, 5, 0])
    r = polar.decode_control_response(bytes([0xF0, 0x02, 0x00, 10, 1, 0xAA]))
    assert (r.op, r.measurement_type, r.error, r.more, r.params) == (2, 0, 10, True, b"\xaa")
    assert not r.ok and r.message == "invalid MTU (ATT MTU too small for the frame)"
    assert polar.decode_control_response(bytes([0xF0, 0x01, 0x00, 0, 1])).more  # no params
    r = polar.decode_control_response(bytes([0xF0, 0x03, 0x00, 99]))  # no 'more' byte
    assert (r.op, r.error, r.more, r.params, r.message) == (3, 99, False, b"", "error 99")
    assert _refusal(polar.decode_control_response, bytes([0x0F, 5, 0, 0, 0])) == (
        "Polar control-point response '0f 05 00 00 00'; expected 'f0 op type err ...'",
        "control")  # fmt: skip
    assert _refusal(polar.decode_control_response, bytes([0xF0, 1, 0]))[1] == "control"
    # A setting with no values at the very end is still a setting.
    assert polar.parse_settings(bytes([0, 1, 0x82, 0, 5, 0])) == {0: [130], 5: []}


def test_movesense_command_codec() -> None:
    assert movesense.subscribe_command(128) == b"\x01\x61Meas/ECG/128"
    assert movesense.unsubscribe_command() == b"\x02\x61"
    assert movesense.encode_command_result(97, 200) == b"\x01\x61\xc8\x00"
    assert movesense.decode_command_result(b"\x01\x61\xc8\x00") == (97, 200)
    # A result may carry a payload after its status (GSP): the status stays 2 bytes.
    assert movesense.decode_command_result(b"\x01\x61\x94\x01\x07\x08") == (97, 404)
    data = movesense.encode_ecg_frame(np.arange(16), 1000)  # a data packet is no result
    assert _refusal(movesense.decode_command_result, data)[1] == "control"


def test_anyecg_config_and_control_limits() -> None:
    for lead in ("", "x" * 16):  # no name (12 bytes) and the longest name
        cfg = anyecg.AnyEcgConfig(fs_hz=250.0, lead=lead)
        assert anyecg.AnyEcgConfig.decode(cfg.encode()) == cfg
    with pytest.raises(ValueError) as exc:
        anyecg.AnyEcgConfig(fs_hz=250.0, lead="x" * 17).encode()
    assert str(exc.value) == "lead name longer than 16 bytes: 'xxxxxxxxxxxxxxxxx'"
    for op in (anyecg.OP_START, anyecg.OP_STOP):
        assert anyecg.decode_control_response(anyecg.encode_control_response(op, 0)) == (op, 0)
    assert anyecg.encode_control_response(anyecg.OP_STOP, 3) == b"\x82\x03"
    assert anyecg.WEARABLE.uv_per_code(500) == 0.5
    # BLE's default ATT MTU (23) leaves 2 bytes after the frame's 18: no int24 sample fits.
    assert anyecg.max_samples(23, 1) == 0 and anyecg.max_samples(23, 0) == 1


def test_polar_encodes_whole_microvolts_given_as_floats() -> None:
    # A float array of whole uV (a recording's samples) encodes as its integers.
    uv = np.array([1.0, -2.0, 8388607.0, -8388608.0])
    assert polar.decode_ecg_frame(polar.encode_ecg_frame(uv, 10**9)).codes.tolist() == [
        1, -2, 8388607, -8388608]  # fmt: skip


@pytest.mark.parametrize(("fmt", "bits"), [(0, 16), (1, 24), (2, 32)])
def test_anyecg_sample_code_range_per_format(fmt: int, bits: int) -> None:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    data = anyecg.encode_frame(np.array([lo, hi]), seq=0, t_us=0, fmt=fmt)
    assert anyecg.decode_frame(data, 1.0).codes.tolist() == [lo, hi]
    name = {0: "int16", 1: "int24", 2: "int32"}[fmt]
    for bad in (lo - 1, hi + 1):
        with pytest.raises(ValueError) as exc:
            anyecg.encode_frame(np.array([0, bad]), seq=0, t_us=0, fmt=fmt)
        assert str(exc.value) == f"sample codes out of the {name} range"


def test_polar_and_movesense_encoders_refuse_what_the_device_cannot_send() -> None:
    for mod, lo, hi, what in ((polar, -(1 << 23), (1 << 23) - 1, "the 24-bit signed range"),
                              (movesense, -(1 << 31), (1 << 31) - 1, "the int32 range")):  # fmt: skip
        for bad in (lo - 1, hi + 1):
            with pytest.raises(ValueError) as exc:
                mod.encode_ecg_frame(np.array([0, bad]), 0)
            assert str(exc.value) == f"samples_uv out of {what}"
        for shape in ((0,), (2, 3)):
            with pytest.raises(ValueError) as exc:
                mod.encode_ecg_frame(np.zeros(shape, dtype=np.int64), 0)
            assert str(exc.value) == (
                f"samples_uv must be a non-empty 1-D array, got shape {shape}")  # fmt: skip
    with pytest.raises(ValueError) as exc:
        polar.encode_ecg_frame(np.arange(3), 1 << 64)
    assert str(exc.value) == f"t_last_ns must fit uint64, got {1 << 64}"
    # Movesense stamps are a uint32 ms clock: it wraps after ~49.7 days.
    data = movesense.encode_ecg_frame(np.arange(16), (1 << 32) + 5)
    assert movesense.decode_ecg_frame(data).t_ns == 5_000_000


def test_anyecg_frame_layout_and_length_refusals() -> None:
    data = anyecg.encode_frame(np.array([1, -2, 3]), seq=9, t_us=(1 << 64) + 7)
    assert data[2] == 1 and len(data) == 16 + 3 * 3 + 2  # int24 by default
    f = anyecg.decode_frame(data, 1.0)
    assert f.t_ns == 7000 and f.seq_modulo == 1 << 32  # the us clock wraps at 2**64
    assert anyecg.decode_frame(anyecg.encode_frame(np.array([1.0, -2.0]), seq=0, t_us=0),
                               1.0).codes.tolist() == [1, -2]  # fmt: skip
    assert len(anyecg.encode_frame(np.zeros(255), seq=0, t_us=0)) == 16 + 255 * 3 + 2
    for shape in ((0,), (256,), (2, 3)):
        with pytest.raises(ValueError) as exc:
            anyecg.encode_frame(np.zeros(shape), seq=0, t_us=0)
        assert str(exc.value) == f"a frame carries 1-255 samples, got shape {shape}"
    good = anyecg.encode_frame(np.arange(8), seq=5, t_us=1000, fmt=1, flags=0)
    assert _refusal(anyecg.decode_frame, good[:19], 1.0) == (
        "AnyECG frame of 19 bytes; at least 20 expected", "truncated")  # fmt: skip
    assert _refusal(anyecg.decode_frame, good[:-2] + b"\0" + good[-2:], 1.0) == (
        "AnyECG frame of 43 bytes for 8 int24 samples; expected 42", "length")  # fmt: skip


def test_profile_defaults() -> None:
    p = anyecg.AnyEcgProfile()
    assert (p.nominal_fs, p.lead) == (250.0, "I")
    p = movesense.MovesenseProfile()
    assert (p.nominal_fs, p.lead) == (128.0, "chest")
    p = polar.PolarH10Profile()
    assert (p.nominal_fs, p.lead) == (130.0, "chest")


def test_movesense_notification_refusals_in_full() -> None:
    assert _refusal(movesense.decode_ecg_frame, b"\x02") == (
        "Movesense notification of 1 bytes", "truncated")  # fmt: skip
    for data in (b"\x02\x61", b"\x02\x61\0\0\0\0", b"\x02\x61\0\0\0\0\1\2\3"):
        assert _refusal(movesense.decode_ecg_frame, data) == (
            f"Movesense ECG notification of {len(data)} bytes; expected a 6-byte header and "
            "whole 4-byte samples", "truncated")  # fmt: skip
    assert _refusal(movesense.decode_ecg_frame, b"\x01\x61\xc8\x00")[0] == (
        "Movesense notification type 0x01 (command result); expected 0x02 (data)"
    )
    assert _refusal(movesense.decode_ecg_frame, b"\x07\x61\0\0")[0] == (
        "Movesense notification type 0x07 (unknown); expected 0x02 (data)"
    )
    f = movesense.decode_ecg_frame(movesense.encode_ecg_frame(np.array([5, -5]), 10))
    assert f.codes.dtype == np.int64 and f.t_modulo_ns == (1 << 32) * 1_000_000
    assert f.uv_per_code == 1.0 and f.samples_mv.tolist() == [0.005, -0.005]  # uV codes


def test_polar_frame_type_and_payload_refusals_in_full() -> None:
    good = polar.encode_ecg_frame(np.arange(5), 10**9)
    typed = bytearray(good)
    typed[9] = 0x01
    assert _refusal(polar.decode_ecg_frame, bytes(typed))[0] == (
        "Polar PMD ECG frame type 1; the H10 sends type 0 uncompressed (3-byte samples)"
    )
    assert _refusal(polar.decode_ecg_frame, good[:14]) == (
        "Polar PMD ECG payload of 4 bytes is not a whole number of 3-byte samples",
        "truncated")  # fmt: skip
