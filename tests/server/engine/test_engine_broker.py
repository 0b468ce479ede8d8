"""Alert events reach the command-center topic through a real Mosquitto, also across a broker outage:
a delivery that fails while the broker is down stays pending and is sent once the broker is back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from engine_support import FakeClock, gateway_status, ingest, news2_assessment
from server_support import rows
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.broker import MosquittoBroker

from edge_agent import protocol
from edge_agent.backoff import Backoff
from edge_agent.mqtt import Message, MqttClient, MqttSettings
from server.engine import BrokerLink, EscalationEngine
from server.ingest import Ingestor


def _settings(broker: MosquittoBroker, name: str) -> MqttSettings:
    return MqttSettings.from_url(broker.url, client_id=f"{name}-{uuid.uuid4().hex[:8]}", clean_start=True)


async def _first_alert(client: MqttClient) -> protocol.AlertEvent:
    message: Message
    async for message in client.messages():
        if message.topic == protocol.CC_ALERT_TOPIC:
            return protocol.decode(protocol.AlertEvent, message.payload)
    raise AssertionError("subscription ended")


async def test_alert_event_is_delivered_after_a_broker_outage(
    sessions: async_sessionmaker[AsyncSession],
    ingestor: Ingestor,
    gateway_id: str,
    broker_factory: Callable[..., MosquittoBroker],
) -> None:
    broker = broker_factory()
    clock = FakeClock()
    link = BrokerLink(
        _settings(broker, "engine-pub"), connect_wait_s=0.5, backoff=Backoff(initial_s=0.05, maximum_s=0.2)
    )
    engine = EscalationEngine(sessions, publisher=link, clock=clock)
    async with asyncio.TaskGroup() as group:
        linking = group.create_task(link.run())
        broker.stop()  # the command center's broker is down when the alert is raised
        birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
        high = news2_assessment(gateway_id, 0, patient_id="pt-outage", assessed_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, high, clock.now))

        # published at once after the commit: that attempt fails (no broker within connect_wait_s) and
        # is handed to the delivery loop
        assert await engine.drain() == 0
        (status, attempts, error) = (
            await rows(sessions, "SELECT status, attempts, last_error FROM alert_deliveries")
        )[0]
        assert (status, attempts) == ("pending", 1) and "NotConnected" in error
        assert engine.counters.delivery_retries == 1

        broker.start()
        async with MqttClient(_settings(broker, "command-center")) as command_center:
            await command_center.subscribe(protocol.CC_ALERT_TOPIC, qos=1)
            async with asyncio.timeout(10):
                await link.wait_connected()
                clock.advance(60)  # past the retry's backoff
                assert await engine.deliver_pending() == 1
                event = await _first_alert(command_center)
        linking.cancel()

    assert (event.action, event.patient_id, event.priority) == ("raised", "pt-outage", "high")
    assert await _status(sessions) == "delivered"


async def _status(sessions: async_sessionmaker[AsyncSession]) -> str:
    return str((await rows(sessions, "SELECT status FROM alert_deliveries"))[0][0])
