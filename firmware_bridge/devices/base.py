"""What every wearable family provides, and the parts they share (numpy only).

A family is one module in this package (``polar``, ``movesense``, ``anyecg``): its
codec, its central `Profile` (how a client starts the ECG stream), its `Wearable`
entry (encoder defaults for a run of sample codes) and its `Peripheral` (the GATT
server side the simulator offers). `anyecg_edge.firmware_bridge.devices` registers them
by name, the way bleak keeps one backend per module.

A `Profile` turns notifications into `Frame`s (``decode``) and knows the GATT control
sequence that starts and stops the ECG stream on a connected client (``start`` /
``stop``). The client is anything with bleak's `BleakClient` API (``start_notify``,
``write_gatt_char``, ``read_gatt_char``, ``mtu_size``): the real bleak backends on
hardware, or our bumble backend against the simulated wearable -- the same code path.
Profiles are cheap, stateful per connection (the AnyECG config is read at start), and
import no BLE library; a `Peripheral` imports bumble only when it builds its services.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from anyecg_edge.firmware_bridge.frames import DeviceError, Frame, FrameError

__all__ = [
    "CONTROL_TIMEOUT_S",
    "RELEARN_FRAMES",
    "DataCallback",
    "FrameLength",
    "Peripheral",
    "Profile",
    "Wearable",
    "data_forwarder",
]

# How long a control-point reply may take before the start sequence fails.
CONTROL_TIMEOUT_S = 5.0

DataCallback = Callable[[bytes, int], None]

# Frames in a row, all of one length other than the stream's, that make it the stream's.
RELEARN_FRAMES = 3


class Profile(ABC):
    """A wearable family on the central's side: GATT layout, frame codec, control sequence."""

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


def data_forwarder(on_data: DataCallback) -> Callable[[Any, bytearray], None]:
    """A notification callback that stamps each frame with its host arrival time."""

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


class Peripheral:
    """A family's GATT server side on the simulated wearable (bumble, imported lazily).

    ``wearable`` is the `SimulatedWearable` it serves: the peripheral answers its control
    point through ``wearable.start_streaming`` / ``stop_streaming`` / ``indicate`` /
    ``notify``, and names the characteristic the ECG frames go out on (``data_char``).
    """

    def __init__(self, wearable: Any) -> None:
        self.wearable = wearable
        self.data_char: Any = None
        self.control_char: Any = None

    def services(self) -> tuple[list[Any], list[tuple[int, bytes]]]:
        """(bumble Services to add, advertising-data entries naming the service UUIDs)."""
        raise NotImplementedError

    async def tick(self, conn: Any, t_dev_s: float) -> None:
        """Called once per frame period of device time ``t_dev_s``, with the connection to
        send on (None while unlinked or stalled): for side channels that run on the
        device's own clock (the H10's heart-rate notifications)."""


class Wearable:
    """A family's device-side facts: nominal rate, advertised name, and how a run of
    sample codes goes on air (the simulator's and the tests' ground truth)."""

    name: ClassVar[str]
    profile: ClassVar[type[Profile]]
    # The family's fixed rate (None: it streams at the recording's rate, as AnyECG).
    nominal_fs_hz: ClassVar[float | None] = None
    advertised_name: ClassVar[str]
    peripheral: ClassVar[type[Peripheral]]

    def samples_per_frame(self, fmt: int) -> int:
        raise NotImplementedError

    def sample_bits(self, fmt: int) -> int:
        raise NotImplementedError

    def uv_per_code(self, nv_per_lsb: int) -> float:
        """Microvolts per sample code (Polar, Movesense: 1 uV)."""
        return 1.0

    def encode(
        self, codes: np.ndarray, *, t_first_ns: int, t_last_ns: int, seq: int, fmt: int, flags: int
    ) -> bytes:
        """One notification carrying ``codes``; times are device time in ns since the
        device's first sample (the family adds its clock's base), ``seq`` the sample
        counter of the first sample."""
        raise NotImplementedError
