"""A bleak backend over bumble: `BleakClient(addr, backend=BumbleClientBackend,
bumble_device=dev)` and `BleakScanner(backend=BumbleScannerBackend, bumble_device=dev)`.

bleak >= 1.x accepts a custom backend class; bumble is a full BLE host in Python that
runs on a virtual link (``bumble.link.LocalLink``), a USB dongle (``usb:0``), an HCI
socket or a TCP HCI bridge. With this backend the very code that streams from a real
Polar H10 through BlueZ/CoreBluetooth/WinRT (``BleakClient``) runs against the simulated
wearable in tests -- a real GATT/ATT exchange, no radio, no BlueZ.

What a desktop OS stack does on connect, done here too: negotiate a large ATT MTU
(bumble stays at the default 23 otherwise, which silently cuts notifications to 20
bytes) and discover all services, characteristics and descriptors.

Needs the ``ble`` extra (bleak, bumble).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable
from typing import Any

from anyecg_edge.firmware_bridge.client import BluetoothUnavailableError
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str
from bumble import hci
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer

__all__ = [
    "DEFAULT_MTU",
    "HCI_OPEN_TIMEOUT_S",
    "BumbleClientBackend",
    "BumbleScannerBackend",
    "open_central",
]

log = logging.getLogger(__name__)

# What Android/BlueZ typically end up with; a Polar H10 needs >= 232 for 73-sample frames.
DEFAULT_MTU = 247


def _address(addr: str | hci.Address) -> hci.Address:
    if isinstance(addr, hci.Address):
        return addr
    return hci.Address(addr)


def _uuid_str(uuid: Any) -> str:
    """bleak's form: lower-case 128-bit, 16/32-bit ones expanded on the SIG base."""
    return normalize_uuid_str(str(uuid.to_hex_str("-")))


def _props(properties: int) -> list[str]:
    names = [
        (0x01, "broadcast"),
        (0x02, "read"),
        (0x04, "write-without-response"),
        (0x08, "write"),
        (0x10, "notify"),
        (0x20, "indicate"),
        (0x40, "authenticated-signed-writes"),
        (0x80, "extended-properties"),
    ]
    return [name for bit, name in names if properties & bit]


