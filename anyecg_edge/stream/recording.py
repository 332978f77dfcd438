"""Record a BLE stream session (``stream --record DIR``) and replay it (``--source replay:DIR``).

A recording folder holds:

* ``notifications.aer`` -- the raw log, append-only and framed, so that a session killed
  mid-write (SIGKILL, power) still reads back up to its last whole record:

  - a 12-byte file header: ``b"AECGREC\\0"``, u16 format version (1), u16 reserved;
  - records ``u32 payload_len | u32 crc32(payload) | payload`` (little-endian), payload =
    ``u8 kind | i64 host UTC ns | body``. Kinds: 1 notification (body ``u8 n | the
    characteristic's UUID, n ASCII bytes | the bytes exactly as received``), 2 link down
    (body: the reason, UTF-8), 3 connection event (body: the client's event as JSON: connect,
    disconnect, reconnect, heart_rate ...), 4 end (the session's end on the arrival clock).

  A reader stops at the first record that is incomplete or fails its CRC (a torn tail),
  and says how many bytes it left (`LogReader.torn_bytes`). Host times are the arrival
  clock (``perf_counter_ns``) mapped once to UTC at the recording's start, so intervals
  between records are the arrival clock's exactly.
* ``session.json`` -- what a replay needs besides the bytes: the wearable family, its rate
  and lead (and an AnyECG device's config record), the sequencer's time scale; written
  atomically at the start, at the first notification and at the end.
* ``signal.hea`` / ``signal.dat`` -- the sequenced signal as WFDB (format 16, 1000 adu/mV,
  the lead's name, the device rate estimated from its timestamps), samples placed on the
  device clock: a gap holds WFDB's invalid sample (NaN when read) for its duration; and
  ``signal.gap`` annotations (``"`` comments, ``aux_note`` "gap 1.23 s" or the link event)
  where each one starts. The .dat grows while streaming; the header and the annotations
  are written when the session ends (a killed session is replayed to get them).

Replay (`run_replay`) feeds the logged records through the same decoder, sequencer and
engine as the live session (`BlePipeline`), with the recorded arrival times, so it gives
the same windows and estimates; ``speed`` paces it (0: as fast as possible).
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.stream.engine import StreamError
from anyecg_edge.stream.types import Block

__all__ = [
    "FORMAT",
    "LogReader",
    "Recorder",
    "RecordingError",
    "check_record_dir",
    "recording_files",
    "read_session",
    "run_replay",
]

FORMAT = "anyecg-edge-recording/1"
LOG_NAME = "notifications.aer"
SESSION_NAME = "session.json"
WFDB_NAME = "signal"
MAGIC = b"AECGREC\0"
VERSION = 1
_FILE_HEADER = struct.Struct("<8sHH")
_RECORD_HEADER = struct.Struct("<II")
_PAYLOAD_HEAD = struct.Struct("<Bq")
NOTIFY, LINK_DOWN, EVENT, END = 1, 2, 3, 4
# The raw log is fsync'ed at most this often (a kill loses nothing written; this bounds
# what a power loss can).
_FSYNC_EVERY_S = 2.0
# WFDB: adu per mV, and the invalid sample that marks a gap.
_GAIN = 1000.0
_INVALID = -32768


class RecordingError(StreamError):
    """A recording folder that cannot be written or replayed (one line naming the file)."""


def _utc_iso(ns: int) -> str:
    from anyecg_edge.stream.engine import utc_iso

    return utc_iso(ns / 1e9)


# --------------------------------------------------------------------------- writing


class _WfdbWriter:
    """The sequenced signal as a growing WFDB format-16 .dat; header + annotations at close."""

    def __init__(self, folder: Path, fs_hz: float, lead: str) -> None:
        self.folder, self.fs, self.lead = folder, float(fs_hz), lead
        self.dat = open(folder / f"{WFDB_NAME}.dat", "wb")  # noqa: SIM115 (closed in close)
        self.n = 0  # samples written
        self.checksum = 0
        self.first: int | None = None
        self.segment: int | None = None
        self.seg_start = 0
        self.notes: list[tuple[int, str]] = []
        self.pending_note: str | None = None

    def note(self, text: str) -> None:
        """A link event: annotated where the next segment starts."""
        self.pending_note = text

    def block(self, block: Block) -> None:
        if block.segment != self.segment:
            pos = max(self.n, round(block.t_first_s * self.fs) - block.seg_index)
            if self.segment is not None:
                gap_s = (pos - self.n) / self.fs
                text = f"gap {gap_s:.3f} s"
                if self.pending_note:
                    text += f" ({self.pending_note})"
                self.notes.append((self.n, text))
            self.pending_note = None
            self.segment, self.seg_start = block.segment, pos
        pos = self.seg_start + block.seg_index
        codes = np.clip(np.round(block.samples_mv * _GAIN), -32767, 32767).astype("<i2")
        if pos < self.n:  # (overlap: the sequencer never sends one; keep what was written)
            codes = codes[self.n - pos :]
            pos = self.n
        if pos > self.n:
            self._write(np.full(pos - self.n, _INVALID, dtype="<i2"))
        self._write(codes)

    def _write(self, codes: np.ndarray) -> None:
        if codes.size == 0:
            return
        if self.first is None:
            self.first = int(codes[0])
        self.dat.write(codes.tobytes())
        self.checksum = (self.checksum + int(codes.astype(np.int64).sum())) & 0xFFFF
        self.n += codes.size

    def close(self, fs_est_hz: float | None) -> None:
        self.dat.close()
        fs = fs_est_hz or self.fs
        checksum = self.checksum - 0x10000 if self.checksum >= 0x8000 else self.checksum
        lead = "".join(c if c.isalnum() or c in "-_+" else "_" for c in self.lead) or "ECG"
        from anyecg_edge.fileio import write_text_atomic

        write_text_atomic(
            self.folder / f"{WFDB_NAME}.hea",
            f"{WFDB_NAME} 1 {fs:.6f} {self.n}\n"
            f"{WFDB_NAME}.dat 16 {_GAIN:g}(0)/mV 16 0 {self.first or 0} {checksum} 0 {lead}\n",
        )
        if self.notes:
            import wfdb

            wfdb.wrann(
                WFDB_NAME, "gap", sample=np.array([p for p, _ in self.notes]),
                symbol=['"'] * len(self.notes), aux_note=[t for _, t in self.notes],
                fs=fs, write_dir=str(self.folder),
            )  # fmt: skip


class Recorder:
    """Writes a recording folder while a BLE session streams (hooks in `BlePipeline`)."""

    def __init__(self, folder: str | Path, meta: dict[str, Any]) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.log = open(self.folder / LOG_NAME, "wb", buffering=0)  # noqa: SIM115
            self.log.write(_FILE_HEADER.pack(MAGIC, VERSION, 0))
        except OSError as exc:
            raise RecordingError(
                f"--record {self.folder}: cannot write ({exc.strerror or exc})"
            ) from None
        # The arrival clock (perf_counter_ns) -> UTC, mapped once.
        self._perf0, self._utc0 = time.perf_counter_ns(), time.time_ns()
        self.meta: dict[str, Any] = {"format": FORMAT, **meta, "start_utc": _utc_iso(self._utc0)}
        self.profile: Any = None
        self.wfdb: _WfdbWriter | None = None
        self.records = 0
        self._last_sync = time.monotonic()
        self._closed = False
        self._write_meta()

    def _utc_ns(self, arrival_ns: int) -> int:
        return self._utc0 + (arrival_ns - self._perf0)

    def _write_meta(self) -> None:
        from anyecg_edge.fileio import write_json

        write_json(self.folder / SESSION_NAME, self.meta)

    def _append(self, kind: int, arrival_ns: int, body: bytes) -> None:
        payload = _PAYLOAD_HEAD.pack(kind, self._utc_ns(arrival_ns)) + body
        self.log.write(_RECORD_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        self.records += 1
        now = time.monotonic()
        if now - self._last_sync >= _FSYNC_EVERY_S:
            os.fsync(self.log.fileno())
            self._last_sync = now

    # --- hooks -----------------------------------------------------------------------------
    def attach(self, profile: Any, time_scale: float) -> None:
        self.profile = profile
        self.meta.update(profile=profile.name, time_scale=time_scale)

    def notification(self, data: bytes, arrival_ns: int) -> None:
        if "fs_hz" not in self.meta and self.profile is not None:
            # The family's state is complete now (an AnyECG config record is read in start).
            desc = self.profile.describe()
            self.meta.update(fs_hz=self.profile.nominal_fs, lead=self.profile.lead,
                             characteristic=self.profile.data_uuid, device=desc)  # fmt: skip
            config = getattr(self.profile, "config", None)
            if config is not None and hasattr(config, "encode"):
                self.meta["config_record"] = config.encode().hex()
            self._write_meta()
        uuid = str(self.meta.get("characteristic", "")).encode("ascii")
        self._append(NOTIFY, arrival_ns, bytes([len(uuid)]) + uuid + bytes(data))

    def link_down(self, reason: str) -> None:
        self._append(LINK_DOWN, time.perf_counter_ns(), reason.encode())
        if self.wfdb is not None:
            self.wfdb.note(reason)

    def event(self, ev: dict[str, Any]) -> None:
        self._append(EVENT, time.perf_counter_ns(), json.dumps(ev, default=str).encode())

    def end(self, arrival_ns: int) -> None:
        self._append(END, arrival_ns, b"")

    def block(self, block: Block) -> None:
        if self.wfdb is None:
            self.wfdb = _WfdbWriter(
                self.folder, self.meta.get("fs_hz") or block.fs_hz, self.meta.get("lead") or "I"
            )
        self.wfdb.block(block)

    def close(self, info: dict[str, Any] | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        os.fsync(self.log.fileno())
        self.log.close()
        fs_est = (info or {}).get("fs_estimated_hz")
        if self.wfdb is not None:
            self.wfdb.close(fs_est)
        self.meta.update(end_utc=_utc_iso(time.time_ns()), records=self.records,
                         fs_estimated_hz=fs_est, wfdb=WFDB_NAME if self.wfdb else None,
                         complete=True)  # fmt: skip
        self._write_meta()


# --------------------------------------------------------------------------- reading


@dataclass
class LogRecord:
    kind: int
    utc_ns: int
    body: bytes


class LogReader:
    """The records of a ``notifications.aer``, up to a torn tail (see the module doc)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.torn_bytes = 0

    def __iter__(self) -> Iterator[LogRecord]:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        with fh:
            head = fh.read(_FILE_HEADER.size)
            if len(head) < _FILE_HEADER.size or head[:8] != MAGIC:
                raise RecordingError(f"{self.path}: not an AnyECG-Edge recording (bad header)")
            version = _FILE_HEADER.unpack(head)[1]
            if version != VERSION:
                raise RecordingError(f"{self.path}: format version {version}, expected {VERSION}")
            while True:
                pos = fh.tell()
                rh = fh.read(_RECORD_HEADER.size)
                if not rh:
                    return
                payload = b""
                if len(rh) == _RECORD_HEADER.size:
                    n, crc = _RECORD_HEADER.unpack(rh)
                    payload = fh.read(n)
                    if len(payload) == n and n >= _PAYLOAD_HEAD.size and zlib.crc32(payload) == crc:
                        kind, utc_ns = _PAYLOAD_HEAD.unpack_from(payload)
                        yield LogRecord(kind, utc_ns, payload[_PAYLOAD_HEAD.size :])
                        continue
                self.torn_bytes = self.path.stat().st_size - pos
                return


