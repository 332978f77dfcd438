"""Stream sources: a recording replayed from a file, a simulated wearable over a real
GATT exchange (bumble virtual radio), or a real wearable (bleak).

    file:PATH            WFDB/CSV/EDF record replayed in blocks (--speed 0: as fast as
                         the engine takes them, lossless)
    sim-polar:PATH       the record replayed by a simulated Polar H10 / Movesense /
    sim-movesense:PATH   AnyECG device on bumble's LocalLink, received through
    sim-anyecg:PATH      BleakClient with our bumble backend (the real-device code path)
    polar:ADDR           a real device through bleak (or through bumble on an HCI
    movesense:ADDR       transport such as usb:0 with ``hci=``)
    anyecg:ADDR

Everything BLE is imported lazily (the ``ble`` extra); the file source needs numpy only
(plus wfdb for WFDB records).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.firmware_bridge.faults import FaultSpec
from anyecg_edge.firmware_bridge.profiles import FrameDecoder, Profile, get_profile
from anyecg_edge.firmware_bridge.sequencer import Sequencer
from anyecg_edge.io import Record, read_record
from anyecg_edge.stream.engine import StreamEngine, StreamError
from anyecg_edge.stream.types import Block, SeqEvent

__all__ = [
    "BlePipeline",
    "SourceError",
    "SourceSpec",
    "file_blocks",
    "load_record",
    "make_profile",
    "run_ble",
    "run_file",
]

PROFILE_NAMES = ("polar", "movesense", "anyecg")
# Replay granularity of a file: 100 ms blocks, about one BLE connection interval's worth.
FILE_CHUNK_S = 0.1


class SourceError(StreamError):
    """A --source that cannot be used (one line naming it and what was expected)."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "file" | "sim" | "device" | "replay"
    target: str
    profile: str | None = None

    @classmethod
    def parse(cls, spec: str) -> SourceSpec:
        head, sep, rest = spec.partition(":")
        if not sep or not rest:
            raise SourceError(
                f"--source {spec!r}: expected file:PATH, sim-polar|sim-movesense|sim-anyecg:PATH, "
                "polar|movesense|anyecg:ADDRESS or replay:DIR"
            )
        if head in ("file", "replay"):
            return cls(head, rest)
        if head.startswith("sim-") and head[4:] in PROFILE_NAMES:
            return cls("sim", rest, head[4:])
        if head in PROFILE_NAMES:
            return cls("device", rest, head)
        raise SourceError(
            f"--source {spec!r}: unknown kind {head!r}; expected file, sim-polar, sim-movesense, "
            "sim-anyecg, polar, movesense, anyecg or replay"
        )

    @property
    def label(self) -> str:
        kind = self.profile or self.kind  # file, replay
        return f"{'sim-' if self.kind == 'sim' else ''}{kind}:{self.target}"


def load_record(
    path: str | Path, *, lead: str | None, fs: float | None, units: str | None = None
) -> Record:
    return read_record(path, lead=lead, fs=fs, units=units)


def file_blocks(
    record: Record,
    *,
    chunk_s: float = FILE_CHUNK_S,
    duration_s: float | None = None,
    loop: bool = False,
) -> Iterator[Block]:
    """The record as consecutive blocks (one segment); ``loop`` repeats it end to end
    (for soak tests) until ``duration_s`` of signal. ``arrival_ns`` is set by the caller."""
    x = record.signal_mv
    fs = float(record.fs)
    chunk = max(1, round(chunk_s * fs))
    total = x.shape[0] if duration_s is None else round(duration_s * fs)
    if not loop:
        total = min(total, x.shape[0])
    pos = 0
    while pos < total:
        n = min(chunk, total - pos)
        start = pos % x.shape[0]
        piece = x[start : start + n]
        if piece.shape[0] < n:  # wraps around the end of the record
            piece = np.concatenate((piece, x[: n - piece.shape[0]]))
        yield Block(
            samples_mv=piece,
            codes=piece,
            segment=0,
            seg_index=pos,
            t_first_s=pos / fs,
            fs_hz=fs,
            arrival_ns=0,
        )
        pos += n


