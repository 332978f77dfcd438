"""Movesense ECG over the Movesense GATT sensor-data protocol (GSP): the codec, the
central's subscription (`MovesenseProfile`), the device's clock and frame size
(`Movesense`) and the GATT server the simulator offers (`MovesensePeripheral`).

Facts (DESIGN.md section 5; Movesense gatt_sensordata_app): service
``34802252-7185-4d5d-b431-630e7050e8f0``, commands written to ``34800001-...``,
responses and data notified on ``34800002-...``.

    command   [0x01 SUBSCRIBE][ref]["Meas/ECG/<rate>" UTF-8]   /  [0x02 UNSUBSCRIBE][ref]
    result    [0x01 COMMAND_RESULT][ref][uint16 LE status, 200 = OK]
    data      [0x02 DATA][ref][uint32 LE timestamp, ms][int32 LE sample] x N

ECG rates: 125, 128, 200, 250, 256, 500, 512 Hz; the sensor sends 16 samples per
notification. Assumptions, stated because Movesense does not document them on the wire:
the timestamp stamps the FIRST sample of the notification (Movesense's "timestamp of
the first measurement"), samples are in microvolts, and the ms clock wraps at 2**32.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from anyecg_edge.firmware_bridge.devices.base import (
    DataCallback,
    FrameLength,
    Peripheral,
    Profile,
    Wearable,
)
from anyecg_edge.firmware_bridge.frames import DeviceError, Frame, FrameError

__all__ = [
    "ECG_RATES_HZ",
    "Movesense",
    "MovesensePeripheral",
    "MovesenseProfile",
    "SERVICE_UUID",
    "WRITE_UUID",
    "NOTIFY_UUID",
    "decode_command_result",
    "decode_ecg_frame",
    "encode_command_result",
    "encode_ecg_frame",
    "subscribe_command",
    "unsubscribe_command",
]

SERVICE_UUID = "34802252-7185-4d5d-b431-630e7050e8f0"
WRITE_UUID = "34800001-7185-4d5d-b431-630e7050e8f0"
NOTIFY_UUID = "34800002-7185-4d5d-b431-630e7050e8f0"

CMD_HELLO = 0x00
CMD_SUBSCRIBE = 0x01
CMD_UNSUBSCRIBE = 0x02
RESP_COMMAND_RESULT = 0x01
RESP_DATA = 0x02
RESP_DATA_PART2 = 0x03

ECG_RATES_HZ = (125, 128, 200, 250, 256, 500, 512)
SAMPLES_PER_FRAME = 16
HEADER_LEN = 6
TIMESTAMP_MODULO_NS = (1 << 32) * 1_000_000
# Our reference id for the ECG subscription (any byte; echoed back in every packet).
ECG_REF = 97
# The device's ms clock at its first sample (arbitrary: it counts from power-on).
T_BASE_MS = 1_234_567
# Command results are HTTP-like.
STATUS_OK, STATUS_NOT_FOUND, STATUS_BAD_REQUEST = 200, 404, 400


def subscribe_command(rate_hz: int, ref: int = ECG_REF) -> bytes:
    return bytes([CMD_SUBSCRIBE, ref]) + f"Meas/ECG/{int(rate_hz)}".encode()


def unsubscribe_command(ref: int = ECG_REF) -> bytes:
    return bytes([CMD_UNSUBSCRIBE, ref])


def encode_command_result(ref: int, status: int) -> bytes:
    return bytes([RESP_COMMAND_RESULT, ref]) + int(status).to_bytes(2, "little")


def decode_command_result(data: bytes) -> tuple[int, int]:
    """(ref, status) of a COMMAND_RESULT notification."""
    if len(data) < 4 or data[0] != RESP_COMMAND_RESULT:
        raise FrameError(
            f"Movesense command result {bytes(data).hex(' ')!r}; expected '01 ref status(2)'",
            "control",
        )
    return data[1], int.from_bytes(data[2:4], "little")


def encode_ecg_frame(samples_uv: np.ndarray, t_first_ms: int, ref: int = ECG_REF) -> bytes:
    s = np.asarray(samples_uv, dtype=np.int64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"samples_uv must be a non-empty 1-D array, got shape {s.shape}")
    if s.min() < -(1 << 31) or s.max() >= 1 << 31:
        raise ValueError("samples_uv out of the int32 range")
    header = bytes([RESP_DATA, ref]) + (int(t_first_ms) % (1 << 32)).to_bytes(4, "little")
    return header + s.astype("<i4").tobytes()


def decode_ecg_frame(data: bytes, ref: int = ECG_REF) -> Frame:
    """Decode one ECG DATA notification; raises FrameError (with a reason) if malformed."""
    n_bytes = len(data)
    if n_bytes < 2:
        raise FrameError(f"Movesense notification of {n_bytes} bytes", "truncated")
    if data[0] != RESP_DATA:
        kind = {RESP_COMMAND_RESULT: "command result", RESP_DATA_PART2: "continuation"}
        raise FrameError(
            f"Movesense notification type {data[0]:#04x} ({kind.get(data[0], 'unknown')}); "
            "expected 0x02 (data)",
            "packet_type",
        )
    if data[1] != ref:
        raise FrameError(
            f"Movesense data for reference {data[1]}; the ECG subscription is {ref}", "reference"
        )
    body = n_bytes - HEADER_LEN
    if body < 4 or body % 4:
        raise FrameError(
            f"Movesense ECG notification of {n_bytes} bytes; expected a 6-byte header and "
            "whole 4-byte samples",
            "truncated",
        )
    codes = np.frombuffer(bytes(data[HEADER_LEN:]), dtype="<i4").astype(np.int64)
    t_ms = int.from_bytes(data[2:6], "little")
    return Frame(
        codes=codes,
        uv_per_code=1.0,
        t_ns=t_ms * 1_000_000,
        t_ref="first",
        t_modulo_ns=TIMESTAMP_MODULO_NS,
    )


class MovesenseProfile(Profile):
    """Movesense ECG over GSP: subscribe to Meas/ECG/<rate>, int32 samples, ms timestamps."""

    name = "movesense"
    display_name = "Movesense"
    service_uuid = SERVICE_UUID
    data_uuid = NOTIFY_UUID
    name_prefixes = ("Movesense",)

    def __init__(self, fs_hz: float = 128.0, lead: str = "chest") -> None:
        if int(fs_hz) not in ECG_RATES_HZ or fs_hz != int(fs_hz):
            raise ValueError(f"Movesense ECG rate {fs_hz:g} Hz; expected one of {ECG_RATES_HZ}")
        super().__init__(fs_hz, lead)
        self.frame_length = FrameLength(SAMPLES_PER_FRAME, "Movesense ECG")

    def decode(self, data: bytes) -> Frame:
        frame = decode_ecg_frame(data)
        self.frame_length.check(frame.n)
        return frame

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()

        # One characteristic carries both command results and data.
        def route(_sender: Any, data: bytearray) -> None:
            if data and data[0] == RESP_COMMAND_RESULT:
                self._control.put_nowait(bytes(data))
            else:
                on_data(bytes(data), time.perf_counter_ns())

        await client.start_notify(NOTIFY_UUID, route)
        await client.write_gatt_char(
            WRITE_UUID, subscribe_command(int(self.nominal_fs)), response=True
        )
        ref, status = decode_command_result(await self._reply("subscribe Meas/ECG"))
        if status != STATUS_OK:
            raise DeviceError(f"Movesense refused Meas/ECG/{int(self.nominal_fs)}: status {status}")
        del ref

    async def stop(self, client: Any) -> None:
        await client.write_gatt_char(WRITE_UUID, unsubscribe_command(), response=True)


class MovesensePeripheral(Peripheral):
    """The sensor's GSP service: a command characteristic and one notifying both command
    results and data."""

    def services(self) -> tuple[list[Any], list[tuple[int, bytes]]]:
        from bumble.core import UUID, AdvertisingData
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        P = Characteristic.Properties
        write = Characteristic(
            WRITE_UUID,
            P.WRITE | P.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_command),
        )
        self.data_char = Characteristic(NOTIFY_UUID, P.NOTIFY, Characteristic.READABLE, b"")
        adv = [
            (
                AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                bytes(UUID(SERVICE_UUID)),
            )
        ]
        return [Service(SERVICE_UUID, [write, self.data_char])], adv

    def _on_command(self, conn: Any, value: bytes) -> None:
        w = self.wearable
        value = bytes(value)
        if len(value) < 2:
            return
        cmd, ref = value[0], value[1]
        if cmd == CMD_SUBSCRIBE:
            path = value[2:].decode("ascii", "replace")
            if path == f"Meas/ECG/{int(w.fs_nominal)}":
                w.start_streaming()
                status = STATUS_OK
            else:
                status = STATUS_NOT_FOUND
        elif cmd == CMD_UNSUBSCRIBE:
            w.stop_streaming()
            status = STATUS_OK
        else:
            status = STATUS_BAD_REQUEST
        w.spawn(w.notify(conn, self.data_char, encode_command_result(ref, status)))


class Movesense(Wearable):
    name = "movesense"
    profile = MovesenseProfile
    nominal_fs_hz = 128.0
    advertised_name = "Movesense 174630000192"
    peripheral = MovesensePeripheral

    def samples_per_frame(self, fmt: int) -> int:
        return SAMPLES_PER_FRAME

    def sample_bits(self, fmt: int) -> int:
        return 32

    def encode(
        self, codes: np.ndarray, *, t_first_ns: int, t_last_ns: int, seq: int, fmt: int, flags: int
    ) -> bytes:
        return encode_ecg_frame(codes, T_BASE_MS + t_first_ns // 1_000_000)


WEARABLE = Movesense()