def check_record_dir(folder: str | Path) -> None:
    """``--record DIR``: refused when DIR already holds a recording (never overwritten)."""
    folder = Path(folder)
    if (folder / SESSION_NAME).exists() or (folder / LOG_NAME).exists():
        raise RecordingError(
            f"--record {folder}: already holds a recording ({SESSION_NAME}); give a new folder"
        )


def recording_files(folder: str | Path) -> list[Path]:
    """The files of the recording in ``folder`` (checked to be one: one-line error if not)."""
    folder = Path(folder)
    read_session(folder)
    names = (LOG_NAME, SESSION_NAME, f"{WFDB_NAME}.hea", f"{WFDB_NAME}.dat", f"{WFDB_NAME}.gap")
    return [folder, *(folder / n for n in names)]


def read_session(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / SESSION_NAME
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordingError(
            f"--source replay:{folder}: no {SESSION_NAME} (expected a `stream --record` folder)"
        ) from None
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RecordingError(f"{path}: format is not {FORMAT!r}")
    if "profile" not in meta:
        raise RecordingError(f"{path}: no 'profile' (the session never connected)")
    return meta


class _ReplayEngine:
    """The engine as the pipeline sees it during a replay: blocks carry the recorded
    arrival times (the sequencer's checks need them) but reach the engine stamped with
    their real delivery (latency) and anchored at the recorded UTC (t_utc)."""

    def __init__(self, engine: Any, perf_to_utc_ns: Callable[[int], int]) -> None:
        object.__setattr__(self, "_engine", engine)
        object.__setattr__(self, "_to_utc", perf_to_utc_ns)

    def push(self, block: Block) -> None:
        engine = self._engine
        if engine.utc_anchor is None and block.n:
            engine.utc_anchor = (
                block.t_first_s + block.n / block.fs_hz,
                self._to_utc(block.arrival_ns) / 1e9,
            )
        block.arrival_ns = time.perf_counter_ns()
        engine.push(block)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._engine, name, value)


