"""The real edge agent over mqtts:// with its issued gateway certificate, against the production broker
configuration: it delivers; configured with another gateway's id it is refused and keeps its readings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from security_support import GATEWAY_A, GATEWAY_B, SERVER_INGEST, SERVER_PUB, Identity, Pki, client
from support.broker import MosquittoBroker
from support.devices import ScriptedDevice, reading

from drivers.reading import Vital
from edge_agent.backoff import Backoff
from edge_agent.config import GatewayConfig
from edge_agent.mqtt import MqttClient
from edge_agent.outbox import Outbox
from edge_agent.protocol import (
    Assessment,
    Command,
    CommandAck,
    Event,
    ObservationBatch,
    Receipt,
    SetOxygen,
    decode,
    decode_gateway_message,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
)
from edge_agent.service import Agent
from edge_agent.systemd import Notifier
from edge_agent.uplink import UplinkOptions


def gateway_config(
    tmp_path: Path, broker: MosquittoBroker, gateway_id: str, identity: Identity
) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway_id": gateway_id,
            "broker": {
                "url": f"mqtts://{broker.host}:{broker.port}",
                "ca_file": str(identity.ca_file),
                "cert_file": str(identity.cert_file),
                "key_file": str(identity.key_file),
            },
            "patients": [{"id": "pt-1"}],
            "devices": [
                {
                    "id": "oxi-1",
                    "kind": "ble_plx_continuous",
                    "patient": "pt-1",
                    "address": "AA:BB:CC:DD:EE:01",
                }
            ],
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "heartbeat_interval_s": 1,
        }
    )


def make_agent(config: GatewayConfig, device: ScriptedDevice) -> Agent:
    return Agent(
        config,
        device_factory=lambda _d: device,
        reassess_interval_s=0.5,
        device_backoff=lambda: Backoff(initial_s=0.01, maximum_s=0.05),
        uplink_options=UplinkOptions(
            heartbeat_interval_s=1,
            batch_delay_s=0.01,
            refused_retry_s=0.1,
            backoff=Backoff(initial_s=0.05, maximum_s=0.2),
        ),
        notifier=Notifier(address=""),
    )


class RefusalCounter(logging.Handler):
    """Counts the uplink's "lost or refused" warnings (logged on the event loop's thread)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "lost or refused" in record.getMessage():
            self.count += 1
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        while self.count < count:
            self.changed.clear()
            await self.changed.wait()


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run(), name="agent-under-test")
    await asyncio.wait_for(agent.ready.wait(), 10)
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def feed_vitals(device: ScriptedDevice) -> list[float]:
    now = datetime.now(UTC)
    values = [(Vital.SPO2, 95.0), (Vital.HEART_RATE, 72.0), (Vital.SPO2, 94.0)]
    device.feed([reading(v, x, now - timedelta(seconds=5 - i), "oxi-1") for i, (v, x) in enumerate(values)])
    return [x for _, x in values]


async def collect_observations(server: MqttClient, expected: int) -> tuple[list[float], list[int]]:
    """Observation values from gateway A until ``expected`` arrived, and the seq of every obs, score and
    event message seen on the way (what a server would put in its receipt)."""
    values: list[float] = []
    seqs: list[int] = []
    async with asyncio.timeout(15):
        async for message in server.messages():
            where, payload = decode_gateway_message(message.topic, message.payload)
            assert where.gateway_id == GATEWAY_A
            if isinstance(payload, ObservationBatch | Assessment | Event):
                seqs.append(payload.seq)
            if isinstance(payload, ObservationBatch):
                values += [o.value for o in payload.observations]
            if len(values) >= expected:
                return values, seqs
    raise AssertionError("subscription ended")


