"""The Bluetooth SIG Heart Rate service (0x180D) and Battery service (0x180F): what a
wearable offers beside its ECG stream where it has them (the Polar H10 does).

Heart Rate Measurement (0x2A37, notify, ~1 Hz)::

    byte 0   flags: bit0 HR is uint16 (else uint8), bits 1-2 sensor contact (bit2:
             supported, bit1: detected), bit3 energy expended present, bit4 RR present
    1 or 2   heart rate, bpm
    [2]      energy expended, kJ (uint16, when bit3)
    [2 x n]  RR intervals, uint16 in 1/1024 s (when bit4)

Battery Level (0x2A19, read): one byte, percent.

The central side (``read_battery``, ``subscribe``) works on any bleak-like client and
does nothing when the device does not offer the service; the peripheral side
(`HeartRateServer`) imports bumble lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyecg_edge.firmware_bridge.frames import FrameError

__all__ = [
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "HR_MEASUREMENT_UUID",
    "HR_SERVICE_UUID",
    "HeartRateMeasurement",
    "HeartRateServer",
    "decode_measurement",
    "encode_measurement",
    "read_battery",
    "subscribe",
]

log = logging.getLogger(__name__)

HR_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HR_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

_HR_U16, _CONTACT_DETECTED, _CONTACT_SUPPORTED, _ENERGY, _RR = 0x01, 0x02, 0x04, 0x08, 0x10
RR_UNITS_PER_S = 1024
# The H10 notifies heart rate once a second (device time).
HR_PERIOD_S = 1.0


@dataclass(frozen=True)
class HeartRateMeasurement:
    """One 0x2A37 notification: ``contact`` is None when the sensor does not report it."""

    hr_bpm: int
    rr_ms: tuple[float, ...] = ()
    contact: bool | None = None
    energy_kj: int | None = None

    def to_event(self) -> dict[str, Any]:
        """The JSONL record of a stream: ``{"event": "heart_rate", ...}``."""
        out: dict[str, Any] = {
            "event": "heart_rate",
            "hr_bpm": self.hr_bpm,
            "rr_ms": list(self.rr_ms),
        }
        if self.contact is not None:
            out["contact"] = self.contact
        if self.energy_kj is not None:
            out["energy_kj"] = self.energy_kj
        return out


def encode_measurement(
    hr_bpm: int, rr_1024: list[int] | tuple[int, ...] = (), *, contact: bool | None = True
) -> bytes:
    """A 0x2A37 value: uint8 rate (uint16 above 255), RR intervals in 1/1024 s."""
    hr = int(hr_bpm)
    if not 0 <= hr <= 0xFFFF:
        raise ValueError(f"hr_bpm {hr_bpm!r} outside 0..65535")
    flags = _HR_U16 if hr > 0xFF else 0
    if contact is not None:
        flags |= _CONTACT_SUPPORTED | (_CONTACT_DETECTED if contact else 0)
    if len(rr_1024):
        flags |= _RR
    out = bytes([flags]) + hr.to_bytes(2 if flags & _HR_U16 else 1, "little")
    return out + b"".join(int(rr).to_bytes(2, "little") for rr in rr_1024)


def decode_measurement(data: bytes) -> HeartRateMeasurement:
    """Decode one 0x2A37 value; FrameError (reason 'heart_rate') if malformed."""
    data = bytes(data)
    if len(data) < 2:
        raise FrameError(
            f"heart rate measurement of {len(data)} bytes; expected >= 2", "heart_rate"
        )
    flags = data[0]
    i = 3 if flags & _HR_U16 else 2
    if len(data) < i:
        raise FrameError(f"heart rate measurement {data.hex(' ')!r} truncated", "heart_rate")
    hr = int.from_bytes(data[1:i], "little")
    energy = None
    if flags & _ENERGY:
        if len(data) < i + 2:
            raise FrameError(f"heart rate measurement {data.hex(' ')!r} truncated", "heart_rate")
        energy = int.from_bytes(data[i : i + 2], "little")
        i += 2
    rr: tuple[float, ...] = ()
    if flags & _RR:
        body = data[i:]
        if len(body) % 2:
            raise FrameError(
                f"heart rate measurement {data.hex(' ')!r}: odd RR bytes", "heart_rate"
            )
        rr = tuple(
            round(int.from_bytes(body[k : k + 2], "little") * 1000.0 / RR_UNITS_PER_S, 1)
            for k in range(0, len(body), 2)
        )
    contact = bool(flags & _CONTACT_DETECTED) if flags & _CONTACT_SUPPORTED else None
    return HeartRateMeasurement(hr, rr, contact, energy)


def _offers(client: Any, uuid: str) -> bool:
    services = getattr(client, "services", None)
    try:
        return services is not None and services.get_characteristic(uuid) is not None
    except Exception:  # services not discovered (bleak raises)
        return False


async def read_battery(client: Any) -> int | None:
    """The battery level in percent when the device offers 0x2A19, else None (never raises:
    a side channel must not fail the ECG start)."""
    if not _offers(client, BATTERY_LEVEL_UUID):
        return None
    try:
        value = await client.read_gatt_char(BATTERY_LEVEL_UUID)
    except Exception as exc:
        log.debug("battery level read failed: %s", exc)
        return None
    return int(value[0]) if len(value) >= 1 else None


async def subscribe(client: Any, on_measurement: Callable[[HeartRateMeasurement], None]) -> bool:
    """Subscribe to 0x2A37 when offered; each valid notification goes to ``on_measurement``
    (malformed ones are logged and dropped). Returns whether it subscribed."""
    if not _offers(client, HR_MEASUREMENT_UUID):
        return False

    def on_note(_sender: Any, data: bytearray) -> None:
        try:
            m = decode_measurement(bytes(data))
        except FrameError as exc:
            log.debug("%s", exc)
            return
        on_measurement(m)

    try:
        await client.start_notify(HR_MEASUREMENT_UUID, on_note)
    except Exception as exc:
        log.debug("heart rate subscription failed: %s", exc)
        return False
    return True


class HeartRateServer:
    """The simulated wearable's Heart Rate and Battery services: once a second of device
    time it notifies the rate and the RR intervals of the beats it sampled in that second
    (R peaks of its own signal, so they agree with the ECG), like the H10."""

    def __init__(self, wearable: Any, battery_pct: int = 80) -> None:
        self.wearable = wearable
        self.battery_pct = int(battery_pct)
        self.hr_char: Any = None
        self._beats: np.ndarray | None = None  # R-peak sample indices in one pass of the record
        self._next_s = HR_PERIOD_S
        self._done_index = 0  # samples up to here have had their beats reported
        self._last_beat: int | None = None
        self._hr = 0

    def services(self) -> list[Any]:
        from bumble.gatt import Characteristic, CharacteristicValue, Service

        P = Characteristic.Properties
        self.hr_char = Characteristic(HR_MEASUREMENT_UUID, P.NOTIFY, Characteristic.READABLE, b"")
        battery = Characteristic(
            BATTERY_LEVEL_UUID,
            P.READ,
            Characteristic.READABLE,
            CharacteristicValue(read=lambda _c: bytes([self.battery_pct])),
        )
        return [
            Service(HR_SERVICE_UUID, [self.hr_char]),
            Service(BATTERY_SERVICE_UUID, [battery]),
        ]

    def beats(self) -> np.ndarray:
        if self._beats is None:
            from anyecg_edge.signal import SignalError
            from anyecg_edge.signal.quality import detect_r_peaks

            w = self.wearable
            try:
                x_mv = w.codes.astype(np.float64) * (w.uv_per_code * 1e-3)
                self._beats = np.asarray(detect_r_peaks(x_mv, w.fs_true), dtype=np.int64)
            except (SignalError, ValueError) as exc:  # too short / flat: no beats to report
                log.debug("no beats in the simulated signal: %s", exc)
                self._beats = np.empty(0, dtype=np.int64)
        return self._beats

    def measure(self, upto_index: int) -> tuple[int, list[int], bool]:
        """(bpm, RR intervals in 1/1024 s, contact) for the samples since the last call,
        up to ``upto_index`` (the recording loops: beats repeat every pass)."""
        beats, size = self.beats(), self.wearable.codes.size
        lo, hi = self._done_index, max(self._done_index, upto_index)
        self._done_index = hi
        found: list[int] = []
        for k in range(lo // size, (hi - 1) // size + 1) if hi > lo else ():
            base = k * size
            found.extend((beats[(beats >= lo - base) & (beats < hi - base)] + base).tolist())
        rr: list[int] = []
        for beat in found:
            if self._last_beat is not None:
                rr.append(round((beat - self._last_beat) * RR_UNITS_PER_S / self.wearable.fs_true))
            self._last_beat = beat
        rr = [r for r in rr if 0 < r <= 0xFFFF]
        if rr:
            self._hr = min(255, round(60.0 * RR_UNITS_PER_S / (sum(rr) / len(rr))))
        return self._hr, rr, bool(beats.size)

    async def tick(self, conn: Any, t_dev_s: float) -> None:
        if t_dev_s < self._next_s or self.hr_char is None:
            return
        self._next_s = (int(t_dev_s / HR_PERIOD_S) + 1) * HR_PERIOD_S
        # Measured whether or not anyone listens: beats while unlinked are lost with their
        # notifications, as on the device, never sent in a burst after a reconnect.
        hr, rr_1024, contact = self.measure(int(t_dev_s * self.wearable.fs_true))
        if conn is None:
            return
        await self.wearable.notify(
            conn, self.hr_char, encode_measurement(hr, rr_1024, contact=contact)
        )
