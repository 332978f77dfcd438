"""The simulated wearable: a real GATT peripheral on bumble, replaying a recording with
the exact byte format of a profile (Polar H10 PMD, Movesense GSP, AnyECG v1), with fault
injection (see `anyecg_edge.firmware_bridge.faults`).

Device model: the wearable samples continuously on its own clock (``fs_true``: nominal
rate times the drift), whether or not anyone listens; while connected and started it
notifies frame after frame; the link may drop (``disconnect``), the device may stall
silently (``stall``), its clock may jump (``jump``). ``speed`` runs the device clock
faster than real time (speed 10: 10 s of signal per wall second) so a 120 s fault
scenario takes seconds.

`SimLink` builds the in-process setup used by ``stream --source sim-...`` and the
tests: a `bumble.link.LocalLink` with two virtual controllers, the wearable on one and
a central (for `BumbleClientBackend`) on the other. A link loss is simulated the way a
radio drop looks to both hosts: each controller reports the connection gone with HCI
reason 0x08 (connection timeout).

Needs the ``ble`` extra (bumble).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from anyecg_edge.firmware_bridge.devices import get_wearable
from anyecg_edge.firmware_bridge.encoders import FrameEncoder, mv_to_codes
from anyecg_edge.firmware_bridge.faults import FaultInjector, FaultSpec
from bumble import hci
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

if TYPE_CHECKING:
    from anyecg_edge.io import Record

__all__ = ["SimLink", "SimulatedWearable", "device_signal"]

log = logging.getLogger(__name__)


class _LateAclFilter(logging.Filter):
    """bumble's virtual controller warns "!!! no connection for handle" for an ACL packet
    that was still in flight on the LocalLink when a simulated link loss tore the
    connection down. On a radio such a packet is simply lost, and the stream reports the
    loss itself (disconnect and gap events), so the warning is noise on the user's
    terminal: shown only when bumble's debug logging is on (-vv)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("!!! no connection for handle"):
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# Only the simulator runs bumble's virtual Controller, so the filter lives with it.
_bumble_controller_log = logging.getLogger("bumble.controller")
if not any(isinstance(f, _LateAclFilter) for f in _bumble_controller_log.filters):
    _bumble_controller_log.addFilter(_LateAclFilter())

PERIPHERAL_ADDRESS = "F0:F0:F0:F0:F0:F0"
CENTRAL_ADDRESS = "F1:F1:F1:F1:F1:F1"


def device_signal(
    signal_mv: np.ndarray,
    fs: float,
    profile: str,
    *,
    fs_nominal: float | None = None,
    drift_ppm: float = 0.0,
    anyecg_format: int = 1,
    nv_per_lsb: int = 1000,
) -> tuple[np.ndarray, float, float, float]:
    """What the device samples: (codes, fs_nominal, fs_true, uv_per_code).

    The recording is resampled to the device's true rate (nominal * (1 + drift)) and
    quantized to its sample codes (Polar/Movesense: 1 uV; AnyECG: ``nv_per_lsb``).
    """
    from anyecg_edge.signal import resample

    family = get_wearable(profile)
    if fs_nominal is None:
        fs_nominal = family.nominal_fs_hz or fs
    fs_true = fs_nominal * (1.0 + drift_ppm * 1e-6)
    x = np.asarray(signal_mv, dtype=np.float64)
    # Below 0.1 % the content barely changes; the true rate shows in the timestamps.
    if abs(fs_true / fs - 1.0) > 1e-3:
        x = resample(np.nan_to_num(x), fs, fs_true).astype(np.float64)
    uv = family.uv_per_code(nv_per_lsb)
    bits = family.sample_bits(anyecg_format)
    return mv_to_codes(x, uv, bits), float(fs_nominal), float(fs_true), uv


@dataclass
class SimStats:
    frames_encoded: int = 0
    notifications: int = 0
    samples_sent: int = 0
    connections: int = 0
    link_losses: int = 0
    vanished: int = 0
    stalls: int = 0
    clock_jumps: int = 0
    starts: int = 0