async def test_agent_with_its_own_certificate_delivers_takes_receipts_and_commands(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    device = ScriptedDevice("oxi-1", "ble_plx_continuous")
    agent = make_agent(gateway_config(tmp_path, secure_broker, GATEWAY_A, pki[GATEWAY_A]), device)
    async with (
        client(secure_broker, pki[SERVER_INGEST]) as ingest,
        client(secure_broker, pki[SERVER_PUB]) as publisher,
    ):
        await ingest.subscribe(f"$share/wardwatch-ingest/{gateway_filter()}")
        async with running(agent):
            assert agent.uplink is not None
            await asyncio.wait_for(agent.uplink.connected_event.wait(), 10)
            sent = feed_vitals(device)
            received, seqs = await collect_observations(ingest, len(sent))
            # The server's receipt and then a command: the agent handles its subscriptions in order, so
            # the command's acknowledgement arriving proves the receipt was taken first.
            receipt = Receipt(gateway_id=GATEWAY_A, seqs=seqs, stored_at=datetime.now(UTC))
            await publisher.publish(gateway_topic(GATEWAY_A, "receipt"), encode(receipt))
            command = Command(
                message_id=new_message_id(),
                gateway_id=GATEWAY_A,
                patient_id="pt-1",
                issued_at=datetime.now(UTC),
                issued_by="nurse-1",
                body=SetOxygen(command="set_oxygen", on_oxygen=True),
            )
            await publisher.publish(gateway_topic(GATEWAY_A, "cmd", "set_oxygen"), encode(command))
            async with asyncio.timeout(15):
                async for message in ingest.messages():
                    if message.topic == gateway_topic(GATEWAY_A, "cmd-ack"):
                        ack = decode(CommandAck, message.payload)
                        break
            assert (ack.command_id, ack.ok) == (command.message_id, True)
            assert agent.uplink.state.receipted_messages == len(seqs)
            assert agent.uplink.state.refused_publishes == 0
    assert sorted(received) == sorted(sent)


async def test_agent_configured_with_another_gateways_id_is_refused_and_keeps_its_readings(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A stolen gateway A reconfigured to speak for home B: its certificate says A, so the broker makes
    it A (client id and username) and refuses every topic of B; nothing reaches the server."""
    device = ScriptedDevice("oxi-1", "ble_plx_continuous")
    agent = make_agent(gateway_config(tmp_path, secure_broker, GATEWAY_B, pki[GATEWAY_A]), device)
    refusals = RefusalCounter()
    uplink_log = logging.getLogger("edge_agent.uplink")
    uplink_log.addHandler(refusals)
    request.addfinalizer(lambda: uplink_log.removeHandler(refusals))
    async with client(secure_broker, pki[SERVER_INGEST]) as server:
        await server.subscribe(gateway_filter())
        async with running(agent):
            assert agent.uplink is not None and agent.outbox is not None
            feed_vitals(device)
            async with asyncio.timeout(15):
                # Each attempt: CONNECT (accepted, as gw-home-a), birth on B's status refused (0x87);
                # wait for two, so the refusal is not a one-off.
                await refusals.wait_for(2)
            error = agent.uplink.state.last_error
            assert error is not None and ("0x87" in error or "not authorized" in error.lower())
            assert not agent.uplink.connected_event.is_set()
            assert agent.uplink.state.published_messages == 0
        backlog = await _backlog(tmp_path)
        # The refused readings are still on the gateway's disk, not lost.
        assert backlog >= 3
        # Anything the impostor had managed to publish would be delivered before this sentinel.
        async with client(secure_broker, pki[GATEWAY_B]) as real_b:
            await real_b.publish(gateway_topic(GATEWAY_B, "event"), b"sentinel")
        async with asyncio.timeout(10):
            async for message in server.messages():
                assert (message.topic, message.payload) == (gateway_topic(GATEWAY_B, "event"), b"sentinel")
                break
    log = secure_broker.log_text()
    assert f"as {GATEWAY_A} " in log  # the broker named the connection after the certificate
    assert f"Denied PUBLISH from {GATEWAY_A}" in log


async def _backlog(tmp_path: Path) -> int:
    async with Outbox(tmp_path / "outbox.db", GATEWAY_B) as outbox:
        return (await outbox.backlog()).total
