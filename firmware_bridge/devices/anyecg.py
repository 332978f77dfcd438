"""AnyECG open GATT profile, version 1: codec for data frames, the config record and the
control point; the central's start sequence (`AnyEcgProfile`), the device's clock and
frame size (`AnyEcgWearable`) and the GATT server the simulator offers
(`AnyEcgPeripheral`). The normative spec is ``firmware_bridge/PROFILE.md``; the firmware-side
reference encoder is ``firmware_bridge/c/anyecg_encoder.c`` (tests check both agree
byte for byte).

Data frame (little-endian)::

    0   u8   version (1)
    1   u8   flags: bit0 lead-off, bit1 battery low, bit2 time base reset
    2   u8   sample format: 0 = int16, 1 = int24, 2 = int32
    3   u8   n, number of samples (>= 1)
    4   u32  seq: device sample counter of the first sample (wraps at 2**32)
    8   u64  t_us: device time of the first sample, microseconds
    16  n samples, signed, 2/3/4 bytes each
    end u16  CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of all preceding bytes
"""

from __future__ import annotations

import asyncio
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyecg_edge.firmware_bridge.devices.base import (
    DataCallback,
    Peripheral,
    Profile,
    Wearable,
    data_forwarder,
)
from anyecg_edge.firmware_bridge.frames import DeviceError, Frame, FrameError, FrameFlags

__all__ = [
    "CONFIG_UUID",
    "CONTROL_UUID",
    "DATA_UUID",
    "FORMATS",
    "SERVICE_UUID",
    "AnyEcgConfig",
    "AnyEcgPeripheral",
    "AnyEcgProfile",
    "AnyEcgWearable",
    "crc16",
    "decode_control_response",
    "decode_frame",
    "encode_control_response",
    "encode_frame",
    "max_samples",
]

SERVICE_UUID = "a1ec0001-5c6e-4b7a-9f3d-2e8b6c4d1a70"
DATA_UUID = "a1ec0002-5c6e-4b7a-9f3d-2e8b6c4d1a70"
CONFIG_UUID = "a1ec0003-5c6e-4b7a-9f3d-2e8b6c4d1a70"
CONTROL_UUID = "a1ec0004-5c6e-4b7a-9f3d-2e8b6c4d1a70"

VERSION = 1
HEADER_LEN = 16
CRC_LEN = 2
OVERHEAD = HEADER_LEN + CRC_LEN
# format code -> bytes per sample
FORMATS = {0: 2, 1: 3, 2: 4}
FORMAT_NAMES = {0: "int16", 1: "int24", 2: "int32"}
SEQ_MODULO = 1 << 32
TIMESTAMP_MODULO_NS = (1 << 64) * 1000

OP_START = 0x01
OP_STOP = 0x02
STATUS = {0: "ok", 1: "unknown op code", 2: "invalid parameter", 3: "not ready"}
MAX_LEAD_NAME = 16
# The device's us clock at its first sample (arbitrary: it counts from power-on).
T_BASE_US = 5_000_000
# The frame size the simulated device sends: as many samples as an ATT MTU of 247 takes.
SIM_ATT_MTU = 247


