"""The uplink against a real Mosquitto: outages, refusals, birth/heartbeat, commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

from support.broker import MosquittoBroker, free_port

from edge_agent.backoff import Backoff
from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.outbox import Outbox
from edge_agent.protocol import (
    Command,
    CommandAck,
    GatewayStatus,
    Observation,
    ObservationBatch,
    Receipt,
    SetSpo2Scale,
    decode,
    decode_gateway_message,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
)
from edge_agent.uplink import Uplink, UplinkOptions


def observation(index: int) -> Observation:
    return Observation.model_validate(
        {
            "patient_id": "pt-1",
            "vital": "heart_rate",
            "value": index % 300,
            "unit": "/min",
            "measured_at": datetime.fromtimestamp(1_800_000_000 + index, UTC),
            "time_source": "device",
            "device_id": "hr-1",
        }
    )


def fast_options(**overrides: object) -> UplinkOptions:
    options = UplinkOptions(
        heartbeat_interval_s=0.5,
        batch_delay_s=0.01,
        refused_retry_s=0.2,
        backoff=Backoff(initial_s=0.05, maximum_s=0.2),
    )
    for name, value in overrides.items():
        setattr(options, name, value)
    return options


@contextlib.asynccontextmanager
async def running_uplink(
    broker: MosquittoBroker, outbox: Outbox, gateway_id: str, commands: object = None, **options: object
) -> AsyncIterator[Uplink]:
    async def accept(command: Command) -> tuple[bool, str]:
        return True, f"applied {command.body.command}"

    uplink = Uplink(
        outbox=outbox,
        gateway_id=gateway_id,
        software_version="test",
        connection=lambda will: MqttSettings.from_url(broker.url, client_id=gateway_id, will=will),
        commands=commands or accept,  # type: ignore[arg-type]
        options=fast_options(**options),
    )
    task = asyncio.create_task(uplink.run(), name="uplink-under-test")
    try:
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def collect_observations(
    collector: MqttClient, expected: int
) -> tuple[list[int], list[float], set[str]]:
    seqs: list[int] = []
    values: list[float] = []
    ids: set[str] = set()
    async for message in collector.messages():
        if not message.topic.endswith("/obs"):
            continue
        _, batch = decode_gateway_message(message.topic, message.payload)
        assert isinstance(batch, ObservationBatch)
        if str(batch.message_id) in ids:
            continue  # a retransmission: the server deduplicates exactly like this
        ids.add(str(batch.message_id))
        seqs.append(batch.seq)
        values += [o.value for o in batch.observations]
        if len(values) >= expected:
            break
    return seqs, values, ids


async def test_broker_outage_loses_nothing_and_keeps_sequence_order(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, gateway_id: str
) -> None:
    broker = broker_factory(persistence=True)
    collector_settings = MqttSettings.from_url(broker.url, client_id="collector", clean_start=False)
    async with MqttClient(collector_settings) as collector:
        await collector.subscribe(gateway_filter(gateway_id=gateway_id))
    async with (
        Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
        running_uplink(broker, outbox, gateway_id),
    ):
        await outbox.put_observations([observation(i) for i in range(0, 500)])
        while (await outbox.backlog()).unsent:
            await outbox.wait_for_acknowledgement()
        broker.stop()  # the broker goes away for a while
        for start in range(500, 3000, 250):
            await outbox.put_observations([observation(i) for i in range(start, start + 250)])
        assert (await outbox.backlog()).total > 0
        broker.start()  # ... and comes back with its persisted sessions
        async with MqttClient(collector_settings) as collector:
            seqs, values, _ = await asyncio.wait_for(collect_observations(collector, 3000), 30)
    assert values == [float(i % 300) for i in range(3000)]
    assert seqs == sorted(seqs)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_refused_publishes_keep_their_rows_and_surface_the_error(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, gateway_id: str
) -> None:
    acl = tmp_path / "acl"
    acl.write_text(
        "pattern readwrite wardwatch/v1/gw/%c/status\npattern read wardwatch/v1/gw/%c/cmd/#\ntopic read #\n"
    )
    port = free_port()
    broker = broker_factory(
        port=port, listener_config=f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
    )
    async with MqttClient(MqttSettings.from_url(broker.url, client_id="watcher")) as watcher:
        await watcher.subscribe(gateway_topic(gateway_id, "status"))
        async with (
            Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
            running_uplink(broker, outbox, gateway_id) as uplink,
        ):
            await outbox.put_observations([observation(i) for i in range(10)])
            async for message in watcher.messages():
                status = decode(GatewayStatus, message.payload)
                if status.last_error:
                    break
            backlog = await outbox.backlog()
            assert uplink.state.refused_publishes >= 1
    assert "refused" in (status.last_error or "")
    assert "0x87" in (status.last_error or "")
    assert backlog.messages == 1  # formed, refused, kept: nothing lost
    assert status.backlog >= 1


async def test_birth_then_heartbeats_with_increasing_sessions(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    sessions = []
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"w-{gateway_id}")) as watcher:
        await watcher.subscribe(gateway_topic(gateway_id, "status"))
        async with Outbox(tmp_path / "outbox.db", gateway_id) as outbox:
            for _ in range(2):
                async with running_uplink(broker, outbox, gateway_id):
                    states = []
                    async for message in watcher.messages():
                        status = decode(GatewayStatus, message.payload)
                        states.append(status.state)
                        if status.state == "heartbeat":
                            sessions.append(status.session)
                            break
                    assert states[0] in ("birth", "death")
                    assert "birth" in states
    assert sessions[1] > sessions[0]


async def test_commands_are_applied_and_acknowledged_and_garbage_is_refused(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    applied: list[Command] = []

    async def apply(command: Command) -> tuple[bool, str]:
        applied.append(command)
        return True, "SpO2 scale set to 2"

    command = Command(
        message_id=new_message_id(),
        gateway_id=gateway_id,
        patient_id="pt-1",
        issued_at=datetime.now(UTC),
        issued_by="nurse-1",
        body=SetSpo2Scale(command="set_spo2_scale", scale=2),
    )
    async with (
        MqttClient(MqttSettings.from_url(broker.url, client_id=f"srv-{gateway_id}")) as server,
        Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
        running_uplink(broker, outbox, gateway_id, commands=apply) as uplink,
    ):
        await server.subscribe(gateway_topic(gateway_id, "cmd-ack"))
        await asyncio.wait_for(uplink.connected_event.wait(), 10)
        topic = gateway_topic(gateway_id, "cmd", "set_spo2_scale")
        await server.publish(topic, encode(command))
        acks = server.messages()
        ack = decode(CommandAck, (await asyncio.wait_for(anext(acks), 10)).payload)
        assert ack.ok
        assert ack.command_id == command.message_id
        bad = json.dumps({"message_id": str(command.message_id), "body": {"command": "set_spo2_scale"}})
        await server.publish(topic, bad.encode())
        nack = decode(CommandAck, (await asyncio.wait_for(anext(acks), 10)).payload)
    assert [c.body for c in applied] == [command.body]
    assert not nack.ok
    assert "rejected" in nack.detail
    assert nack.command_id == command.message_id


async def serve_receipts(server: MqttClient, gateway_id: str, received: list[int]) -> None:
    """A stand-in for the server: stores (remembers) each batch and sends its receipt."""
    async for message in server.messages():
        _, batch = decode_gateway_message(message.topic, message.payload)
        assert isinstance(batch, ObservationBatch)
        received += [int(o.value) for o in batch.observations]
        receipt = Receipt(gateway_id=gateway_id, seqs=[batch.seq], stored_at=datetime.now(UTC))
        await server.publish(gateway_topic(gateway_id, "receipt"), encode(receipt))


async def publish_unheard(uplink: Uplink, outbox: Outbox, count: int) -> None:
    """Readings 0..count-1 published while nobody listens: the broker acknowledges and drops them (as a
    crashed broker would lose them), so only the gateway's re-send can deliver them."""
    await asyncio.wait_for(uplink.connected_event.wait(), 10)
    await outbox.put_observations([observation(i) for i in range(count)])
    while (await outbox.backlog()).unsent:
        await outbox.wait_for_acknowledgement()


