"""Polar H10 PMD (Polar Measurement Data) ECG: control point messages and data frames.

Facts (DESIGN.md section 5, Polar's SDK): the PMD service has a control point
(write + indicate) and a data characteristic (notify). ECG data frames are

    byte 0      measurement type (0x00 = ECG)
    bytes 1-8   uint64 LE timestamp in ns of the LAST sample (epoch 2000-01-01; the
                clock is often never set, so use it for intervals only)
    byte 9      frame type: bit 7 = delta-compressed, bits 0-6 = type
    bytes 10-   N x 3-byte signed LE samples in microvolts (type 0, uncompressed)

The H10 always sends type 0 uncompressed; types 1-3 belong to other Polar devices'
ECG layouts and are rejected here, never decoded as 3-byte samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from anyecg_edge.firmware_bridge.frames import Frame, FrameError

__all__ = [
    "CONTROL_UUID",
    "DATA_UUID",
    "ECG_FS_HZ",
    "ERRORS",
    "GET_ECG_SETTINGS",
    "MIN_MTU",
    "SAMPLES_PER_FRAME",
    "SERVICE_UUID",
    "START_ECG",
    "STOP_ECG",
    "ControlResponse",
    "decode_control_response",
    "decode_ecg_frame",
    "encode_control_response",
    "encode_ecg_frame",
    "parse_settings",
]

SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
CONTROL_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

MEAS_ECG = 0x00
OP_GET_SETTINGS = 0x01
OP_START = 0x02
OP_STOP = 0x03
RESPONSE_CODE = 0xF0

# Start ECG at 130 Hz, 14-bit: op 02, type 00, setting 00 (rate) x1 = 0x0082,
# setting 01 (resolution) x1 = 0x000E.
START_ECG = bytes.fromhex("02000001820001010e00")
STOP_ECG = bytes.fromhex("0300")
GET_ECG_SETTINGS = bytes.fromhex("0100")
ECG_SETTINGS = bytes.fromhex("0001820001010e00")
ECG_FS_HZ = 130.0
HEADER_LEN = 10
# 73 samples per frame at ATT MTU 232 (10 + 73 * 3 = 229 bytes = MTU - 3).
SAMPLES_PER_FRAME = 73
MIN_MTU = HEADER_LEN + 3 * SAMPLES_PER_FRAME + 3
TIMESTAMP_MODULO_NS = 1 << 64

ERRORS = {
    0: "success",
    1: "invalid op code",
    2: "invalid measurement type",
    3: "not supported",
    4: "invalid length",
    5: "invalid parameter (start without settings?)",
    6: "already in state (stream already running)",
    7: "invalid resolution",
    8: "invalid sample rate",
    9: "invalid range",
    10: "invalid MTU (ATT MTU too small for the frame)",
    11: "invalid number of channels",
    12: "invalid state",
    13: "device in charger",
}

_MAX_I24 = (1 << 23) - 1
_MIN_I24 = -(1 << 23)


def encode_ecg_frame(samples_uv: np.ndarray, t_last_ns: int, frame_type: int = 0) -> bytes:
    """One PMD ECG notification (type 0: 3-byte signed samples in uV)."""
    s = np.asarray(samples_uv, dtype=np.int64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"samples_uv must be a non-empty 1-D array, got shape {s.shape}")
    if s.min() < _MIN_I24 or s.max() > _MAX_I24:
        raise ValueError("samples_uv out of the 24-bit signed range")
    if not 0 <= t_last_ns < TIMESTAMP_MODULO_NS:
        raise ValueError(f"t_last_ns must fit uint64, got {t_last_ns}")
    raw = (s & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3]
    header = bytes([MEAS_ECG]) + int(t_last_ns).to_bytes(8, "little") + bytes([frame_type])
    return header + raw.tobytes()


def decode_ecg_frame(data: bytes) -> Frame:
    """Decode one PMD ECG notification; raises FrameError (with a reason) if malformed."""
    n_bytes = len(data)
    if n_bytes < HEADER_LEN + 3:
        raise FrameError(
            f"Polar PMD frame of {n_bytes} bytes; an ECG frame has a {HEADER_LEN}-byte "
            "header and at least one 3-byte sample",
            "truncated",
        )
    if data[0] != MEAS_ECG:
        raise FrameError(
            f"Polar PMD frame of measurement type {data[0]:#04x}; expected 0x00 (ECG)",
            "measurement_type",
        )
    ftype = data[9]
    if ftype != 0:
        raise FrameError(
            f"Polar PMD ECG frame type {ftype & 0x7F}{' (compressed)' if ftype & 0x80 else ''}"
            "; the H10 sends type 0 uncompressed (3-byte samples)",
            "frame_type",
        )
    body = n_bytes - HEADER_LEN
    if body % 3:
        raise FrameError(
            f"Polar PMD ECG payload of {body} bytes is not a whole number of 3-byte samples",
            "truncated",
        )
    raw = np.frombuffer(bytes(data[HEADER_LEN:]), dtype=np.uint8).reshape(-1, 3)
    vals = raw[:, 0].astype(np.int64) | (raw[:, 1].astype(np.int64) << 8)
    vals |= raw[:, 2].astype(np.int64) << 16
    vals -= (vals & 0x800000) << 1  # sign-extend 24 -> 64 bit
    t_ns = int.from_bytes(data[1:9], "little")
    return Frame(
        codes=vals,
        uv_per_code=1.0,
        t_ns=t_ns,
        t_ref="last",
        t_modulo_ns=TIMESTAMP_MODULO_NS,
    )


@dataclass(frozen=True)
class ControlResponse:
    """A control-point response `F0 op type err more params...`."""

    op: int
    measurement_type: int
    error: int
    more: bool
    params: bytes

    @property
    def ok(self) -> bool:
        return self.error == 0

    @property
    def message(self) -> str:
        return ERRORS.get(self.error, f"error {self.error}")


def encode_control_response(op: int, error: int, params: bytes = b"", mtype: int = 0) -> bytes:
    return bytes([RESPONSE_CODE, op, mtype, error, 0]) + params


def decode_control_response(data: bytes) -> ControlResponse:
    if len(data) < 4 or data[0] != RESPONSE_CODE:
        raise FrameError(
            f"Polar control-point response {bytes(data).hex(' ')!r}; expected 'f0 op type err ...'",
            "control",
        )
    more = bool(data[4]) if len(data) > 4 else False
    return ControlResponse(data[1], data[2], data[3], more, bytes(data[5:]))


def parse_settings(params: bytes) -> dict[int, list[int]]:
    """Settings TLVs: `type count value(uint16 LE) x count` repeated -> {type: [values]}."""
    out: dict[int, list[int]] = {}
    i = 0
    while i + 2 <= len(params):
        stype, count = params[i], params[i + 1]
        i += 2
        if i + 2 * count > len(params):
            raise FrameError(f"Polar settings {params.hex(' ')!r} truncated", "control")
        out[stype] = [
            int.from_bytes(params[i + 2 * k : i + 2 * k + 2], "little") for k in range(count)
        ]
        i += 2 * count
    return out
