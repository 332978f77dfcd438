"""Fault injection for the simulated wearable: what real BLE links and devices do.

Spec string (``--faults``), comma-separated ``key=value``:

=============  ==========================================================================
``drop=P``     each notification is lost with probability P
``dup=P``      each notification is sent twice with probability P
``reorder=P``  each notification is held back and sent after the next one (prob. P)
``corrupt=P``  each notification is cut short or has a byte flipped (prob. P)
``cut=P``      each notification is cut short (prob. P): a fault that the profiles without
               a CRC (Polar, Movesense) can always detect, by the stream's frame length
``disconnect=S``  the link is lost every S s of stream time (the device keeps sampling)
``stall=S``    every S s the device silently stops notifying while the link stays up
               (the field failure a data-silence watchdog must catch)
``vanish=S``   at S s the link is lost and the device stops advertising for good (battery
               dead, out of range): reconnecting fails until ``--max-reconnects`` gives up
``jump=S``     every S s the device clock jumps by ``jump_s`` (default +1.5 s)
``jump_s=X``   size of each clock jump in s (negative: backwards)
``drift=PPM``  the device samples at nominal * (1 + PPM/1e6) and stamps true time
               (a Polar H10 at 130.04 Hz is drift=308)
``seed=N``     random seed (default 0): the same spec gives the same faults
=============  ==========================================================================
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

__all__ = ["FaultInjector", "FaultSpec"]


# A period under 0.1 s would fire on every frame; a clock jump beyond an hour is no BLE
# device's clock fault any more (jump_s=1e9 used to be accepted).
_MIN_PERIOD_S = 0.1
_MAX_JUMP_S = 3600.0


class FaultSpecError(ValueError):
    """A --faults string that cannot be parsed (one line naming the bad item)."""


@dataclass(frozen=True)
class FaultSpec:
    drop: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    cut: float = 0.0
    disconnect: float = 0.0
    stall: float = 0.0
    vanish: float = 0.0
    jump: float = 0.0
    jump_s: float = 1.5
    drift: float = 0.0
    seed: int = 0

    _PROBABILITIES = ("drop", "dup", "reorder", "corrupt", "cut")
    _PERIODS = ("disconnect", "stall", "vanish", "jump")

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        if not spec:
            return cls()
        names = {f.name for f in fields(cls)}
        values: dict[str, float | int] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise FaultSpecError(
                    f"--faults item {item!r}: expected key=value with key one of "
                    f"{', '.join(sorted(names))}"
                )
            try:
                value: float | int = int(raw) if key == "seed" else float(raw)
            except ValueError:
                raise FaultSpecError(f"--faults {key}={raw!r}: expected a number") from None
            if not math.isfinite(value):
                # nan/inf reach the simulator's clock (drift=nan made it busy-loop for good)
                raise FaultSpecError(f"--faults {key}={raw}: expected a finite number")
            if key in cls._PERIODS and 0 < value < _MIN_PERIOD_S:
                raise FaultSpecError(
                    f"--faults {key}={raw}: a period must be 0 (off) or >= {_MIN_PERIOD_S:g} s"
                )
            if key == "jump_s" and abs(value) > _MAX_JUMP_S:
                raise FaultSpecError(f"--faults jump_s={raw}: expected |s| <= {_MAX_JUMP_S:g}")
            if key in cls._PROBABILITIES and not 0.0 <= value <= 1.0:
                raise FaultSpecError(f"--faults {key}={raw}: a probability must be in [0, 1]")
            if key in cls._PERIODS and value < 0:
                raise FaultSpecError(f"--faults {key}={raw}: a period in s must be >= 0")
            if key == "drift" and abs(value) > 50_000:
                raise FaultSpecError(f"--faults drift={raw}: expected |ppm| <= 50000")
            values[key] = value
        return cls(**values)  # type: ignore[arg-type]

    @property
    def any(self) -> bool:
        return self != FaultSpec(seed=self.seed)

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FaultInjector:
    """Applies the per-notification faults (drop, dup, reorder, corrupt, cut) to a stream of
    notifications; counts what it did so tests can compare with what was detected."""

    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self._held: bytes | None = None
        self.counts = {
            "sent": 0,
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "corrupted": 0,
            "cut": 0,
        }

    def process(self, frame: bytes) -> list[bytes]:
        """Notifications to put on air for this frame (in order)."""
        s, rng = self.spec, self.rng
        out: list[bytes] = []
        if s.drop and rng.random() < s.drop:
            self.counts["dropped"] += 1
        else:
            if s.corrupt and rng.random() < s.corrupt:
                frame = self._corrupt(frame)
                self.counts["corrupted"] += 1
            if s.cut and rng.random() < s.cut and len(frame) > 1:
                frame = frame[: rng.randrange(1, len(frame))]
                self.counts["cut"] += 1
            copies = 2 if s.dup and rng.random() < s.dup else 1
            self.counts["duplicated"] += copies - 1
            if self._held is None and s.reorder and rng.random() < s.reorder:
                self._held = frame
                self.counts["reordered"] += 1
                copies -= 1
            out.extend([frame] * copies)
        if self._held is not None and out and out[-1] is not self._held:
            out.append(self._held)
            self._held = None
        self.counts["sent"] += len(out)
        return out

    def flush(self) -> list[bytes]:
        """A frame still held back for reordering (the link is going down)."""
        held, self._held = self._held, None
        return [held] if held is not None else []

    def _corrupt(self, frame: bytes) -> bytes:
        rng = self.rng
        if rng.random() < 0.5 and len(frame) > 1:
            return frame[: rng.randrange(1, len(frame))]
        b = bytearray(frame)
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