def run_file(
    record: Record,
    engine: StreamEngine,
    *,
    speed: float,
    duration_s: float | None,
    loop: bool = False,
    chunk_s: float = FILE_CHUNK_S,
    should_stop: Callable[[], bool] = lambda: False,
    wait: Callable[[float], Any] = time.sleep,
) -> dict[str, Any]:
    """Replay a record into the engine, paced at ``speed`` x real time (0: unpaced).
    ``should_stop`` is checked before each block; ``wait`` paces (an Event's ``wait`` lets
    a stop request end a long pause at once)."""
    if speed < 0:
        raise SourceError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
    engine.nominal_fs = float(record.fs)
    t0 = time.perf_counter()
    n_blocks = 0
    for block in file_blocks(record, chunk_s=chunk_s, duration_s=duration_s, loop=loop):
        if should_stop():
            break
        if speed > 0:
            # deliver each block when its last sample "happens"
            due = t0 + (block.t_first_s + block.n / block.fs_hz) / speed
            delay = due - time.perf_counter()
            if delay > 0 and wait(delay) and should_stop():
                break
        block.arrival_ns = time.perf_counter_ns()
        engine.push(block)
        n_blocks += 1
    return {"source": "file", "record": record.source, "lead": record.lead, "fs": record.fs,
            "blocks": n_blocks}  # fmt: skip


@dataclass
class BlePipeline:
    """Notifications -> decoder -> sequencer -> engine (blocks and events)."""

    profile: Profile
    engine: StreamEngine
    keep_blocks: bool = False
    # Device seconds per host second (a simulated wearable's speed): device time is
    # checked against the arrival clock with it (see the Sequencer).
    time_scale: float = 1.0
    decoder: FrameDecoder = field(init=False)
    sequencer: Sequencer | None = field(init=False, default=None)
    blocks: list[Block] = field(init=False, default_factory=list)
    end_ns: int | None = field(init=False, default=None)
    # The link is down since the last frame (disconnect or silence, already reported): the
    # device's silence at the end is then no unreported stall.
    link_is_down: bool = field(init=False, default=False)
    # `stream --record`: a recording.Recorder that logs what arrives (and the blocks).
    recorder: Any = None

    def __post_init__(self) -> None:
        self.decoder = FrameDecoder(self.profile)
        if self.recorder is not None:
            self.recorder.attach(self.profile, self.time_scale)

    def on_event(self, ev: dict[str, Any]) -> None:
        """A client event (connect, disconnect, heart rate...) to the engine (and the log)."""
        if self.recorder is not None:
            self.recorder.event(ev)
        self.engine.event(ev)

    def on_data(self, data: bytes, arrival_ns: int) -> None:
        if self.recorder is not None:
            self.recorder.notification(data, arrival_ns)
        self.link_is_down = False
        frame = self.decoder.feed(data)
        if frame is None:
            self.engine.event(
                {"event": "malformed", "bytes": len(data), "reason": self.decoder.last_reason,
                 "total": self.decoder.stats.n_malformed}
            )  # fmt: skip
            return
        if self.sequencer is None:
            # The AnyECG rate is known only once the config record was read.
            self.sequencer = Sequencer(self.profile.nominal_fs, time_scale=self.time_scale)
            self.engine.nominal_fs = self.profile.nominal_fs
        self._forward(self.sequencer.push(frame, arrival_ns))

    def link_down(self, reason: str) -> None:
        if self.recorder is not None:
            self.recorder.link_down(reason)
        self.link_is_down = True
        if self.sequencer is not None:
            self._forward(
                self.sequencer.break_segment("disconnect" if reason != "silence" else "silence")
            )

    def watch_stop(self, stop: asyncio.Event) -> asyncio.Task:
        """Note when the session is asked to stop (its device-silence at the end is measured
        up to then, not up to the end of the link's shutdown)."""

        async def mark() -> None:
            await stop.wait()
            self.end_ns = time.perf_counter_ns()

        return asyncio.create_task(mark())

    def flush(self) -> None:
        end_ns = self.end_ns or time.perf_counter_ns()
        if self.recorder is not None:
            self.recorder.end(end_ns)
        if self.sequencer is not None:
            self._forward(self.sequencer.flush())
            stall = None if self.link_is_down else self.sequencer.trailing_stall(end_ns)
            if stall is not None:
                self._forward([stall])

    def _forward(self, items: list) -> None:
        for item in items:
            if isinstance(item, Block):
                if self.keep_blocks:
                    self.blocks.append(item)
                if self.recorder is not None:
                    self.recorder.block(item)
                self.engine.push(item)
            elif isinstance(item, SeqEvent):
                self.engine.event(item.to_dict())

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decoder": self.decoder.stats.to_dict()}
        if self.sequencer is not None:
            out["sequencer"] = dict(self.sequencer.counts)
            out["fs_estimated_hz"] = round(self.sequencer.fs_est, 4)
        return out


