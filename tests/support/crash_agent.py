"""A real agent process with a counting heart-rate device, for kill -9 tests.

The device numbers its readings. When the agent asks for the next reading, the previous one has been
fully taken (committed to the outbox), so the device appends its number to a ledger file: the ledger is
the list of readings the device "handed over". After any number of kill -9s, every number in the ledger
must reach the broker.

    python tests/support/crash_agent.py --config gateway.toml --ledger ledger.txt
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drivers.reading import Reading, TimeSource, Vital
from drivers.transport import Connected, DeviceEvent
from edge_agent.config import DeviceConfig, load_config
from edge_agent.service import Agent
from edge_agent.systemd import Notifier
from edge_agent.uplink import UplinkOptions

BASE = datetime(2026, 1, 1, tzinfo=UTC)
BURST = 200


def index_of(measured_at: datetime, base: datetime = BASE) -> int:
    """The device's number of a reading: its measured_at is ``base`` plus that many milliseconds."""
    return round((measured_at - base) / timedelta(milliseconds=1))


class CountingDevice:
    def __init__(
        self, device_id: str, ledger: Path, rate: float | None = None, base: datetime = BASE
    ) -> None:
        self.device_id = device_id
        self.base = base
        self.ledger = ledger
        self.pause_s = BURST / rate if rate else 0.02
        self.stop_file = ledger.with_suffix(".stop")
        """When this file exists the device stops producing (the agent keeps running and drains)."""

    async def readings(self) -> AsyncIterator[Reading | DeviceEvent]:
        text = self.ledger.read_text() if self.ledger.exists() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        index = int(lines[-1]) + 1 if lines else 0
        yield Connected(self.device_id, "ble_heart_rate", datetime.now(UTC))
        with self.ledger.open("a") as ledger:
            while not self.stop_file.exists():
                for _ in range(BURST):
                    at = self.base + timedelta(milliseconds=index)
                    yield Reading(
                        Vital.HEART_RATE, 30 + index % 200, "/min", at, TimeSource.DEVICE, self.device_id
                    )
                    ledger.write(f"{index}\n")  # resumed: the agent has committed reading `index`
                    ledger.flush()
                    index += 1
                await asyncio.sleep(self.pause_s)  # bursts, not a flood
            await asyncio.Event().wait()  # stopped producing; stay connected until cancelled


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--rate", type=float, default=None, help="readings per second (default: flat out)")
    parser.add_argument("--base", default=None, help="ISO time of reading 0 (default 2026-01-01)")
    parser.add_argument(
        "--receipt-timeout", type=float, default=None, help="seconds before unconfirmed messages go again"
    )
    args = parser.parse_args()
    config = load_config(args.config)
    ledger = Path(args.ledger)

    def factory(device: DeviceConfig) -> CountingDevice:
        base = datetime.fromisoformat(args.base) if args.base else BASE
        return CountingDevice(device.id, ledger, args.rate, base)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = None
    if args.receipt_timeout is not None:
        options = UplinkOptions(
            heartbeat_interval_s=config.heartbeat_interval_s, receipt_timeout_s=args.receipt_timeout
        )
    agent = Agent(config, device_factory=factory, notifier=Notifier(address=""), uplink_options=options)
    print(f"agent pid {os.getpid()}", flush=True)
    asyncio.run(agent.run())


if __name__ == "__main__":
    main()
