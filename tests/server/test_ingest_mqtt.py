"""Ingest through a real Mosquitto into real databases: QoS 1 in, PUBACK only after the commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import pytest
from server_support import obs_topic, observation_batch, scalar, status, topic_for
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support.broker import MosquittoBroker

from edge_agent import protocol
from edge_agent.backoff import Backoff
from edge_agent.mqtt import MqttClient, MqttSettings
from server.ingest import Ingestor, IngestOutcome, OutcomeKind
from server.ingest_mqtt import IngestConsumer
from server.storage import StorageUnavailable


class Outcomes:
    """Collects outcomes and lets a test await a condition on them instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[IngestOutcome] = []
        self._changed = asyncio.Condition()

    async def __call__(self, outcome: IngestOutcome) -> None:
        async with self._changed:
            self.items.append(outcome)
            self._changed.notify_all()

    async def until(self, predicate: Callable[[list[IngestOutcome]], bool]) -> None:
        async with asyncio.timeout(20), self._changed:
            await self._changed.wait_for(lambda: predicate(self.items))


def mqtt_settings(broker: MosquittoBroker, client_id: str) -> MqttSettings:
    return MqttSettings.from_url(broker.url, client_id=client_id)


async def publish_all(broker: MosquittoBroker, gateway_id: str, messages: list[tuple[str, bytes]]) -> None:
    async with MqttClient(mqtt_settings(broker, f"{gateway_id}-agent")) as gateway:
        for topic, payload in messages:
            await gateway.publish(topic, payload, qos=1)


async def test_messages_from_the_broker_are_stored_and_acknowledged(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    outcomes = Outcomes()
    consumer = IngestConsumer(
        ingestor,
        mqtt_settings(broker, f"server-{gateway_id}"),
        share_group=f"group-{gateway_id}",
        on_outcome=outcomes,
    )
    batches = [observation_batch(gateway_id, seq, count=2) for seq in range(20)]
    birth = status(gateway_id, "birth", session=1, sent=0)
    traffic = [(topic_for(birth), protocol.encode(birth))]
    traffic += [(obs_topic(gateway_id), protocol.encode(b)) for b in batches]
    traffic += [(obs_topic(gateway_id), b"{broken")]

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.connected.wait(), 10)
        await publish_all(broker, gateway_id, traffic)
        await outcomes.until(lambda items: len(items) == len(traffic))
        await asyncio.wait_for(consumer.wait_acknowledged(len(traffic)), 10)
        task.cancel()

    kinds = [o.kind for o in outcomes.items]
    assert kinds.count(OutcomeKind.STORED) == 21
    assert kinds.count(OutcomeKind.DEAD_LETTER) == 1
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 40
    assert await scalar(sessions, "SELECT count(*) FROM dead_letters") == 1
    assert await scalar(sessions, "SELECT online FROM gateways") in (True, 1)
    assert consumer.acknowledged == len(traffic)


async def _all_acknowledged(consumers: list[IngestConsumer], total: int) -> None:
    while sum(c.acknowledged for c in consumers) < total:
        waits = [asyncio.create_task(c.wait_acknowledged(c.acknowledged + 1)) for c in consumers]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


class FailsOnce:
    """A real Ingestor whose database is 'down' for the first delivery of one message."""

    def __init__(self, inner: Ingestor, failing_payload: bytes) -> None:
        self.inner = inner
        self.failing = failing_payload
        self.failed = False

    async def ingest_many(
        self, messages: Sequence[tuple[str, bytes]], received_at: datetime | None = None
    ) -> list[IngestOutcome]:
        if not self.failed and any(payload == self.failing for _topic, payload in messages):
            self.failed = True
            raise StorageUnavailable("database restarting", attempts=3)
        return await self.inner.ingest_many(messages, received_at)


