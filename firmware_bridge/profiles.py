"""Device profiles: one interface (codec + control sequence) per wearable family.

A profile turns notifications into `Frame`s (``decode``) and knows the GATT control
sequence that starts and stops the ECG stream on a connected client (``start`` /
``stop``). The client is anything with bleak's `BleakClient` API (``start_notify``,
``write_gatt_char``, ``read_gatt_char``, ``mtu_size``): the real bleak backends on
hardware, or our bumble backend against the simulated wearable -- the same code path.

Profiles are cheap, stateful per connection (the AnyECG config is read at start), and
import no BLE library.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from anyecg_edge.firmware_bridge import anyecg, movesense, polar
from anyecg_edge.firmware_bridge.frames import DecodeStats, DeviceError, Frame, FrameError

__all__ = [
    "PROFILES",
    "RELEARN_FRAMES",
    "AnyEcgProfile",
    "FrameDecoder",
    "FrameLength",
    "MovesenseProfile",
    "PolarH10Profile",
    "Profile",
    "get_profile",
    "profile_for_advertisement",
]

# How long a control-point reply may take before the start sequence fails.
CONTROL_TIMEOUT_S = 5.0

DataCallback = Callable[[bytes, int], None]

# Frames in a row, all of one length other than the stream's, that make it the stream's.
RELEARN_FRAMES = 3


class Profile(ABC):
    """A wearable family: GATT layout, frame codec, control sequence."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    service_uuid: ClassVar[str]
    data_uuid: ClassVar[str]
    # Advertised local names that identify the family (prefix match).
    name_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, fs_hz: float, lead: str) -> None:
        self.nominal_fs = float(fs_hz)
        self.lead = lead
        self._control: asyncio.Queue[bytes] | None = None

    @abstractmethod
    def decode(self, data: bytes) -> Frame:
        """One notification of the data characteristic -> Frame (FrameError if malformed)."""

    @abstractmethod
    async def start(self, client: Any, on_data: DataCallback) -> None:
        """Subscribe and start the ECG stream; on_data(bytes, arrival_ns) gets each frame."""

    @abstractmethod
    async def stop(self, client: Any) -> None:
        """Stop the ECG stream (best effort; the link may already be gone)."""

    def describe(self) -> dict[str, Any]:
        return {"profile": self.name, "fs_hz": self.nominal_fs, "lead": self.lead}

    # --- helpers for control points answered by indications/notifications ---------
    def _on_control(self, _sender: Any, data: bytearray) -> None:
        if self._control is not None:
            self._control.put_nowait(bytes(data))

    async def _reply(self, what: str) -> bytes:
        assert self._control is not None
        try:
            return await asyncio.wait_for(self._control.get(), CONTROL_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise DeviceError(
                f"{self.display_name}: no control-point reply to {what} within "
                f"{CONTROL_TIMEOUT_S:g} s"
            ) from None


def _data_forwarder(on_data: DataCallback) -> Callable[[Any, bytearray], None]:
    def forward(_sender: Any, data: bytearray) -> None:
        on_data(bytes(data), time.perf_counter_ns())

    return forward


class FrameLength:
    """Frames of this stream have one length: the rule for profiles whose frames carry
    neither sequence numbers nor a CRC (Polar, Movesense).

    A notification cut in transit on a sample boundary still decodes. Accepting it would
    lose its missing samples silently: the sequencer places a frame by its timestamp,
    and a frame short by up to a quarter frame fits its tolerance and is stitched on
    (Polar's timestamp, of the last sample of the full frame, even misplaces the kept
    samples). So a frame whose length differs from the stream's is rejected (FrameError:
    'truncated' when shorter, 'frame_length' when longer), which counts it as malformed
    and leaves a hole the sequencer reports as a gap -- from the very first frame, since
    the stream's length starts as the protocol's (``SAMPLES_PER_FRAME``), never unknown.

    A device that sends another frame size (other firmware, another rate or MTU) has its
    first frames rejected, each counted, until ``relearn`` frames in a row agree on one
    other length: that one is accepted and the length becomes the stream's. Random cuts
    practically never agree that many times in a row. The learned length is kept across
    reconnects (the same device; a changed size is learned again the same way).
    """

    def __init__(self, samples: int, what: str, relearn: int = RELEARN_FRAMES) -> None:
        if samples < 1 or relearn < 1:
            raise ValueError(f"FrameLength({samples}, relearn={relearn}): both must be >= 1")
        self.samples = int(samples)
        self.what = what
        self.relearn = int(relearn)
        self._other = 0  # the other length seen in a row, and how many times
        self._run = 0

    def check(self, n: int) -> None:
        """Accept a frame of ``n`` samples, or raise FrameError."""
        if n == self.samples:
            self._run = 0
            return
        self._run = self._run + 1 if n == self._other else 1
        self._other = n
        if self._run >= self.relearn:
            self.samples, self._run = n, 0
            return
        shorter = n < self.samples
        raise FrameError(
            f"{self.what} frame of {n} samples; this stream's frames have {self.samples}"
            + (" (cut in transit)" if shorter else ""),
            "truncated" if shorter else "frame_length",
        )


class PolarH10Profile(Profile):
    """Polar H10 PMD ECG: 130 Hz nominal (real 128-131 Hz), uV samples, ns timestamps.

    MTU: the OS stack negotiates it (our bumble backend asks for 247); 73-sample frames
    need >= 232. Below that the H10 answers error 10 and the start fails with that
    message instead of streaming cut frames.
    """

    name = "polar"
    display_name = "Polar H10"
    service_uuid = polar.SERVICE_UUID
    data_uuid = polar.DATA_UUID
    name_prefixes = ("Polar H10",)

    def __init__(self, fs_hz: float = polar.ECG_FS_HZ, lead: str = "chest") -> None:
        super().__init__(fs_hz, lead)
        # A shorter frame was cut in transit (see FrameLength).
        self.frame_length = FrameLength(polar.SAMPLES_PER_FRAME, "Polar PMD ECG")

    def decode(self, data: bytes) -> Frame:
        frame = polar.decode_ecg_frame(data)
        self.frame_length.check(frame.n)
        return frame

    async def _command(self, client: Any, cmd: bytes, what: str) -> polar.ControlResponse:
        await client.write_gatt_char(polar.CONTROL_UUID, cmd, response=True)
        resp = polar.decode_control_response(await self._reply(what))
        if resp.op != cmd[0]:
            raise DeviceError(
                f"Polar H10: control-point reply for op {resp.op:#04x} to {what} (op {cmd[0]:#04x})"
            )
        return resp

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()
        # Replies to control-point writes arrive as indications (reading the
        # characteristic returns a stale '0f 05 00...').
        await client.start_notify(polar.CONTROL_UUID, self._on_control)
        await client.start_notify(polar.DATA_UUID, _data_forwarder(on_data))
        settings = await self._command(client, polar.GET_ECG_SETTINGS, "get ECG settings")
        if settings.ok:
            rates = polar.parse_settings(settings.params).get(0, [])
            if rates and round(self.nominal_fs) not in rates:
                raise DeviceError(
                    f"Polar H10: ECG rate {self.nominal_fs:g} Hz not offered (offers {rates})"
                )
        resp = await self._command(client, polar.START_ECG, "start ECG")
        if resp.error == 6:
            # Already streaming (e.g. state kept across a reconnect): restart cleanly.
            await self._command(client, polar.STOP_ECG, "stop ECG")
            resp = await self._command(client, polar.START_ECG, "start ECG")
        if not resp.ok:
            raise DeviceError(f"Polar H10 refused to start ECG: {resp.message}")

    async def stop(self, client: Any) -> None:
        resp = await self._command(client, polar.STOP_ECG, "stop ECG")
        if not resp.ok and resp.error != 6:
            raise DeviceError(f"Polar H10 refused to stop ECG: {resp.message}")


class MovesenseProfile(Profile):
    """Movesense ECG over GSP: subscribe to Meas/ECG/<rate>, int32 samples, ms timestamps."""

    name = "movesense"
    display_name = "Movesense"
    service_uuid = movesense.SERVICE_UUID
    data_uuid = movesense.NOTIFY_UUID
    name_prefixes = ("Movesense",)

    def __init__(self, fs_hz: float = 128.0, lead: str = "chest") -> None:
        if int(fs_hz) not in movesense.ECG_RATES_HZ or fs_hz != int(fs_hz):
            raise ValueError(
                f"Movesense ECG rate {fs_hz:g} Hz; expected one of {movesense.ECG_RATES_HZ}"
            )
        super().__init__(fs_hz, lead)
        self.frame_length = FrameLength(movesense.SAMPLES_PER_FRAME, "Movesense ECG")

    def decode(self, data: bytes) -> Frame:
        frame = movesense.decode_ecg_frame(data)
        self.frame_length.check(frame.n)
        return frame

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()

        # One characteristic carries both command results and data.
        def route(_sender: Any, data: bytearray) -> None:
            if data and data[0] == movesense.RESP_COMMAND_RESULT:
                self._control.put_nowait(bytes(data))
            else:
                on_data(bytes(data), time.perf_counter_ns())

        await client.start_notify(movesense.NOTIFY_UUID, route)
        await client.write_gatt_char(
            movesense.WRITE_UUID, movesense.subscribe_command(int(self.nominal_fs)), response=True
        )
        ref, status = movesense.decode_command_result(await self._reply("subscribe Meas/ECG"))
        if status != 200:
            raise DeviceError(f"Movesense refused Meas/ECG/{int(self.nominal_fs)}: status {status}")
        del ref

    async def stop(self, client: Any) -> None:
        await client.write_gatt_char(
            movesense.WRITE_UUID, movesense.unsubscribe_command(), response=True
        )


class AnyEcgProfile(Profile):
    """AnyECG open profile v1 (firmware_bridge/PROFILE.md): config record + seq-numbered frames."""

    name = "anyecg"
    display_name = "AnyECG"
    service_uuid = anyecg.SERVICE_UUID
    data_uuid = anyecg.DATA_UUID
    name_prefixes = ("AnyECG",)

    def __init__(self, fs_hz: float = 250.0, lead: str = "I", config=None) -> None:
        super().__init__(fs_hz, lead)
        self.config: anyecg.AnyEcgConfig | None = config
        if config is not None:
            self.nominal_fs, self.lead = config.fs_hz, config.lead

    def decode(self, data: bytes) -> Frame:
        if self.config is None:
            raise FrameError("AnyECG frame before the config record was read", "config")
        return anyecg.decode_frame(data, self.config.uv_per_code)

    async def start(self, client: Any, on_data: DataCallback) -> None:
        self._control = asyncio.Queue()
        self.config = anyecg.AnyEcgConfig.decode(await client.read_gatt_char(anyecg.CONFIG_UUID))
        self.nominal_fs, self.lead = self.config.fs_hz, self.config.lead
        await client.start_notify(anyecg.CONTROL_UUID, self._on_control)
        await client.start_notify(anyecg.DATA_UUID, _data_forwarder(on_data))
        await client.write_gatt_char(anyecg.CONTROL_UUID, bytes([anyecg.OP_START]), response=True)
        op, status = anyecg.decode_control_response(await self._reply("start"))
        if op != anyecg.OP_START or status != 0:
            raise DeviceError(
                f"AnyECG device refused start: {anyecg.STATUS.get(status, status)} (op {op})"
            )

    async def stop(self, client: Any) -> None:
        await client.write_gatt_char(anyecg.CONTROL_UUID, bytes([anyecg.OP_STOP]), response=True)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.config is not None:
            out.update(
                format=anyecg.FORMAT_NAMES[self.config.fmt],
                nv_per_lsb=self.config.nv_per_lsb,
                battery_pct=self.config.battery_pct,
            )
        return out


PROFILES: dict[str, type[Profile]] = {
    p.name: p for p in (PolarH10Profile, MovesenseProfile, AnyEcgProfile)
}


def get_profile(name: str, **kwargs: Any) -> Profile:
    try:
        cls = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None
    return cls(**kwargs)


def profile_for_advertisement(name: str | None, service_uuids: list[str]) -> str | None:
    """Which profile an advertisement belongs to (by service UUID, then name), or None."""
    uuids = {u.lower() for u in service_uuids}
    for cls in PROFILES.values():
        if cls.service_uuid in uuids:
            return cls.name
    for cls in PROFILES.values():
        if name and name.startswith(cls.name_prefixes):
            return cls.name
    return None


class FrameDecoder:
    """Decode notifications with a profile, counting malformed ones; never raises."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.stats = DecodeStats()
        self.last_reason: str | None = None

    def feed(self, data: bytes) -> Frame | None:
        self.stats.bytes += len(data)
        try:
            frame = self.profile.decode(data)
        except FrameError as exc:
            self.stats.malformed[exc.reason] += 1
            self.last_reason = exc.reason
            return None
        self.stats.frames += 1
        self.stats.samples += frame.n
        return frame
