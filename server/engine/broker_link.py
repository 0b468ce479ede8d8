"""The server's publishing connection to the broker: kept open, reconnected with backoff.

:meth:`BrokerLink.publish` waits (bounded) for a connection and returns only after the broker's PUBACK
for QoS 1, so a caller that records a delivery after it returns has a delivery the broker holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from edge_agent.backoff import Backoff
from edge_agent.mqtt import ConnectFailed, MqttClient, MqttError, MqttSettings

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the engine needs to tell the command center (BrokerLink is one; tests may use another)."""

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None: ...


class NotConnectedError(MqttError):
    """No broker connection within the wait."""


class BrokerLink:
    def __init__(
        self, settings: MqttSettings, *, connect_wait_s: float = 5.0, backoff: Backoff | None = None
    ):
        self.settings = settings
        self._connect_wait_s = connect_wait_s
        self._backoff = backoff or Backoff(initial_s=0.5, maximum_s=30.0)
        self._client: MqttClient | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    async def run(self) -> None:
        """Keep a connection open until cancelled."""
        while True:
            try:
                async with MqttClient(self.settings) as client:
                    self._client = client
                    self._ready.set()
                    await self._notify()
                    self._backoff.reset()
                    logger.info("publishing to the broker at %s:%d", self.settings.host, self.settings.port)
                    reason = await client.wait_closed()
                    logger.warning("publishing connection lost: %s", reason)
            except ConnectFailed as exc:
                logger.warning(
                    "cannot reach the broker at %s:%d: %s", self.settings.host, self.settings.port, exc
                )
            except MqttError as exc:
                logger.warning("publishing connection failed: %s", exc)
            finally:
                self._ready.clear()
                self._client = None
            await self._notify()
            await asyncio.sleep(self._backoff.next_delay())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_connected(self) -> None:
        """Return once a connection is open."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.connected)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        client = self._client
        if client is None or not client.is_connected:
            try:
                async with asyncio.timeout(self._connect_wait_s):
                    await self._ready.wait()
            except TimeoutError:
                raise NotConnectedError(f"no broker connection within {self._connect_wait_s:g} s") from None
            client = self._client
            if client is None:
                raise NotConnectedError("broker connection dropped")
        await client.publish(topic, payload, qos=qos, retain=retain)