async def test_message_not_stored_is_not_acknowledged_and_comes_back(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    batches = [observation_batch(gateway_id, seq, count=1) for seq in range(6)]
    payloads = [protocol.encode(b) for b in batches]
    flaky = FailsOnce(ingestor, payloads[2])
    outcomes = Outcomes()
    consumer = IngestConsumer(
        flaky,
        mqtt_settings(broker, f"server-{gateway_id}"),
        share_group=None,
        concurrency=1,
        on_outcome=outcomes,
        backoff=Backoff(initial_s=0.05, maximum_s=0.05),
    )

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.connected.wait(), 10)
        await publish_all(broker, gateway_id, [(obs_topic(gateway_id), p) for p in payloads])
        stored_ids = {b.message_id for b in batches}

        def all_stored(items: list[IngestOutcome]) -> bool:
            done = {o.message.message_id for o in items if o.kind is OutcomeKind.STORED and o.message}  # type: ignore[attr-defined]
            return done == stored_ids

        await outcomes.until(all_stored)
        task.cancel()

    assert flaky.failed
    assert consumer.reconnects >= 1
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 6  # each exactly once
    assert await scalar(sessions, "SELECT count(DISTINCT message_id) FROM observations") == 6


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # only this backend has it
async def test_two_workers_share_the_subscription(
    broker: MosquittoBroker,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
    backend: str,
) -> None:
    from server.storage import create_engine, session_factory

    engines = [create_engine(database_url) for _ in range(2)]
    outcomes = Outcomes()
    consumers = [
        IngestConsumer(
            Ingestor(session_factory(engine)),
            mqtt_settings(broker, f"worker-{n}-{gateway_id}"),
            share_group=f"group-{gateway_id}",
            on_outcome=outcomes,
        )
        for n, engine in enumerate(engines)
    ]
    batches = [observation_batch(gateway_id, seq, count=2) for seq in range(40)]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c.run(), name=f"worker {n}") for n, c in enumerate(consumers)]
            for consumer in consumers:
                await asyncio.wait_for(consumer.connected.wait(), 10)
            await publish_all(
                broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(b)) for b in batches]
            )
            await outcomes.until(lambda items: len(items) == len(batches))
            await asyncio.wait_for(_all_acknowledged(consumers, len(batches)), 10)
            for task in tasks:
                task.cancel()
    finally:
        for engine in engines:
            await engine.dispose()

    assert {o.kind for o in outcomes.items} == {OutcomeKind.STORED}
    assert all(c.acknowledged > 0 for c in consumers)  # both workers took a share
    assert sum(c.acknowledged for c in consumers) == len(batches)
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 80
    assert await scalar(sessions, "SELECT count(*) FROM sequence_gaps WHERE filled_at IS NULL") == 0


class RecordsBatches:
    def __init__(self, inner: Ingestor) -> None:
        self.inner = inner
        self.sizes: list[int] = []

    async def ingest_many(
        self, messages: Sequence[tuple[str, bytes]], received_at: datetime | None = None
    ) -> list[IngestOutcome]:
        self.sizes.append(len(messages))
        return await self.inner.ingest_many(messages, received_at)


async def test_a_backlog_is_stored_in_batches(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    """Messages queued in the server's session while it was away arrive in a burst: they are stored
    several per transaction, each still exactly once and acknowledged."""
    recorder = RecordsBatches(ingestor)
    outcomes = Outcomes()
    consumer = IngestConsumer(
        recorder,
        mqtt_settings(broker, f"server-{gateway_id}"),
        share_group=None,
        concurrency=2,
        max_batch=16,
        on_outcome=outcomes,
    )
    async with asyncio.TaskGroup() as group:  # first visit: creates the persistent session
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.connected.wait(), 10)
        task.cancel()

    batches = [observation_batch(gateway_id, seq, count=1) for seq in range(60)]
    await publish_all(broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(b)) for b in batches])

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await outcomes.until(lambda items: len(items) == len(batches))
        await asyncio.wait_for(consumer.wait_acknowledged(len(batches)), 10)
        task.cancel()

    assert sum(recorder.sizes) == len(batches)
    assert max(recorder.sizes) > 1
    assert max(recorder.sizes) <= 16
    assert {o.kind for o in outcomes.items} == {OutcomeKind.STORED}
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 60


async def test_the_puback_follows_the_commit_not_the_handlers_which_are_bounded(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    """A slow outcome handler (the escalation engine on a burst) must not hold stored messages in the
    broker's in-flight window; it is bounded instead: with ``max_pending`` batches waiting for their
    handler the consumer takes nothing more from the broker."""
    release = asyncio.Event()
    handled: list[int] = []

    async def slow_handler(outcomes: list[IngestOutcome]) -> None:
        await release.wait()
        handled.append(len(outcomes))

    consumer = IngestConsumer(
        ingestor,
        mqtt_settings(broker, f"server-{gateway_id}"),
        share_group=None,
        concurrency=1,
        max_batch=1,
        max_pending=2,
        on_outcomes=slow_handler,
    )
    batches = [observation_batch(gateway_id, seq, count=1) for seq in range(5)]
    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.connected.wait(), 10)
        await publish_all(broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(b)) for b in batches])
        await asyncio.wait_for(consumer.wait_acknowledged(2), 10)  # acknowledged with no handler done
        assert handled == []
        # the bound: two batches wait for their handler, the third message stays with the broker
        assert await scalar(sessions, "SELECT count(*) FROM observations") == 2
        assert consumer.acknowledged == 2
        release.set()
        await asyncio.wait_for(consumer.wait_acknowledged(5), 10)
        task.cancel()
    assert sum(handled) >= 3  # batch 5 was taken once a third handler finished; later ones may be cut off
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 5


