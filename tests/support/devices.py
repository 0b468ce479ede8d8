"""Test doubles for drivers.transport.Device: scripted readings, and devices that fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drivers.reading import UNITS, Reading, TimeSource, Vital
from drivers.transport import Connected, DeviceEvent


def reading(
    vital: Vital, value: float, at: datetime, device_id: str = "dev-1", quality: frozenset[str] = frozenset()
) -> Reading:
    return Reading(vital, value, UNITS[vital], at, TimeSource.DEVICE, device_id, quality)


@dataclass
class ScriptedDevice:
    """Yields Connected, then whatever is put on its queue; never ends on its own."""

    device_id: str
    kind: str = "ble_heart_rate"
    queue: asyncio.Queue[Reading | DeviceEvent] = field(default_factory=asyncio.Queue)

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        yield Connected(self.device_id, self.kind, datetime.now(UTC))
        while True:
            yield await self.queue.get()

    def feed(self, items: Sequence[Reading | DeviceEvent]) -> None:
        for item in items:
            self.queue.put_nowait(item)


@dataclass
class BrokenDevice:
    """Raises as soon as it is read: a device that fails forever."""

    device_id: str
    attempts: int = 0

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        self.attempts += 1
        raise OSError(f"adapter exploded (attempt {self.attempts})")
        yield  # pragma: no cover - makes this an async generator