async def test_messages_stay_until_the_servers_receipt_and_lost_ones_are_sent_again(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    received: list[int] = []
    async with (
        Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
        running_uplink(broker, outbox, gateway_id, receipt_timeout_s=0.5) as uplink,
    ):
        await publish_unheard(uplink, outbox, 50)
        kept = await outbox.backlog()
        assert kept.awaiting_receipt >= 1
        assert kept.total == kept.awaiting_receipt
        async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"srv-{gateway_id}")) as server:
            await server.subscribe(gateway_topic(gateway_id, "obs"))
            receipts = asyncio.create_task(serve_receipts(server, gateway_id, received))
            await outbox.put_observations([observation(i) for i in range(50, 80)])
            while (await outbox.backlog()).total:
                await outbox.wait_for_acknowledgement()
            receipts.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receipts
    assert sorted(set(received)) == list(range(80))  # the dropped first 50 came again
    assert uplink.state.receipted_messages >= 2


async def test_lost_messages_are_sent_again_while_readings_keep_coming(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    """A busy gateway (a device producing without pause) must not starve its re-sends."""
    received: list[int] = []
    async with (
        Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
        running_uplink(broker, outbox, gateway_id, receipt_timeout_s=0.5) as uplink,
    ):
        await publish_unheard(uplink, outbox, 50)

        async def device() -> None:
            for index in range(50, 100_000):
                await outbox.put_observations([observation(index)])
                await asyncio.sleep(0)  # flat out: there is always a new reading

        async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"srv-{gateway_id}")) as server:
            await server.subscribe(gateway_topic(gateway_id, "obs"))
            receipts = asyncio.create_task(serve_receipts(server, gateway_id, received))
            producing = asyncio.create_task(device())
            async with asyncio.timeout(30):
                while not set(range(50)) <= set(received):
                    await outbox.wait_for_acknowledgement()
            still_producing = not producing.done()
            for task in (producing, receipts):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert still_producing
    assert max(received) >= 50  # new readings flowed meanwhile


