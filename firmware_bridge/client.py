"""Connection manager for real and simulated wearables, on bleak's `BleakClient`.

One loop owns the link: connect -> (the OS/backends negotiate the MTU and discover
services) -> the profile's start sequence -> stream until the link drops, the data
stops, or the user stops -> clean up -> back off -> reconnect, redoing discovery,
subscriptions and the start command every time (an old connection is never reused).

The connect step is bleak-retry-connector's ``establish_connection`` (the helper Home
Assistant uses with bleak): it retries, within one attempt of this loop, the errors
the stack reports for a connect that may pass (BlueZ's ``le-connection-abort-by-local``,
a D-Bus socket hiccup, services changed under it, a link dropped during discovery) with
its own backoffs, and on BlueZ uses the service cache only when it is still valid. What
it does not do stays here: a connect that reached nobody in its time and the errors
that say Bluetooth is unusable go straight back to this loop (they are not
``BleakError``s to it), which owns the time limits, the start sequence, the watchdog,
refusals and reconnecting.

Field problems it handles (DESIGN.md section 5): a disconnect that is never reported
while the data just stops (a data-silence watchdog forces a reconnect), links that drop
for hours (exponential backoff, capped; ``max_reconnects`` failed attempts in a row
end the session), disconnects during service discovery (a GATT request in flight raises
CancelledError: treated as a failed attempt, not as our own cancellation), and the time
base lost on reconnect (a ``link_down`` callback lets the sequencer record the gap).

What it does not retry (one-line errors, raised at once): no usable Bluetooth (no BlueZ /
D-Bus, no adapter, adapter off, permission denied, HCI transport lost) ->
:class:`BluetoothUnavailableError`; a device never reached within ``find_timeout_s``
-> :class:`DeviceNotFoundError`. Reconnecting is only for a device that was streaming
and vanished; giving up on it raises :class:`LinkLostError`.

Events (dicts, as written to the JSONL stream): ``connected``, ``disconnect``,
``reconnect``, ``silence``, ``connect_failed``; and where the device offers the standard
services (the H10 does), ``battery_pct`` in ``connected`` / ``reconnect`` and one
``heart_rate`` record per Heart Rate Measurement (``hr_bpm``, ``rr_ms``, ``contact``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyecg_edge.firmware_bridge.devices import heart_rate
from anyecg_edge.firmware_bridge.frames import DeviceError
from anyecg_edge.firmware_bridge.profiles import Profile

__all__ = [
    "BackoffPolicy",
    "BluetoothUnavailableError",
    "DeviceNotFoundError",
    "LinkLostError",
    "WearableClient",
    "bluetooth_unavailable_cause",
]

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]

# Seconds a side-channel request (battery read, heart-rate subscription) may take.
_SIDE_CHANNEL_TIMEOUT_S = 5.0

# Seconds an attempt may outlive the backend's own connect timeout before it is cut.
_CONNECT_GRACE_S = 3.0


@dataclass(frozen=True)
class BackoffPolicy:
    """Reconnect delays: initial, times factor per failed attempt, capped at max."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0
    # A device that answers but refuses to stream this many times in a row is a
    # configuration problem (e.g. MTU too small), not a radio problem: give up.
    max_refusals: int = 3

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


async def _until_stop(coro: Any, timeout_s: float, stop: asyncio.Event) -> bool:
    """Await ``coro`` (at most ``timeout_s``) unless ``stop`` is set first: True when it
    finished (its error is raised), False when ``stop`` cut it short (it is cancelled), so
    Ctrl-C or the end of --duration never waits out a 20 s connect."""
    work = asyncio.ensure_future(asyncio.wait_for(coro, timeout_s))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        raise
    finally:
        stopper.cancel()
    if work.done():
        work.result()
        return True
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work
    return False


class BluetoothUnavailableError(DeviceError):
    """No usable Bluetooth here: no stack (BlueZ / D-Bus), no adapter, adapter off,
    permission denied, or the HCI transport cannot be opened or was lost. Retrying cannot
    help, so it is raised at once (one line naming the cause)."""


class DeviceNotFoundError(DeviceError):
    """The device was not found / not connected within the time limit."""


class LinkLostError(DeviceError):
    """A device that was streaming vanished and ``max_reconnects`` attempts failed."""