class HoldsFirstBatch:
    """Records each batch's gateways; the first batch is stored only once ``release`` is set."""

    def __init__(self, inner: Ingestor) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []
        self.first_started = asyncio.Event()
        self.release = asyncio.Event()

    async def ingest_many(
        self, messages: Sequence[tuple[str, bytes]], received_at: datetime | None = None
    ) -> list[IngestOutcome]:
        self.batches.append([protocol.parse_gateway_topic(topic).gateway_id for topic, _ in messages])
        if len(self.batches) == 1:
            self.first_started.set()
            await self.release.wait()
        return await self.inner.ingest_many(messages, received_at)


async def test_a_gateway_with_a_batch_being_stored_waits_for_it_others_do_not_and_pubacks_keep_order(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    """While a gateway's message is being stored, its next message is not put in a concurrent batch (it
    would wait there for the first one's row lock, holding its batch's other gateways); another
    gateway's message is stored meanwhile, but acknowledged only after the earlier arrivals."""
    other = f"{gateway_id}-b"
    gate = HoldsFirstBatch(ingestor)
    outcomes = Outcomes()
    consumer = IngestConsumer(
        gate,
        mqtt_settings(broker, f"server-{gateway_id}"),
        share_group=None,
        concurrency=2,
        max_batch=16,
        on_outcome=outcomes,
    )
    first, second = observation_batch(gateway_id, 0, count=1), observation_batch(gateway_id, 1, count=1)
    elsewhere = observation_batch(other, 0, count=1)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.connected.wait(), 10)
        await publish_all(broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(first))])
        await asyncio.wait_for(gate.first_started.wait(), 10)
        await publish_all(broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(second))])
        await publish_all(broker, other, [(obs_topic(other), protocol.encode(elsewhere))])

        await outcomes.until(lambda items: len(items) == 1)  # the other gateway's message, stored
        assert outcomes.items[0].message.gateway_id == other  # type: ignore[union-attr]
        assert gate.batches == [[gateway_id], [other]]  # the second message of the first gateway waits
        assert consumer.acknowledged == 0  # the first arrival is not stored yet: no PUBACK may pass it

        gate.release.set()
        await asyncio.wait_for(consumer.wait_acknowledged(3), 10)
        task.cancel()
    assert gate.batches == [[gateway_id], [other], [gateway_id]]
    assert [o.kind for o in outcomes.items] == [OutcomeKind.STORED] * 3
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 3


async def test_a_restarted_consumer_with_a_backlog_beyond_its_receive_maximum_stores_it(
    broker: MosquittoBroker,
    ingestor: Ingestor,
    sessions: async_sessionmaker[AsyncSession],
    gateway_id: str,
) -> None:
    """A worker back within its session expiry finds more queued for it than its receive maximum: the
    broker hands that over before the SUBACK of the consumer's re-subscription, and the consumer must
    still get to storing it (it hung here, subscribed but never consuming, before the MQTT client
    read on for the SUBACK)."""
    settings = MqttSettings.from_url(broker.url, client_id=f"server-{gateway_id}", receive_maximum=10)
    consumer = IngestConsumer(ingestor, settings, share_group=None, max_batch=4)
    async with MqttClient(consumer.mqtt) as first_run:  # the session and its subscriptions
        await first_run.subscribe(*consumer.filters, qos=1)
    batches = [observation_batch(gateway_id, seq, count=1) for seq in range(40)]
    await publish_all(broker, gateway_id, [(obs_topic(gateway_id), protocol.encode(b)) for b in batches])

    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(), name="ingest consumer")
        await asyncio.wait_for(consumer.wait_acknowledged(len(batches)), 20)
        task.cancel()

    assert consumer.reconnects == 0
    assert await scalar(sessions, "SELECT count(*) FROM observations") == 40