def make_profile(name: str, *, fs: float | None = None, lead: str | None = None) -> Profile:
    kwargs: dict[str, Any] = {}
    if fs is not None and name == "movesense":
        kwargs["fs_hz"] = fs
    if lead is not None:
        kwargs["lead"] = lead
    return get_profile(name, **kwargs)


async def run_ble(
    spec: SourceSpec,
    engine: StreamEngine,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    faults: FaultSpec | None = None,
    lead: str | None = None,
    fs: float | None = None,
    hci: str | None = None,
    silence_timeout_s: float = 5.0,
    stop: asyncio.Event | None = None,
    keep_blocks: bool = False,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    find_timeout_s: float = 20.0,
    max_reconnects: int | None = None,
    loop: bool = True,
    recorder: Any = None,
    sim_record: Record | None = None,
) -> dict[str, Any]:
    """Stream a simulated (``spec.kind == 'sim'``) or real wearable into the engine until
    ``duration_s`` of stream time, or ``stop``. Returns transport/codec statistics.
    ``loop=False``: a simulated wearable stops at its record's end (as ``file:`` does; the
    CLI's default, ``--loop`` repeats it); True keeps it sampling the record round.

    A device must be reached within ``find_timeout_s`` (also each later attempt's
    limit); after a link loss at most ``max_reconnects`` failed attempts in a row are
    made (None: unlimited). Bluetooth being unusable, a device not found and a link
    given up on raise one-line
    :class:`~anyecg_edge.firmware_bridge.frames.DeviceError` subclasses. ``sim_record``: the
    simulated wearable's record when the caller has read it already (else read here)."""
    from anyecg_edge.firmware_bridge.client import WearableClient

    stop = stop or asyncio.Event()
    faults = faults or FaultSpec()
    assert spec.profile is not None
    if spec.kind == "sim":
        return await _run_sim(
            spec, engine, speed=speed, duration_s=duration_s, faults=faults, lead=lead,
            silence_timeout_s=silence_timeout_s, stop=stop, keep_blocks=keep_blocks,
            on_ready=on_ready, max_reconnects=max_reconnects, find_timeout_s=find_timeout_s,
            loop=loop, recorder=recorder, record=sim_record,
        )  # fmt: skip
    if faults.any:
        raise SourceError("--faults applies to simulated sources (sim-polar:..., sim-anyecg:...)")
    if speed != 1.0:
        raise SourceError("--speed applies to replayed sources; a real device streams in real time")
    profile = make_profile(spec.profile, fs=fs, lead=lead)
    pipe = BlePipeline(profile, engine, keep_blocks=keep_blocks, recorder=recorder)
    backend, backend_kwargs, transport = None, {}, None
    if hci:
        from anyecg_edge.firmware_bridge.bumble_backend import BumbleClientBackend, open_central

        central, transport = await open_central(hci)  # one-line error if it cannot open
        backend, backend_kwargs = BumbleClientBackend, {"bumble_device": central}
    client = WearableClient(
        spec.target, profile, on_data=pipe.on_data, on_event=pipe.on_event,
        link_down=pipe.link_down, backend=backend, backend_kwargs=backend_kwargs,
        silence_timeout_s=silence_timeout_s, find_timeout_s=find_timeout_s,
        connect_timeout_s=find_timeout_s, max_reconnects=max_reconnects,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        marker = pipe.watch_stop(stop)
        ended = await _drive(client, stop, lambda: time.perf_counter() - started, duration_s)
        marker.cancel()
    finally:
        pipe.flush()
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()
    if ended == "duration" and client.counts["connects"] == 0:
        # A session that never reached its device is a failure, not an empty success.
        from anyecg_edge.firmware_bridge.client import DeviceNotFoundError

        failed = client.counts["failed_attempts"]
        raise DeviceNotFoundError(
            f"{spec.target}: not connected within --duration {duration_s:g} s"
            + (f" ({failed} failed attempts)" if failed else "")
        )
    return {"source": spec.label, "transport": "bumble:" + hci if hci else "bleak",
            **pipe.stats(), "client": client.counts}  # fmt: skip


async def _drive(client: Any, stop: asyncio.Event, clock: Callable[[], float], duration_s) -> str:
    """Run the client until the duration (on ``clock``) or stop; re-raise its errors.
    Returns what ended it: "duration", "stop" or "client"."""
    task = asyncio.create_task(client.run(stop))
    ended = "client"
    try:
        while not task.done():
            if stop.is_set():
                ended = "stop"
                break
            if duration_s is not None and clock() >= duration_s:
                ended = "duration"
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        # A streaming client stops at once (stop command, disconnect); one waiting in a
        # (re)connect attempt would hold the session up to its connect timeout past
        # --duration (9 s of signal in 25 s for --duration 15 after a link drop): cancelled.
        grace_s = 5.0 if getattr(client, "connected", True) else 0.5
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=grace_s)
        except asyncio.TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return ended