def crc16(data: bytes, init: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (check value of b'123456789' is 0x29B1)."""
    return binascii.crc_hqx(data, init)


def max_samples(att_mtu: int, fmt: int) -> int:
    """Most samples one notification can carry at this ATT MTU (payload = MTU - 3)."""
    return max(0, min(255, (att_mtu - 3 - OVERHEAD) // FORMATS[fmt]))


def _range(fmt: int) -> tuple[int, int]:
    bits = 8 * FORMATS[fmt]
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def encode_frame(
    codes: np.ndarray,
    *,
    seq: int,
    t_us: int,
    fmt: int = 1,
    flags: int = 0,
) -> bytes:
    """One AnyECG v1 data frame (what a device notifies)."""
    c = np.asarray(codes, dtype=np.int64)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt}")
    if c.ndim != 1 or not 1 <= c.size <= 255:
        raise ValueError(f"a frame carries 1-255 samples, got shape {c.shape}")
    lo, hi = _range(fmt)
    if c.min() < lo or c.max() > hi:
        raise ValueError(f"sample codes out of the {FORMAT_NAMES[fmt]} range")
    width = FORMATS[fmt]
    body = (c & ((1 << (8 * width)) - 1)).astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width]
    head = (
        bytes([VERSION, flags & 0xFF, fmt, c.size])
        + (int(seq) % SEQ_MODULO).to_bytes(4, "little")
        + (int(t_us) % (1 << 64)).to_bytes(8, "little")
    )
    frame = head + body.tobytes()
    return frame + crc16(frame).to_bytes(2, "little")


def decode_frame(data: bytes, uv_per_code: float) -> Frame:
    """Decode one AnyECG v1 data frame; raises FrameError (with a reason) if malformed."""
    data = bytes(data)
    n_bytes = len(data)
    if n_bytes < OVERHEAD + 2:
        raise FrameError(
            f"AnyECG frame of {n_bytes} bytes; at least {OVERHEAD + 2} expected", "truncated"
        )
    if data[0] != VERSION:
        raise FrameError(f"AnyECG frame version {data[0]}; this reader speaks 1", "version")
    fmt, n = data[2], data[3]
    if fmt not in FORMATS:
        raise FrameError(f"AnyECG sample format {fmt}; expected 0, 1 or 2", "format")
    expected = OVERHEAD + n * FORMATS[fmt]
    if n == 0 or n_bytes != expected:
        raise FrameError(
            f"AnyECG frame of {n_bytes} bytes for {n} {FORMAT_NAMES[fmt]} samples; "
            f"expected {expected}",
            "length",
        )
    crc = int.from_bytes(data[-2:], "little")
    if crc16(data[:-2]) != crc:
        raise FrameError("AnyECG frame CRC mismatch (corrupted or truncated notification)", "crc")
    width = FORMATS[fmt]
    raw = np.frombuffer(data[HEADER_LEN:-CRC_LEN], dtype=np.uint8).reshape(n, width)
    vals = np.zeros(n, dtype=np.int64)
    for k in range(width):
        vals |= raw[:, k].astype(np.int64) << (8 * k)
    sign = 1 << (8 * width - 1)
    vals -= (vals & sign) << 1
    return Frame(
        codes=vals,
        uv_per_code=uv_per_code,
        t_ns=int.from_bytes(data[8:16], "little") * 1000,
        t_ref="first",
        seq=int.from_bytes(data[4:8], "little"),
        seq_modulo=SEQ_MODULO,
        t_modulo_ns=TIMESTAMP_MODULO_NS,
        flags=FrameFlags(data[1] & 0x07),
    )


@dataclass(frozen=True)
class AnyEcgConfig:
    """The config characteristic: how to read the frames of this device."""

    fs_hz: float
    fmt: int = 1
    nv_per_lsb: int = 1000
    lead: str = "I"
    battery_pct: int | None = None

    @property
    def uv_per_code(self) -> float:
        return self.nv_per_lsb / 1000.0

    def encode(self) -> bytes:
        lead = self.lead.encode("ascii")
        if len(lead) > MAX_LEAD_NAME:
            raise ValueError(f"lead name longer than {MAX_LEAD_NAME} bytes: {self.lead!r}")
        battery = 0xFF if self.battery_pct is None else int(self.battery_pct)
        return (
            bytes([VERSION, self.fmt])
            + round(self.fs_hz * 1000).to_bytes(4, "little")
            + int(self.nv_per_lsb).to_bytes(4, "little")
            + bytes([battery, len(lead)])
            + lead
        )

    @classmethod
    def decode(cls, data: bytes) -> AnyEcgConfig:
        data = bytes(data)
        if len(data) < 12 or data[0] != VERSION:
            raise FrameError(
                f"AnyECG config record {data.hex(' ')!r}: expected version 1 and >= 12 bytes",
                "config",
            )
        fmt = data[1]
        fs_mhz = int.from_bytes(data[2:6], "little")
        nv = int.from_bytes(data[6:10], "little")
        battery, n_lead = data[10], data[11]
        if fmt not in FORMATS or fs_mhz == 0 or nv == 0 or len(data) != 12 + n_lead:
            raise FrameError(
                f"AnyECG config record {data.hex(' ')!r}: format {fmt}, fs {fs_mhz} mHz, "
                f"{nv} nV/LSB, lead name of {n_lead} bytes is not valid",
                "config",
            )
        try:
            lead = data[12:].decode("ascii")
        except UnicodeDecodeError:
            raise FrameError("AnyECG config record: lead name is not ASCII", "config") from None
        return cls(
            fs_hz=fs_mhz / 1000.0,
            fmt=fmt,
            nv_per_lsb=nv,
            lead=lead,
            battery_pct=None if battery == 0xFF else battery,
        )


def encode_control_response(op: int, status: int) -> bytes:
    return bytes([0x80 | op, status])


def decode_control_response(data: bytes) -> tuple[int, int]:
    """(op, status) of a control-point indication."""
    if len(data) != 2 or not data[0] & 0x80:
        raise FrameError(
            f"AnyECG control response {bytes(data).hex(' ')!r}; expected '(0x80|op) status'",
            "control",
        )
    return data[0] & 0x7F, data[1]


class AnyEcgProfile(Profile):
    """AnyECG open profile v1 (firmware_bridge/PROFILE.md): config record + seq-numbered frames."""

    name = "anyecg"
    display_name = "AnyECG"
    service_uuid = SERVICE_UUID
    data_uuid = DATA_UUID
    name_prefixes = ("AnyECG",)

    def __init__(
        self, fs_hz: float = 250.0, lead: str = "I", config: AnyEcgConfig | None = None
    ) -> None:
        super().__init__(fs_hz, lead)
        self.config: AnyEcgConfig | None = config
        if config is not None:
            self.nominal_fs, self.lead = config.fs_hz, config.lead

    def decode(self, data: bytes) -> Frame:
        if self.config is None:
            raise FrameError("AnyECG frame before the config record was read", "config")
        return decode_frame(data, self.config.uv_per_code)

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()
        self.config = AnyEcgConfig.decode(await client.read_gatt_char(CONFIG_UUID))
        self.nominal_fs, self.lead = self.config.fs_hz, self.config.lead
        await client.start_notify(CONTROL_UUID, self._on_control)
        await client.start_notify(DATA_UUID, data_forwarder(on_data))
        await client.write_gatt_char(CONTROL_UUID, bytes([OP_START]), response=True)
        op, status = decode_control_response(await self._reply("start"))
        if op != OP_START or status != 0:
            raise DeviceError(
                f"AnyECG device refused start: {STATUS.get(status, status)} (op {op})"
            )

    async def stop(self, client: Any) -> None:
        await client.write_gatt_char(CONTROL_UUID, bytes([OP_STOP]), response=True)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.config is not None:
            out.update(
                format=FORMAT_NAMES[self.config.fmt],
                nv_per_lsb=self.config.nv_per_lsb,
                battery_pct=self.config.battery_pct,
            )
        return out


class AnyEcgPeripheral(Peripheral):
    """The open profile's service: data (notify), config record (read), control point."""

    def __init__(self, wearable: Any) -> None:
        super().__init__(wearable)
        self.config = AnyEcgConfig(
            fs_hz=wearable.fs_nominal,
            fmt=wearable.anyecg_format,
            nv_per_lsb=wearable.nv_per_lsb,
            lead=wearable.lead,
            battery_pct=wearable.battery_pct,
        )

    def services(self) -> tuple[list[Any], list[tuple[int, bytes]]]:
        from bumble.core import UUID, AdvertisingData
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        P = Characteristic.Properties
        self.control_char = Characteristic(
            CONTROL_UUID,
            P.WRITE | P.INDICATE,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_cp),
        )
        config = Characteristic(
            CONFIG_UUID,
            P.READ,
            Characteristic.READABLE,
            CharacteristicValue(read=lambda _c: self.config.encode()),
        )
        self.data_char = Characteristic(DATA_UUID, P.NOTIFY, Characteristic.READABLE, b"")
        adv = [
            (
                AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
                bytes(UUID(SERVICE_UUID)),
            )
        ]
        return [Service(SERVICE_UUID, [self.data_char, config, self.control_char])], adv

    def _on_cp(self, conn: Any, value: bytes) -> None:
        w = self.wearable
        value = bytes(value)
        op = value[0] if value else 0
        if len(value) != 1:
            status = 2
        elif op == OP_START:
            if not w.streaming:
                w.start_streaming()
            status = 0
        elif op == OP_STOP:
            w.stop_streaming()
            status = 0
        else:
            status = 1
        w.spawn(w.indicate(conn, self.control_char, encode_control_response(op, status)))


class AnyEcgWearable(Wearable):
    name = "anyecg"
    profile = AnyEcgProfile
    advertised_name = "AnyECG-1"
    peripheral = AnyEcgPeripheral

    def samples_per_frame(self, fmt: int) -> int:
        return max_samples(SIM_ATT_MTU, fmt)

    def sample_bits(self, fmt: int) -> int:
        return 8 * FORMATS[fmt]

    def uv_per_code(self, nv_per_lsb: int) -> float:
        return nv_per_lsb / 1000.0

    def encode(
        self, codes: np.ndarray, *, t_first_ns: int, t_last_ns: int, seq: int, fmt: int, flags: int
    ) -> bytes:
        return encode_frame(
            codes, seq=seq, t_us=T_BASE_US + t_first_ns // 1000, fmt=fmt, flags=flags
        )


WEARABLE = AnyEcgWearable()