async def test_heartbeats_wait_on_the_clock_the_options_give(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    """A simulated home at speed F passes its clock's sleep: a 30 s interval then passes in 30/F real s."""
    waits: list[float] = []
    start = time.time()

    def fast_clock() -> float:  # a simulated clock running 1,000 times faster than real time
        return start + (time.time() - start) * 1000

    async def fast_sleep(seconds: float) -> None:  # and its sleep
        waits.append(seconds)
        await asyncio.sleep(seconds / 1000)

    beats = 0
    async with (
        MqttClient(MqttSettings.from_url(broker.url, client_id=f"watch-{gateway_id}")) as watcher,
        Outbox(tmp_path / "outbox.db", gateway_id) as outbox,
    ):
        await watcher.subscribe(gateway_topic(gateway_id, "status"))
        async with running_uplink(
            broker, outbox, gateway_id, heartbeat_interval_s=30.0, clock=fast_clock, sleep=fast_sleep
        ):
            async with asyncio.timeout(10):  # at speed 1 the third heartbeat would take 90 s
                async for message in watcher.messages():
                    status = decode(GatewayStatus, message.payload)
                    if status.state == "heartbeat":
                        beats += 1
                        if beats == 3:
                            break
    assert beats == 3
    # each wait is what is left of the 30 s interval on that clock (a fixed schedule)
    assert all(0 <= wait <= 30.0 for wait in waits[:3]), waits
