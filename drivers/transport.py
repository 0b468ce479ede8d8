"""The one interface every device source implements, and the events it reports besides readings.

A :class:`Device` is consumed with ``async for item in device.readings()``: each item is a
:class:`~drivers.reading.Reading` or a :data:`DeviceEvent`. The iterator reconnects by itself after the
device goes away (reporting :class:`Disconnected`, then :class:`Connected` when it is back) and ends
only when the consumer stops it (``break`` inside ``contextlib.aclosing``, or cancelling the task), at
which point it closes whatever it opened. The BLE and serial transports, the simulators and test
doubles all implement it.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from drivers.reading import Reading


@dataclass(frozen=True, slots=True)
class Connected:
    device_id: str
    device_kind: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Disconnected:
    device_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    device_id: str
    battery_pct: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ProbeState:
    """The sensor came off the patient (``probe_off=True``) or went back on. Reported on change only."""

    device_id: str
    probe_off: bool
    at: datetime


DeviceEvent = Connected | Disconnected | BatteryLevel | ProbeState


@runtime_checkable
class Device(Protocol):
    """A source of readings: a real BLE or serial device, a simulator, or a test double."""

    @property
    def device_id(self) -> str: ...

    def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        """Readings and events until the consumer stops iterating; reconnects on its own."""
        ...


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**n)].

    ``reset()`` after a connection that worked, so one bad minute does not leave a device waiting long.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
