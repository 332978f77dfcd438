"""Connection manager for real and simulated wearables, on bleak's `BleakClient`.

One loop owns the link: connect -> (the OS/backends negotiate the MTU and discover
services) -> the profile's start sequence -> stream until the link drops, the data
stops, or the user stops -> clean up -> back off -> reconnect, redoing discovery,
subscriptions and the start command every time (an old connection is never reused).

Field problems it handles (DESIGN.md section 5): a disconnect that is never reported
while the data just stops (a data-silence watchdog forces a reconnect), links that drop
for hours (exponential backoff, capped, never giving up unless told), disconnects
during service discovery (a GATT request in flight raises CancelledError: treated as a
failed attempt, not as our own cancellation), and the time base lost on reconnect (a
``link_down`` callback lets the sequencer record the gap explicitly).

Events (dicts, as written to the JSONL stream): ``connected``, ``disconnect``,
``reconnect``, ``silence``, ``connect_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyecg_edge.firmware_bridge.frames import DeviceError
from anyecg_edge.firmware_bridge.profiles import Profile

__all__ = ["BackoffPolicy", "WearableClient"]

log = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]


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


class WearableClient:
    """Keeps one wearable streaming into ``on_data(bytes, arrival_ns)``.

    ``backend``/``backend_kwargs`` go to `BleakClient` (None: the platform backend, i.e.
    real hardware; `BumbleClientBackend` with ``bumble_device=...`` for simulation).
    ``time_scale`` divides every timer (backoff, watchdog) for accelerated simulations.
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
        self.time_scale = time_scale
        # Wall-clock floor of the watchdog: an accelerated simulation on a busy machine
        # must not take a scheduling hiccup for a stalled device.
        self.min_silence_wall_s = min_silence_wall_s
        self.connected = False
        self.counts = {"connects": 0, "reconnects": 0, "failed_attempts": 0, "silences": 0}
        self._last_data = 0.0
        self._lost = asyncio.Event()

    def _data(self, data: bytes, arrival_ns: int) -> None:
        self._last_data = time.perf_counter()
        try:
            self.on_data(data, arrival_ns)
        except Exception:  # one bad packet must never stop the stream
            log.exception("data callback failed")

    def _make_client(self) -> Any:
        from bleak import BleakClient

        kwargs = dict(self.backend_kwargs)
        if self.backend is not None:
            kwargs["backend"] = self.backend
        return BleakClient(
            self.address,
            disconnected_callback=lambda _c: self._lost.set(),
            timeout=self.connect_timeout_s,
            **kwargs,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set; returns after a clean shutdown. Raises
        DeviceError if the device keeps refusing to stream."""
        failures = refusals = 0
        down_since: float | None = None
        while not stop.is_set():
            self._lost = asyncio.Event()
            client = self._make_client()
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(client.connect(), self.connect_timeout_s)
                await asyncio.wait_for(
                    self.profile.start(client, self._data), self.connect_timeout_s
                )
            except asyncio.CancelledError:
                task = asyncio.current_task()
                await self._close(client)
                if task is not None and task.cancelling():
                    raise  # we are being cancelled (Ctrl-C)
                failures += 1
                await self._failed(failures, "link dropped during setup", stop)
                continue
            except DeviceError as exc:
                await self._close(client)
                refusals += 1
                if refusals >= self.policy.max_refusals:
                    raise DeviceError(
                        f"{self.address}: {exc} (after {refusals} attempts)"
                    ) from None
                failures += 1
                await self._failed(failures, _one_line(exc), stop)
                continue
            except Exception as exc:  # bleak/bumble/OS errors: retry with backoff
                await self._close(client)
                failures += 1
                await self._failed(failures, _one_line(exc), stop)
                continue
            connect_ms = round((time.perf_counter() - t0) * 1000, 1)
            self.connected = True
            attempts, failures, refusals = failures + 1, 0, 0
            mtu = getattr(client, "mtu_size", None)
            if self.counts["connects"] == 0:
                self.counts["connects"] += 1
                self.on_event(
                    {"event": "connected", "address": str(self.address), "mtu": mtu,
                     "connect_ms": connect_ms, **self.profile.describe()}
                )  # fmt: skip
            else:
                self.counts["reconnects"] += 1
                down_s = None if down_since is None else (time.perf_counter() - down_since)
                self.on_event(
                    {"event": "reconnect", "attempts": attempts, "mtu": mtu,
                     "connect_ms": connect_ms,
                     "down_s": None if down_s is None else round(down_s / self.time_scale, 3)}
                )  # fmt: skip
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
        self.counts["failed_attempts"] += 1
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