class SimulatedWearable:
    """One wearable. ``attach`` it to a bumble Device, then ``await run(stop)``."""

    def __init__(
        self,
        profile: str,
        codes: np.ndarray,
        *,
        fs_nominal: float,
        fs_true: float,
        lead: str = "I",
        faults: FaultSpec | None = None,
        speed: float = 1.0,
        name: str | None = None,
        anyecg_format: int = 1,
        nv_per_lsb: int = 1000,
        battery_pct: int = 80,
        keep_log: bool = False,
    ) -> None:
        family = get_wearable(profile)  # ValueError naming the known ones
        if not speed > 0:
            raise ValueError(f"a simulated wearable needs speed > 0, got {speed!r}")
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 1 or codes.size == 0:
            raise ValueError("the simulated wearable needs a non-empty 1-D signal")
        self.profile = profile
        self.codes = codes
        self.fs_nominal = float(fs_nominal)
        self.fs_true = float(fs_true)
        self.lead = lead
        self.faults = faults or FaultSpec()
        self.speed = float(speed)
        self.name = name or family.advertised_name
        self.anyecg_format = anyecg_format
        self.nv_per_lsb = nv_per_lsb
        self.uv_per_code = family.uv_per_code(nv_per_lsb)
        self.battery_pct = battery_pct
        self.encoder = FrameEncoder(profile, fs_true, anyecg_format=anyecg_format, seq_start=1000)
        # The family's GATT server side (control points, side channels).
        self.peripheral = family.peripheral(self)
        self.config = getattr(self.peripheral, "config", None)  # AnyECG's config record
        self.injector = FaultInjector(self.faults)
        self.stats = SimStats()
        self.keep_log = keep_log
        # (first_index, n) of every frame put on air intact, in air order (tests only)
        self.sent_log: list[tuple[int, int]] = []
        self.device: Device | None = None
        self.link_loss: Callable[[Connection], None] | None = None
        self.conn: Connection | None = None
        self.streaming = False
        self.stalled = False
        self._t_offset_ns = 0
        self._t0: float | None = None
        self._next_index = 0
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def from_record(
        cls, profile: str, record: Record, *, faults: FaultSpec | None = None, **kwargs: Any
    ) -> SimulatedWearable:
        """The wearable of ``profile`` replaying ``record`` (its lead): the signal as the
        device samples it (`device_signal`: its nominal rate, off by the faults' drift,
        quantized to its codes). ``kwargs`` go to the constructor (speed, name, ...)."""
        faults = faults or FaultSpec()
        codes, fs_nominal, fs_true, _ = device_signal(
            record.signal_mv, record.fs, profile, drift_ppm=faults.drift
        )
        return cls(
            profile, codes, fs_nominal=fs_nominal, fs_true=fs_true, lead=record.lead,
            faults=faults, **kwargs,
        )  # fmt: skip

    # --- device clock -----------------------------------------------------------------------
    def device_time_s(self) -> float:
        if self._t0 is None:
            return 0.0
        return (time.perf_counter() - self._t0) * self.speed

    def record_codes(self, first: int, n: int) -> np.ndarray:
        """Codes of samples [first, first + n) of the device (the recording loops)."""
        idx = (np.arange(first, first + n)) % self.codes.size
        return self.codes[idx]

    # --- GATT ---------------------------------------------------------------------------------
    def attach(self, device: Device, link_loss: Callable[[Connection], None] | None = None) -> None:
        self.device = device
        self.link_loss = link_loss
        device.name = self.name
        services, adv_uuids = self.peripheral.services()
        for service in services:
            device.add_service(service)
        flags = [(AdvertisingData.FLAGS, bytes([0x06]))]
        # The name goes into the advertisement itself when it fits in 31 bytes (else a
        # shortened one), and in full into the scan response.
        used = len(bytes(AdvertisingData(flags + adv_uuids)))
        room = 31 - used - 2
        name = self.name.encode()
        if room > 0:
            kind = (
                AdvertisingData.COMPLETE_LOCAL_NAME
                if len(name) <= room
                else AdvertisingData.SHORTENED_LOCAL_NAME
            )
            adv_uuids = adv_uuids + [(kind, name[:room])]
        device.advertising_data = bytes(AdvertisingData(flags + adv_uuids))
        device.scan_response_data = bytes(
            AdvertisingData([(AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode())])
        )
        device.on(device.EVENT_CONNECTION, self._on_connection)

    def _on_connection(self, conn: Connection) -> None:
        self.conn = conn
        self.streaming = False
        self.stalled = False
        self.stats.connections += 1
        conn.on(conn.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(conn, reason))

    def _on_disconnection(self, conn: Connection, reason: int) -> None:
        if self.conn is conn:
            self.conn = None
        # Like the H10: the measurement stops with the link; a new start is needed.
        self.streaming = False
        self.stalled = False
        self.injector.flush()

    # --- what a family's peripheral calls ------------------------------------------------
    def spawn(self, coro: Any) -> None:
        """Run ``coro`` on the loop (a GATT write callback cannot await)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_streaming(self) -> None:
        self.streaming = True
        self.stats.starts += 1

    def stop_streaming(self) -> None:
        self.streaming = False

    async def indicate(self, conn: Connection, char: Characteristic, value: bytes) -> None:
        assert self.device is not None
        try:
            await self.device.indicate_subscriber(conn, char, value)
        except Exception as exc:  # link gone mid-indication
            log.debug("indication failed: %s", exc)

    async def notify(self, conn: Connection, char: Characteristic, value: bytes) -> bool:
        assert self.device is not None
        try:
            await self.device.notify_subscriber(conn, char, value)
            return True
        except Exception as exc:
            log.debug("notification failed: %s", exc)
            return False

    # --- the device's life ---------------------------------------------------------------------
    async def advertise(self) -> None:
        assert self.device is not None
        # 20 ms advertising: a reconnect takes ~20 ms instead of ~1 s at the default.
        await self.device.start_advertising(
            auto_restart=True, advertising_interval_min=20, advertising_interval_max=20
        )

    async def run(self, stop: asyncio.Event, duration_s: float | None = None) -> None:
        """Sample and send until ``stop`` is set (or ``duration_s`` of device time)."""
        spf = self.encoder.samples_per_frame
        f = self.faults
        next_disc = f.disconnect or math.inf
        next_stall = f.stall or math.inf
        next_jump = f.jump or math.inf
        vanish_at = f.vanish or math.inf
        self._t0 = time.perf_counter()
        recent: deque[tuple[bytes, int]] = deque(maxlen=4)
        while not stop.is_set():
            first = self._next_index
            # Wall time at which the device has taken this frame's last sample.
            due = self._t0 + (first + spf) / self.fs_true / self.speed
            delay = due - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except asyncio.TimeoutError:
                    pass
            t_dev = (first + spf) / self.fs_true
            if duration_s is not None and t_dev > duration_s:
                break
            self._next_index = first + spf
            if t_dev >= next_jump:
                next_jump += f.jump
                self._t_offset_ns += round(f.jump_s * 1e9)
                self.stats.clock_jumps += 1
            if t_dev >= next_disc:
                next_disc += f.disconnect
                if self.conn is not None:
                    await self._lose_link(self.conn)
            if t_dev >= vanish_at and not self.stats.vanished:
                self.stats.vanished = 1
                await self._vanish()
            if t_dev >= next_stall:
                next_stall += f.stall
                if self.streaming and not self.stalled:
                    self.stalled = True
                    self.stats.stalls += 1
            conn = self.conn
            # Side channels run on the device's clock, linked or not (None: nothing to send on).
            await self.peripheral.tick(None if self.stalled else conn, t_dev)
            if conn is None or not self.streaming or self.stalled:
                continue  # sampled, not sent: lost
            raw = self.encoder.encode(
                self.record_codes(first, spf), first, t_offset_ns=self._t_offset_ns
            )
            self.stats.frames_encoded += 1
            recent.append((raw, first))
            for note in self.injector.process(raw):
                if await self.notify(conn, self.peripheral.data_char, note):
                    self.stats.notifications += 1
                    # intact frames (this one, or one held back for reordering)
                    for frame, index in recent:
                        if note is frame:
                            self.stats.samples_sent += spf
                            if self.keep_log:
                                self.sent_log.append((index, spf))

    async def _vanish(self) -> None:
        """Gone for good: no more advertising (so no reconnect), then the link drops."""
        assert self.device is not None
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        if self.conn is not None:
            await self._lose_link(self.conn)

    async def _lose_link(self, conn: Connection) -> None:
        self.stats.link_losses += 1
        if self.link_loss is not None:
            self.link_loss(conn)
        else:
            try:
                await conn.disconnect()
            except Exception as exc:
                log.debug("disconnect failed: %s", exc)


class _CentralController(Controller):
    """bumble's virtual controller with LE Create Connection Cancel as the Core spec has it
    (Vol 4, Part E, 7.8.13): the pending connection ends with an LE Connection Complete
    event, status Unknown Connection Identifier. bumble's own returns success but keeps
    the request pending, so after one connect to an absent address timed out every later
    connect was refused (Command Disallowed) for the simulator's lifetime."""

    def on_hci_le_create_connection_cancel_command(self, _command: Any) -> Any:
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        event = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
            connection_handle=0,
            role=hci.Role.CENTRAL,
            peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address,
            connection_interval=0,
            peripheral_latency=0,
            supervision_timeout=0,
            central_clock_accuracy=0,
        )
        # The event follows the command's Command Complete, which the caller sends next.
        asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class SimLink:
    """Virtual radio: the wearable and a central's controller on one bumble LocalLink.

    ``async with SimLink(wearable) as link:`` -> ``link.central`` (a powered-on bumble
    Device for `BumbleClientBackend`) and ``link.address`` (the wearable's address).

    With ``serve="tcp-server:_:9001"`` (any bumble transport spec) the central's side is
    not a Device in this process but a virtual controller exposed over that transport:
    another process (``stream --hci tcp-client:127.0.0.1:9001``, ``ble scan --hci ...``)
    runs its host on it, so the simulated wearable is reachable like a real one.
    """

    def __init__(self, wearable: SimulatedWearable, *, serve: str | None = None) -> None:
        self.wearable = wearable
        self.serve = serve
        self.address = PERIPHERAL_ADDRESS
        self.link: LocalLink | None = None
        self.central: Device | None = None
        self.peripheral: Device | None = None
        self._ctrl: dict[str, Controller] = {}
        self._transport: Any = None

    async def __aenter__(self) -> SimLink:
        link = LocalLink()
        self.link = link
        ctrl = Controller("wearable", link=link, public_address=PERIPHERAL_ADDRESS)
        # LE Data Packet Length Extension: 251-byte ACL packets (~4x the throughput).
        ctrl.le_acl_data_packet_length = 251
        self._ctrl["peripheral"] = ctrl
        self.peripheral = Device(
            name="wearable",
            address=hci.Address(PERIPHERAL_ADDRESS),
            host=Host(ctrl, AsyncPipeSink(ctrl)),
        )
        if self.serve is None:
            cctrl = _CentralController("central", link=link, public_address=CENTRAL_ADDRESS)
            cctrl.le_acl_data_packet_length = 251
            self._ctrl["central"] = cctrl
            self.central = Device(
                name="central",
                address=hci.Address(CENTRAL_ADDRESS),
                host=Host(cctrl, AsyncPipeSink(cctrl)),
            )
        else:
            from bumble.transport import open_transport

            self._transport = await open_transport(self.serve)
            cctrl = _CentralController(
                "central",
                host_source=self._transport.source,
                host_sink=self._transport.sink,
                link=link,
                public_address=CENTRAL_ADDRESS,
            )
            cctrl.le_acl_data_packet_length = 251
            self._ctrl["central"] = cctrl
        self.wearable.attach(self.peripheral, link_loss=self.lose_link)
        await self.peripheral.power_on()
        if self.central is not None:
            await self.central.power_on()
        await self.wearable.advertise()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self._transport.close()
        for dev in (self.central, self.peripheral):
            if dev is None:
                continue
            for conn in list(dev.connections.values()):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.disconnect(), 1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.peripheral.stop_advertising(), 1.0)  # type: ignore[union-attr]

    def lose_link(self, _conn: Connection) -> None:
        """Radio link lost: both controllers report a connection timeout (HCI 0x08)."""
        for ctrl in self._ctrl.values():
            for conn in list(ctrl.le_connections.values()):
                ctrl.on_le_disconnected(conn, hci.HCI_CONNECTION_TIMEOUT_ERROR)