def _replay_profile(meta: dict[str, Any]) -> Any:
    from anyecg_edge.stream.sources import make_profile

    name = meta["profile"]
    if meta.get("config_record"):
        from anyecg_edge.firmware_bridge.devices.anyecg import AnyEcgConfig
        from anyecg_edge.firmware_bridge.profiles import get_profile

        return get_profile(name, config=AnyEcgConfig.decode(bytes.fromhex(meta["config_record"])))
    return make_profile(name, fs=meta.get("fs_hz"), lead=meta.get("lead"))


def run_replay(
    folder: str | Path,
    engine: Any,
    *,
    speed: float,
    duration_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    wait: Callable[[float], Any] = time.sleep,
) -> dict[str, Any]:
    """Feed a recording through decoder -> sequencer -> ``engine`` (see the module doc)."""
    from anyecg_edge.stream.sources import BlePipeline

    if speed < 0:
        raise RecordingError(f"--speed must be >= 0 (0 = as fast as possible), got {speed}")
    folder = Path(folder)
    meta = read_session(folder)
    reader = LogReader(folder / LOG_NAME)
    base_perf = time.perf_counter_ns()
    first_utc: int | None = None

    def to_perf(utc_ns: int) -> int:  # recorded UTC -> the replay's arrival clock
        return base_perf + (utc_ns - (first_utc or utc_ns))

    proxy = _ReplayEngine(engine, lambda perf: (first_utc or 0) + (perf - base_perf))
    pipe = BlePipeline(_replay_profile(meta), proxy, time_scale=float(meta.get("time_scale", 1)))
    t0 = time.perf_counter()
    counts = {"notifications": 0, "link_down": 0, "events": 0}
    for rec in reader:
        if should_stop():
            break
        if first_utc is None:
            first_utc = rec.utc_ns
        if speed > 0:
            due = t0 + (rec.utc_ns - first_utc) / 1e9 / speed
            delay = due - time.perf_counter()
            if delay > 0 and wait(delay) and should_stop():
                break
        if rec.kind == NOTIFY:
            n = rec.body[0]
            pipe.on_data(rec.body[1 + n :], to_perf(rec.utc_ns))
            counts["notifications"] += 1
        elif rec.kind == LINK_DOWN:
            pipe.link_down(rec.body.decode(errors="replace"))
            counts["link_down"] += 1
        elif rec.kind == EVENT:
            engine.event(json.loads(rec.body))
            counts["events"] += 1
        elif rec.kind == END:
            pipe.end_ns = to_perf(rec.utc_ns)
        if duration_s is not None and engine.stream_t >= duration_s:
            break
    if pipe.end_ns is None:  # (a recording cut short: its last record is its end)
        pipe.link_is_down = True
    pipe.flush()
    return {"source": f"replay:{folder}", "recorded": meta.get("source"), **counts,
            "torn_bytes": reader.torn_bytes, "complete": bool(meta.get("complete")),
            **pipe.stats()}  # fmt: skip