_OFF = (
    "the Bluetooth adapter is off (turn it on: `bluetoothctl power on` or "
    "`rfkill unblock bluetooth`)"
)
_DENIED = (
    "permission to use Bluetooth was denied (add the user to the 'bluetooth' group, or "
    "allow Bluetooth for this app)"
)
_NO_DBUS = (
    "no BlueZ: the system D-Bus is not reachable ({why}); start dbus and bluetoothd (in a "
    "container, share /run/dbus), or use a USB dongle through bumble with --hci usb:0"
)


def bluetooth_unavailable_cause(exc: BaseException, *, os_stack: bool = True) -> str | None:
    """The cause, in words, when ``exc`` says Bluetooth itself is unusable (None for
    errors that concern one connection attempt and may pass). ``os_stack``: the error
    came from the platform stack (bleak on BlueZ/CoreBluetooth/WinRT), not bumble."""
    try:
        from bleak.exc import (
            BleakBluetoothNotAvailableError,
            BleakBluetoothNotAvailableReason,
            BleakDBusError,
        )
    except ImportError:  # the ble extra is absent: nothing of bleak's can be the cause
        BleakBluetoothNotAvailableError = BleakDBusError = ()  # type: ignore[assignment,misc]
        BleakBluetoothNotAvailableReason = None  # type: ignore[assignment,misc]
    if BleakBluetoothNotAvailableReason is not None and isinstance(
        exc, BleakBluetoothNotAvailableError
    ):
        r = BleakBluetoothNotAvailableReason
        return {
            r.NO_BLUETOOTH: "no Bluetooth adapter found",
            r.NO_BLE_CENTRAL_ROLE: "the Bluetooth adapter cannot act as a BLE central",
            r.POWERED_OFF: _OFF,
            r.DENIED_BY_USER: _DENIED,
            r.DENIED_BY_SYSTEM: _DENIED,
            r.DENIED_BY_UNKNOWN: _DENIED,
        }.get(exc.reason, f"Bluetooth is not available ({_one_line(exc)})")
    if isinstance(exc, BleakDBusError):
        name = exc.dbus_error
        if name.rsplit(".", 1)[-1] in ("AccessDenied", "NotPermitted", "NotAuthorized"):
            return _DENIED
        if name == "org.freedesktop.DBus.Error.ServiceUnknown":
            return "BlueZ (bluetoothd) is not running; start it (systemctl start bluetooth)"
        if name == "org.bluez.Error.NotReady":
            return _OFF
        return None
    if isinstance(exc, PermissionError):
        return f"{_DENIED}: {_one_line(exc)}"
    if type(exc).__name__ == "TransportLostError":  # bumble: the HCI transport went away
        return "the HCI transport was lost (the controller or the bridge process went away)"
    if os_stack and isinstance(exc, (FileNotFoundError, ConnectionRefusedError)):
        # bleak on Linux reaches BlueZ over the system D-Bus socket; nothing else in a
        # connect opens a file or a socket.
        return _NO_DBUS.format(why=exc.strerror or _one_line(exc))
    text = str(exc).lower()  # older bleak versions: plain BleakError messages
    if "no bluetooth adapters" in text:
        return "no Bluetooth adapter found"
    if "not powered" in text or "turned off" in text or "powered off" in text:
        return _OFF
    return None


def _is_not_found(exc: BaseException) -> bool:
    """A connect that found nobody: the scan gave up, or the attempt timed out."""
    if isinstance(exc, _NotFoundError | asyncio.TimeoutError | TimeoutError):
        return True
    try:
        from bleak.exc import BleakDeviceNotFoundError
    except ImportError:
        return False
    # bleak-retry-connector's BleakNotFoundError: BlueZ lost the device object (UnknownObject)
    names = ("TimeoutError", "BleakNotFoundError")
    return isinstance(exc, BleakDeviceNotFoundError) or type(exc).__name__ in names


class _NotFoundError(Exception):
    """A connect attempt that reached nobody within its time. Not a ``BleakError``, so
    bleak-retry-connector hands it back at once: the time limits are this loop's."""


class _OutOfTimeError(Exception):
    """The attempt's time ran out between bleak-retry-connector's retries (the message is
    the last error it retried)."""


def _retry_connector() -> Any:
    """bleak_retry_connector (part of the ``ble`` extra); one line when it is missing."""
    try:
        import bleak_retry_connector
    except ImportError:
        raise BluetoothUnavailableError(
            'BLE needs bleak-retry-connector: pip install "anyecg-edge[ble]"'
        ) from None
    return bleak_retry_connector


