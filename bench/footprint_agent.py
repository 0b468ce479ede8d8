"""A real agent with six simulated devices reading at 1 Hz, for bench_outbox.py's footprint measurement."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from drivers.reading import Reading, TimeSource, Vital
from drivers.transport import Connected, DeviceEvent
from edge_agent.config import DeviceConfig, load_config
from edge_agent.service import Agent
from edge_agent.systemd import Notifier

PATTERN = [(Vital.HEART_RATE, "/min", 72.0), (Vital.SPO2, "%", 97.0), (Vital.RESPIRATORY_RATE, "/min", 15.0)]


class OneHertzDevice:
    def __init__(self, device_id: str, index: int) -> None:
        self.device_id = device_id
        self.vital, self.unit, self.value = PATTERN[index % len(PATTERN)]

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        yield Connected(self.device_id, "ble_heart_rate", datetime.now(UTC))
        while True:
            await asyncio.sleep(1)
            yield Reading(
                self.vital, self.value, self.unit, datetime.now(UTC), TimeSource.DEVICE, self.device_id
            )


def main() -> None:
    config = load_config(sys.argv[1])

    def factory(device: DeviceConfig) -> OneHertzDevice:
        return OneHertzDevice(device.id, int(device.id[1:]))

    asyncio.run(Agent(config, device_factory=factory, notifier=Notifier(address="")).run())


if __name__ == "__main__":
    main()
