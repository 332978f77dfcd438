"""The Polar H10: PMD (Polar Measurement Data) ECG codec, the central's start sequence
(`PolarH10Profile`), the device's clock and frame size (`PolarH10`), and the GATT
server the simulator offers (`PolarPeripheral`: PMD plus the standard Heart Rate and
Battery services, as the H10 has them).

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

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyecg_edge.firmware_bridge.devices import heart_rate
from anyecg_edge.firmware_bridge.devices.base import (
    DataCallback,
    FrameLength,
    Peripheral,
    Profile,
    Wearable,
    data_forwarder,
)
from anyecg_edge.firmware_bridge.frames import DeviceError, Frame, FrameError

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
    "PolarH10",
    "PolarH10Profile",
    "PolarPeripheral",
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
# Unset device clock: the H10 counts from 2000-01-01 but often starts in 2019.
T_BASE_NS = 599_616_000 * 1_000_000_000

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


class PolarH10Profile(Profile):
    """Polar H10 PMD ECG: 130 Hz nominal (real 128-131 Hz), uV samples, ns timestamps.

    MTU: the OS stack negotiates it (our bumble backend asks for 247); 73-sample frames
    need >= 232. Below that the H10 answers error 10 and the start fails with that
    message instead of streaming cut frames.
    """

    name = "polar"
    display_name = "Polar H10"
    service_uuid = SERVICE_UUID
    data_uuid = DATA_UUID
    name_prefixes = ("Polar H10",)

    def __init__(self, fs_hz: float = ECG_FS_HZ, lead: str = "chest") -> None:
        super().__init__(fs_hz, lead)
        # A shorter frame was cut in transit (see FrameLength).
        self.frame_length = FrameLength(SAMPLES_PER_FRAME, "Polar PMD ECG")

    def decode(self, data: bytes) -> Frame:
        frame = decode_ecg_frame(data)
        self.frame_length.check(frame.n)
        return frame

    async def _command(self, client: Any, cmd: bytes, what: str) -> ControlResponse:
        await client.write_gatt_char(CONTROL_UUID, cmd, response=True)
        resp = decode_control_response(await self._reply(what))
        if resp.op != cmd[0]:
            raise DeviceError(
                f"Polar H10: control-point reply for op {resp.op:#04x} to {what} (op {cmd[0]:#04x})"
            )
        return resp

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()
        # Replies to control-point writes arrive as indications (reading the
        # characteristic returns a stale '0f 05 00...').
        await client.start_notify(CONTROL_UUID, self._on_control)
        await client.start_notify(DATA_UUID, data_forwarder(on_data))
        settings = await self._command(client, GET_ECG_SETTINGS, "get ECG settings")
        if settings.ok:
            rates = parse_settings(settings.params).get(0, [])
            if rates and round(self.nominal_fs) not in rates:
                raise DeviceError(
                    f"Polar H10: ECG rate {self.nominal_fs:g} Hz not offered (offers {rates})"
                )
        resp = await self._command(client, START_ECG, "start ECG")
        if resp.error == 6:
            # Already streaming (e.g. state kept across a reconnect): restart cleanly.
            await self._command(client, STOP_ECG, "stop ECG")
            resp = await self._command(client, START_ECG, "start ECG")
        if not resp.ok:
            raise DeviceError(f"Polar H10 refused to start ECG: {resp.message}")

    async def stop(self, client: Any) -> None:
        resp = await self._command(client, STOP_ECG, "stop ECG")
        if not resp.ok and resp.error != 6:
            raise DeviceError(f"Polar H10 refused to stop ECG: {resp.message}")


class PolarPeripheral(Peripheral):
    """The H10's GATT server: PMD control point + data, Heart Rate, Battery."""

    def __init__(self, wearable: Any) -> None:
        super().__init__(wearable)
        self.heart_rate = heart_rate.HeartRateServer(wearable, battery_pct=wearable.battery_pct)

    def services(self) -> tuple[list[Any], list[tuple[int, bytes]]]:
        from bumble.core import UUID, AdvertisingData
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        P = Characteristic.Properties
        self.control_char = Characteristic(
            CONTROL_UUID,
            P.READ | P.WRITE | P.INDICATE,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(read=lambda _c: bytes.fromhex("0f0500"), write=self._on_cp),
        )
        self.data_char = Characteristic(DATA_UUID, P.NOTIFY, Characteristic.READABLE, b"")
        pmd = Service(SERVICE_UUID, [self.control_char, self.data_char])
        # The H10 advertises the Heart Rate service; PMD is found by discovery.
        adv = [
            (
                AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
                bytes(UUID.from_16_bits(0x180D)),
            )
        ]
        return [pmd, *self.heart_rate.services()], adv

    async def tick(self, conn: Any, t_dev_s: float) -> None:
        await self.heart_rate.tick(conn, t_dev_s)

    def _on_cp(self, conn: Any, value: bytes) -> None:
        w = self.wearable
        value = bytes(value)
        op = value[0] if value else 0
        mtu_ok = conn.att_mtu >= MIN_MTU
        if op == OP_GET_SETTINGS:
            resp = (
                encode_control_response(op, 0, ECG_SETTINGS)
                if mtu_ok
                else bytes([RESPONSE_CODE, op, 0, 10])
            )
        elif op == OP_START:
            if len(value) < len(START_ECG):
                resp = encode_control_response(op, 5)
            elif not mtu_ok:
                resp = encode_control_response(op, 10)
            elif w.streaming:
                resp = encode_control_response(op, 6)
            else:
                w.start_streaming()
                resp = encode_control_response(op, 0, b"\x00")
        elif op == OP_STOP:
            resp = encode_control_response(op, 0 if w.streaming else 6)
            w.stop_streaming()
        else:
            resp = encode_control_response(op, 1)
        w.spawn(w.indicate(conn, self.control_char, resp))


class PolarH10(Wearable):
    name = "polar"
    profile = PolarH10Profile
    nominal_fs_hz = ECG_FS_HZ
    advertised_name = "Polar H10 A1B2C3D4"
    peripheral = PolarPeripheral

    def samples_per_frame(self, fmt: int) -> int:
        return SAMPLES_PER_FRAME

    def sample_bits(self, fmt: int) -> int:
        return 24

    def encode(
        self, codes: np.ndarray, *, t_first_ns: int, t_last_ns: int, seq: int, fmt: int, flags: int
    ) -> bytes:
        # The H10 stamps a frame with its last sample's time.
        return encode_ecg_frame(codes, T_BASE_NS + t_last_ns)


WEARABLE = PolarH10()