async def _run_sim(
    spec: SourceSpec,
    engine: StreamEngine,
    *,
    speed: float,
    duration_s: float | None,
    faults: FaultSpec,
    lead: str | None,
    silence_timeout_s: float,
    stop: asyncio.Event,
    keep_blocks: bool,
    on_ready: Callable[[dict[str, Any]], None] | None,
    max_reconnects: int | None,
    find_timeout_s: float,
    loop: bool = True,
    recorder: Any = None,
    record: Record | None = None,
) -> dict[str, Any]:
    from anyecg_edge.firmware_bridge import anyecg
    from anyecg_edge.firmware_bridge.bumble_backend import BumbleClientBackend
    from anyecg_edge.firmware_bridge.client import WearableClient
    from anyecg_edge.firmware_bridge.simulator import SimLink, SimulatedWearable

    if not speed > 0:
        raise SourceError(
            f"--speed {speed:g}: a simulated wearable runs on a clock; use --speed > 0 "
            "(e.g. 10 for 10x real time)"
        )
    assert spec.profile is not None
    if record is None:
        record = load_record(spec.target, lead=lead, fs=None)
    wearable = SimulatedWearable.from_record(
        spec.profile, record, faults=faults, speed=speed, keep_log=keep_blocks
    )
    if not loop:
        # Device time at the record's last sample: the session ends there.
        end_s = wearable.codes.size / wearable.fs_true
        duration_s = end_s if duration_s is None else min(duration_s, end_s)
    profile = make_profile(spec.profile, fs=wearable.fs_nominal)
    pipe = BlePipeline(
        profile, engine, keep_blocks=keep_blocks, time_scale=speed, recorder=recorder
    )
    sim_stop = asyncio.Event()
    async with SimLink(wearable) as link:
        client = WearableClient(
            link.address, profile, on_data=pipe.on_data, on_event=pipe.on_event,
            link_down=pipe.link_down, backend=BumbleClientBackend,
            backend_kwargs={"bumble_device": link.central},
            silence_timeout_s=silence_timeout_s, time_scale=1.0 / speed,
            max_reconnects=max_reconnects, find_timeout_s=find_timeout_s,
            connect_timeout_s=find_timeout_s,
        )  # fmt: skip
        sim_task = asyncio.create_task(wearable.run(sim_stop, duration_s))
        if on_ready is not None:
            on_ready({"wearable": wearable, "link": link, "client": client, "pipeline": pipe})
        try:
            marker = pipe.watch_stop(stop)
            await _drive(client, stop, wearable.device_time_s, duration_s)
            marker.cancel()
        finally:
            sim_stop.set()
            await sim_task
            pipe.flush()
    info = {
        "source": spec.label,
        "transport": "bumble LocalLink (in-process GATT)",
        "record": record.source,
        "lead": record.lead,
        "fs_nominal_hz": wearable.fs_nominal,
        "fs_true_hz": round(wearable.fs_true, 4),
        "speed": speed,
        "faults": {k: v for k, v in faults.to_dict().items() if v != getattr(FaultSpec(), k)},
        **pipe.stats(),
        "client": client.counts,
        "simulator": dict(vars(wearable.stats)),
        "injected": dict(wearable.injector.counts),
    }
    if spec.profile == "anyecg":
        info["anyecg_format"] = anyecg.FORMAT_NAMES[wearable.config.fmt]
    return info