@functools.cache
def _client_class() -> type:
    """The BleakClient that establish_connection builds (bleak imported on first use).

    Per try it: counts the try; gives the backend the time left of this loop's attempt
    (establish_connection passes a fixed 20 s); turns a timeout or a device gone from
    the stack into ``_NotFoundError`` and an unusable Bluetooth into
    ``BluetoothUnavailableError`` (neither is retried by the connector)."""
    from bleak.exc import BleakDeviceNotFoundError

    base = _retry_connector().BleakClientWithServiceCache

    class _Client(base):  # type: ignore[misc,valid-type]
        def __init__(
            self, device: Any, *, deadline: float, os_stack: bool, tried: Callable[[], None],
            **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(device, timeout=max(0.1, deadline - time.perf_counter()), **kwargs)
            self._deadline, self._os_stack, self._tried = deadline, os_stack, tried
            self._last: BaseException | None = None

        async def connect(self, **kwargs: Any) -> None:
            left_s = self._deadline - time.perf_counter()
            if left_s <= 0.05:
                raise _OutOfTimeError(_one_line(self._last) if self._last else "no time left")
            self._tried()
            try:
                await super().connect(**{**kwargs, "timeout": left_s})
            except (asyncio.TimeoutError, TimeoutError, BleakDeviceNotFoundError) as exc:
                raise _NotFoundError(_one_line(exc)) from None
            except Exception as exc:
                cause = bluetooth_unavailable_cause(exc, os_stack=self._os_stack)
                if cause is not None:
                    raise BluetoothUnavailableError(f"cannot use Bluetooth: {cause}") from None
                self._last = exc
                raise

    return _Client


class WearableClient:
    """Keeps one wearable streaming into ``on_data(bytes, arrival_ns)``.

    ``backend``/``backend_kwargs`` go to `BleakClient` (None: the platform backend, i.e.
    real hardware; `BumbleClientBackend` with ``bumble_device=...`` for simulation).
    ``time_scale`` divides every timer (backoff, watchdog) for accelerated simulations.
    ``find_timeout_s``: wall time allowed to reach the device the first time (attempts
    that fail for passing reasons are retried within it); ``connect_timeout_s``: one
    attempt (the OS stack scans that long for the address). ``max_reconnects``: failed
    reconnect attempts in a row after a loss before giving up (None: never give up).
    """

    def __init__(
        self,
        address: Any,
        profile: Profile,
        *,
        on_data: Callable[[bytes, int], None],
        on_event: EventCallback,
        link_down: Callable[[str], None] | None = None,
        backend: type | None = None,
        backend_kwargs: dict[str, Any] | None = None,
        policy: BackoffPolicy | None = None,
        silence_timeout_s: float = 5.0,
        connect_timeout_s: float = 20.0,
        find_timeout_s: float = 20.0,
        max_reconnects: int | None = None,
        time_scale: float = 1.0,
        min_silence_wall_s: float = 1.0,
    ) -> None:
        self.address = address
        self.profile = profile
        self.on_data = on_data
        self.on_event = on_event
        self.link_down = link_down
        self.backend = backend
        self.backend_kwargs = backend_kwargs or {}
        self.policy = policy or BackoffPolicy()
        self.silence_timeout_s = silence_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.find_timeout_s = find_timeout_s
        self.max_reconnects = max_reconnects
        self.time_scale = time_scale
        # Wall-clock floor of the watchdog: an accelerated simulation on a busy machine
        # must not take a scheduling hiccup for a stalled device.
        self.min_silence_wall_s = min_silence_wall_s
        self.connected = False
        # connect_tries: every connect the backend made, bleak-retry-connector's retries
        # within one attempt of this loop included.
        self.counts = {"connects": 0, "reconnects": 0, "failed_attempts": 0, "silences": 0,
                       "connect_tries": 0}  # fmt: skip
        self._last_data = 0.0
        self._lost = asyncio.Event()
        self._loss = ""  # why the link went down last ("link_lost", "silence")
        self._battery_pct: int | None = None  # read at each connect where offered

    async def _start(self, client: Any) -> None:
        """The profile's start sequence, then the battery level where it is offered."""
        await self.profile.start(client, self._data)
        self._battery_pct = await asyncio.wait_for(
            heart_rate.read_battery(client), _SIDE_CHANNEL_TIMEOUT_S
        )

    def _heart_rate(self, m: heart_rate.HeartRateMeasurement) -> None:
        try:
            self.on_event(m.to_event())
        except Exception:  # a side channel must never stop the stream
            log.exception("heart-rate callback failed")

    def _data(self, data: bytes, arrival_ns: int) -> None:
        self._last_data = time.perf_counter()
        try:
            self.on_data(data, arrival_ns)
        except Exception:  # one bad packet must never stop the stream
            log.exception("data callback failed")

    async def _connect(self, timeout_s: float, made: list[Any]) -> None:
        """One attempt of the loop: find the device (the OS stack scans for it, as
        `BleakClient` with an address would; a custom backend such as bumble's connects
        to the address itself), then bleak-retry-connector's establish_connection within
        ``timeout_s``. The connected client is appended to ``made``."""
        from bleak.backends.device import BLEDevice

        brc = _retry_connector()
        deadline = time.perf_counter() + timeout_s
        kwargs = dict(self.backend_kwargs)
        if self.backend is None:
            from bleak import BleakScanner

            device = await BleakScanner.find_device_by_address(str(self.address), timeout_s)
            if device is None:
                raise _NotFoundError(f"{self.address} not heard within {timeout_s:g} s")
        else:
            kwargs["backend"] = self.backend
            device = BLEDevice(str(self.address), None, self.address)

        def tried() -> None:
            self.counts["connect_tries"] += 1

        def make(*args: Any, **kw: Any) -> Any:  # kept for the cleanup if it fails
            client = _client_class()(*args, **kw)
            made.append(client)
            return client

        await brc.establish_connection(
            make, device, self.profile.name,
            disconnected_callback=lambda _c: self._lost.set(),
            deadline=deadline, os_stack=self.backend is None, tried=tried, **kwargs,
        )  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set; returns after a clean shutdown. Raises
        BluetoothUnavailableError, DeviceNotFoundError, LinkLostError, or DeviceError if
        the device keeps refusing to stream (all one line)."""
        failures = refusals = 0
        down_since: float | None = None
        deadline = time.perf_counter() + self.find_timeout_s  # for the first connection
        while not stop.is_set():
            self._lost = asyncio.Event()
            streamed = self.counts["connects"] > 0
            # Before the first connection no attempt outlives the time limit.
            timeout_s = self.connect_timeout_s
            if not streamed:
                timeout_s = max(0.1, min(timeout_s, deadline - time.perf_counter()))
            made: list[Any] = []
            client: Any = None
            t0 = time.perf_counter()
            not_found = connecting = False
            try:
                connecting = True
                # The backend times out first and cancels the pending connection in the
                # controller; this outer limit only catches a backend that hangs.
                connect = self._connect(timeout_s, made)
                if not await _until_stop(connect, timeout_s + _CONNECT_GRACE_S, stop):
                    await self._close_all(made)
                    break
                client = made[-1]
                # A link that dropped during a try the connector then retried past is no
                # loss of this connection.
                self._lost = asyncio.Event()
                connecting = False
                start = self._start(client)
                if not await _until_stop(start, self.connect_timeout_s, stop):
                    await self._shutdown(client)
                    break
            except asyncio.CancelledError:
                task = asyncio.current_task()
                await self._close_all(made)
                if task is not None and task.cancelling():
                    raise  # we are being cancelled (Ctrl-C)
                error = "link dropped during setup"
            except BluetoothUnavailableError as exc:
                await self._close_all(made)
                raise BluetoothUnavailableError(f"{self.address}: {exc}") from None
            except DeviceError as exc:
                await self._close_all(made)
                refusals += 1
                if refusals >= self.policy.max_refusals:
                    raise DeviceError(
                        f"{self.address}: {exc} (after {refusals} attempts)"
                    ) from None
                error = _one_line(exc)
            except Exception as exc:  # bleak/bumble/OS errors
                await self._close_all(made)
                cause = bluetooth_unavailable_cause(exc, os_stack=self.backend is None)
                if cause is not None:
                    raise BluetoothUnavailableError(
                        f"{self.address}: cannot use Bluetooth: {cause}"
                    ) from None
                not_found = connecting and _is_not_found(exc)
                error = (
                    "not found" if not_found
                    else str(exc) if isinstance(exc, _OutOfTimeError) else _one_line(exc)
                )  # fmt: skip
            else:
                error = None
            if error is not None:
                failures += 1
                self.counts["failed_attempts"] += 1
                self._give_up_if_due(streamed, failures, error, not_found, deadline)
                await self._failed(failures, error, stop)
                continue
            connect_ms = round((time.perf_counter() - t0) * 1000, 1)
            self.connected = True
            attempts, failures, refusals = failures + 1, 0, 0
            mtu = getattr(client, "mtu_size", None)
            battery = {} if self._battery_pct is None else {"battery_pct": self._battery_pct}
            if self.counts["connects"] == 0:
                self.counts["connects"] += 1
                self.on_event(
                    {"event": "connected", "address": str(self.address), "mtu": mtu,
                     "connect_ms": connect_ms, **self.profile.describe(), **battery}
                )  # fmt: skip
            else:
                self.counts["reconnects"] += 1
                down_s = None if down_since is None else (time.perf_counter() - down_since)
                self.on_event(
                    {"event": "reconnect", "attempts": attempts, "mtu": mtu,
                     "connect_ms": connect_ms,
                     "down_s": None if down_s is None else round(down_s / self.time_scale, 3),
                     **battery}
                )  # fmt: skip
            # After the connect event, so heart-rate records follow it in the log. A side
            # channel never ends the stream: a link that drops while the subscription is in
            # flight cancels the GATT request (CancelledError, not ours: seen on a slow
            # emulated arm64 machine as an internal error) and _watch then sees the loss.
            try:
                await asyncio.wait_for(
                    heart_rate.subscribe(client, self._heart_rate), _SIDE_CHANNEL_TIMEOUT_S
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled (Ctrl-C)
                log.debug("heart-rate subscription cut short (link dropped)")
            except Exception as exc:
                log.debug("heart-rate subscription failed: %s", _one_line(exc))
            reason = await self._watch(stop)
            self.connected = False
            if reason == "stop":
                await self._shutdown(client)
                break
            down_since = time.perf_counter()
            await self._close(client)
            self.on_event({"event": "disconnect", "reason": reason})
            if self.link_down is not None:
                self.link_down(reason)
            self._loss = reason
            if self.max_reconnects == 0:
                raise LinkLostError(
                    f"{self.address}: the device stopped streaming ({reason}) and "
                    "--max-reconnects is 0"
                )

    def _give_up_if_due(
        self, streamed: bool, failures: int, error: str, not_found: bool, deadline: float
    ) -> None:
        """Raise when retrying is over: the first connection's time limit has passed (or
        the next backoff would pass it), or ``max_reconnects`` attempts after a loss failed."""
        if not streamed:
            next_try = time.perf_counter() + self.policy.delay(failures) * self.time_scale
            if next_try < deadline:
                return
            limit = f"{self.find_timeout_s:g} s"
            if not_found:
                raise DeviceNotFoundError(
                    f"{self.address}: device not found within {limit} (is it switched on or "
                    "worn, in range, and not connected to a phone or another app?)"
                )
            tries = self.counts["connect_tries"] or failures  # the connector's retries too
            raise DeviceNotFoundError(
                f"{self.address}: could not connect within {limit} ({tries} attempts; "
                f"last: {error})"
            )
        if self.max_reconnects is not None and failures >= self.max_reconnects:
            raise LinkLostError(
                f"{self.address}: the device stopped streaming ({self._loss}) and {failures} "
                f"reconnect attempts failed (--max-reconnects {self.max_reconnects}; last: {error})"
            )

    async def _watch(self, stop: asyncio.Event) -> str:
        """Wait for: user stop, link loss, or data silence (a stall the OS never reports)."""
        self._last_data = time.perf_counter()
        timeout = max(self.silence_timeout_s * self.time_scale, self.min_silence_wall_s)
        tick = max(0.005, min(0.5, timeout / 5))
        while True:
            if stop.is_set():
                return "stop"
            if self._lost.is_set():
                return "link_lost"
            silent = time.perf_counter() - self._last_data
            if silent > timeout:
                self.counts["silences"] += 1
                self.on_event(
                    {"event": "silence", "silent_s": round(silent / self.time_scale, 3),
                     "action": "forcing reconnect"}
                )  # fmt: skip
                return "silence"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost.wait(), tick)

    async def _failed(self, failures: int, error: str, stop: asyncio.Event) -> None:
        delay = self.policy.delay(failures)
        self.on_event(
            {"event": "connect_failed", "attempt": failures, "error": error, "retry_in_s": delay}
        )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay * self.time_scale)

    async def _shutdown(self, client: Any) -> None:
        """User stop: stop the stream on the device (best effort), then disconnect."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.profile.stop(client), 2.0)
        await self._close(client)

    async def _close(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5.0)

    async def _close_all(self, made: list[Any]) -> None:
        for client in made:
            await self._close(client)