class BumbleClientBackend(BaseBleakClient):
    """bleak client backend driving a bumble `Device` as the central."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        disconnected_callback: Callable[[], None] | None = None,
        timeout: float = 10.0,
        bumble_device: Device | None = None,
        mtu: int = DEFAULT_MTU,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout
        )
        if bumble_device is None:
            raise BleakError("BumbleClientBackend needs bumble_device=<a powered-on bumble Device>")
        self._device = bumble_device
        self._target = (
            address_or_ble_device.details
            if isinstance(address_or_ble_device, BLEDevice)
            and isinstance(address_or_ble_device.details, hci.Address)
            else _address(self.address)
        )
        self._mtu = mtu
        self._conn: Connection | None = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}
        self._name = str(self.address)

    @property
    def name(self) -> str:
        return self._name

    @property
    def mtu_size(self) -> int:
        return self._conn.att_mtu if self._conn is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        # Like bleak's BlueZ backend: a ``timeout`` given to connect() overrides the
        # constructor's (bleak-retry-connector passes one per attempt).
        timeout = kwargs.get("timeout", self._timeout)
        try:
            conn = await self._device.connect(self._target, timeout=timeout)
        except asyncio.CancelledError:
            # Cut short (Ctrl-C, end of --duration): cancel the controller's pending
            # connection too, or a shared controller (`ble simulate`'s served radio)
            # refuses every later connect. bumble's own cancel only runs on its timeout.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._device.send_sync_command(hci.HCI_LE_Create_Connection_Cancel_Command())
                )
            raise
        self._conn = conn
        conn.on(conn.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            peer = Peer(conn)
            self._peer = peer
            await peer.request_mtu(self._mtu)
            await peer.discover_services()
            for service in peer.services:
                await peer.discover_characteristics(service=service)
                for char in service.characteristics:
                    await peer.discover_descriptors(char)
            self.services = self._collect(peer)
        except BaseException as exc:
            if self._conn is not None:
                await self._safe_disconnect()
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and not (task and task.cancelling()):
                # Not our cancellation: the link dropped and bumble cancelled the GATT
                # request in flight. Reported as bleak's BlueZ backend reports it, so a
                # caller (bleak-retry-connector) sees the same error as on real hardware.
                raise BleakError("failed to discover services, device disconnected") from None
            raise

    def _collect(self, peer: Peer) -> BleakGATTServiceCollection:
        coll = BleakGATTServiceCollection()
        for s in peer.services:
            bservice = BleakGATTService(s, s.handle, _uuid_str(s.uuid))
            coll.add_service(bservice)
            for c in s.characteristics:
                bchar = BleakGATTCharacteristic(
                    c,
                    c.handle,
                    _uuid_str(c.uuid),
                    _props(int(c.properties)),  # type: ignore[arg-type]
                    lambda: self.mtu_size - 3,
                    bservice,
                )
                coll.add_characteristic(bchar)
                for d in c.descriptors:
                    coll.add_descriptor(BleakGATTDescriptor(d, d.handle, _uuid_str(d.type), bchar))
        return coll

    def _on_disconnection(self, reason: int) -> None:
        was = self._conn is not None
        self._conn = None
        self._peer = None
        self._subscribers.clear()
        log.debug("bumble link to %s lost (HCI reason %#04x)", self.address, reason)
        if was and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _safe_disconnect(self) -> None:
        conn = self._conn
        if conn is None:
            return
        cb, self._disconnected_callback = self._disconnected_callback, None
        try:
            await asyncio.wait_for(conn.disconnect(), 5.0)
        except Exception as exc:  # the link may already be gone
            log.debug("disconnect: %s", exc)
        finally:
            self._conn = None
            self._peer = None
            self._disconnected_callback = cb

    async def disconnect(self) -> None:
        await self._safe_disconnect()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("pairing is not used by the wearable profiles")

    async def unpair(self) -> None:
        raise NotImplementedError("pairing is not used by the wearable profiles")

    def _require_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._require_peer().read_value(characteristic.obj))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(await self._require_peer().read_value(descriptor.obj))

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        await self._require_peer().write_value(
            characteristic.obj, bytes(data), with_response=response
        )

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        await self._require_peer().write_value(descriptor.obj, bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = subscriber
        # Like the OS stacks: notifications when offered, else indications.
        await self._require_peer().subscribe(characteristic.obj, subscriber, prefer_notify=True)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._require_peer().unsubscribe(characteristic.obj, subscriber)


class BumbleScannerBackend(BaseBleakScanner):
    """bleak scanner backend: advertisements heard by a bumble `Device`."""

    def __init__(
        self,
        detection_callback: Any = None,
        service_uuids: list[str] | None = None,
        scanning_mode: str = "active",
        *,
        bumble_device: Device | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        if bumble_device is None:
            raise BleakError(
                "BumbleScannerBackend needs bumble_device=<a powered-on bumble Device>"
            )
        self._device = bumble_device
        self._active = scanning_mode != "passive"

    async def start(self) -> None:
        self.seen_devices = {}
        self._device.on(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self._device.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        self._device.remove_listener(self._device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self._device.stop_scanning()

    def _on_advertisement(self, adv: Advertisement) -> None:
        data = adv.data
        uuids: list[str] = []
        for ad_type in (
            AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
            AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
        ):
            for uuid in data.get(ad_type) or []:
                uuids.append(_uuid_str(uuid))
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(
            AdvertisingData.SHORTENED_LOCAL_NAME
        )
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        manufacturer = data.get(AdvertisingData.MANUFACTURER_SPECIFIC_DATA)
        mdata = {manufacturer[0]: bytes(manufacturer[1])} if manufacturer else {}
        if not self.is_allowed_uuid(uuids):
            return
        address = str(adv.address).split("/")[0]
        key = str(adv.address)
        if key in self.seen_devices:  # keep what an earlier packet (adv/scan response) said
            earlier = self.seen_devices[key][1]
            name = name or earlier.local_name
            uuids = uuids or earlier.service_uuids
        adv_data = AdvertisementData(
            local_name=name,
            manufacturer_data=mdata,
            service_data={},
            service_uuids=uuids,
            tx_power=None,
            rssi=int(adv.rssi),
            platform_data=(adv,),
        )
        device = self.create_or_update_device(key, address, name, adv.address, adv_data)
        self.call_detection_callbacks(device, adv_data)


#: Seconds to open an HCI transport and power the controller on before giving up.
HCI_OPEN_TIMEOUT_S = 10.0


async def open_central(
    transport: str,
    *,
    address: str = "C0:FF:EE:00:00:01",
    timeout_s: float = HCI_OPEN_TIMEOUT_S,
) -> tuple[Device, Any]:
    """A powered-on bumble central on a bumble transport spec (``usb:0``,
    ``hci-socket:0``, ``tcp-client:HOST:PORT``, ...). Returns (device, transport); close
    the transport when done. Any failure (refused, missing, no answer within
    ``timeout_s``) is one :class:`BluetoothUnavailableError` line naming ``--hci SPEC``."""
    from bumble.host import Host
    from bumble.transport import open_transport

    opened: list[Any] = []

    async def open_and_power_on() -> Device:
        t = await open_transport(transport)
        opened.append(t)
        device = Device(
            name="anyecg-edge", address=hci.Address(address), host=Host(t.source, t.sink)
        )
        await device.power_on()
        return device

    try:
        device = await asyncio.wait_for(open_and_power_on(), timeout_s)
    except Exception as exc:
        for t in opened:
            with contextlib.suppress(Exception):
                await t.close()
        raise BluetoothUnavailableError(
            f"--hci {transport}: cannot open the HCI transport: {_transport_failure(exc, timeout_s)}"
        ) from None
    return device, opened[0]


def _transport_failure(exc: BaseException, timeout_s: float) -> str:
    """Why a bumble transport did not open, in words."""
    name = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        return (
            "connection refused (nothing listens there: start `anyecg-edge ble simulate` "
            "or the HCI bridge first)"
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):  # distinct before 3.11
        return f"no answer from a controller within {timeout_s:g} s"
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) == errno.EACCES:
        return f"permission denied ({_first_line(exc)})"
    if name == "TransportSpecError":
        return (
            f"{_first_line(exc)}; expected a bumble transport such as usb:0, hci-socket:0, "
            "tcp-client:HOST:PORT or serial:/dev/ttyUSB0"
        )
    if name.startswith("USBError"):
        return f"no usable USB Bluetooth controller ({name}{': ' + str(exc) if str(exc) else ''})"
    if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
        return f"no such device ({_first_line(exc)})"
    if name == "TransportLostError":
        return "the transport closed at once (no controller behind it?)"
    return f"{name}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
