"""The MQTT side of ingest: subscribe to every gateway's topics, store each message, then PUBACK.

One :class:`IngestConsumer` is one server worker's connection to the broker. It subscribes with QoS 1 to
``$share/<group>/wardwatch/v1/gw/+/<channel>`` (several workers with the same group split the traffic)
with a persistent session and manual acknowledgement, and hands each message to the
:class:`~server.ingest.Ingestor`. The PUBACK goes out only after ``ingest`` returned, i.e. after the
message's transaction committed (or its dead letter was written); acknowledgements leave in the order the
messages arrived (as MQTT requires). Messages that are already waiting are stored together, up to
``max_batch`` in one transaction (``Ingestor.ingest_many``: one commit for many), and up to
``concurrency`` such transactions run at once, never two with messages of the same gateway: a message
whose gateway has a batch being stored waits for the next batch (in the database it would wait for that
batch's commit anyway, holding the locks of its own batch's other gateways meanwhile).

When storage is unavailable (``StorageUnavailable``) the consumer drops the connection without
acknowledging what it has not stored; the broker keeps those messages in the session and delivers them
again after the reconnect (capped, jittered backoff). A message stored but not yet acknowledged when the
connection drops comes back too and is recognised as a duplicate.

``on_outcomes`` (the outcomes of one transaction, e.g. for the escalation engine, which decides
different subjects concurrently) and ``on_outcome`` (one outcome at a time) run after the commit. The
PUBACK does not wait for them: a message is the broker's to forget once it is stored, and holding the
acknowledgement for the engine's decisions would let them fill the broker's in-flight window (the
receive maximum) and queue every later message in the broker, however idle the database. They are
bounded instead: at most ``max_pending`` batches are between arrival and the end of their handlers, and
the consumer takes no more from the broker until one finishes. A failure in a handler is logged and does
not stop ingest; the outcome is not delivered again (a redelivered message is a DUPLICATE), so a consumer
of outcomes that must not miss one re-reads stored state at start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Protocol

from edge_agent.backoff import Backoff
from edge_agent.mqtt import ConnectFailed, Message, MqttClient, MqttError, MqttSettings
from server.ingest import IngestOutcome, subscription_filters, utc_now
from server.storage.errors import StorageUnavailable

logger = logging.getLogger(__name__)


class MessageIngest(Protocol):
    """What the consumer needs of an ingestor (``server.ingest.Ingestor`` is one)."""

    async def ingest_many(
        self, messages: Sequence[tuple[str, bytes]], received_at: datetime | None = None
    ) -> list[IngestOutcome]: ...


OutcomeHandler = Callable[[IngestOutcome], Awaitable[None]]
BatchHandler = Callable[[list[IngestOutcome]], Awaitable[None]]


class IngestConsumer:
    """Consumes gateway traffic from the broker into the database until cancelled."""

    def __init__(
        self,
        ingestor: MessageIngest,
        mqtt: MqttSettings,
        *,
        share_group: str | None,
        concurrency: int = 8,
        max_batch: int = 100,
        max_pending: int = 32,
        on_outcome: OutcomeHandler | None = None,
        on_outcomes: BatchHandler | None = None,
        clock: Callable[[], datetime] = utc_now,
        backoff: Backoff | None = None,
    ) -> None:
        if concurrency < 1 or max_batch < 1 or max_pending < concurrency:
            raise ValueError("concurrency and max_batch must be at least 1, max_pending at least concurrency")
        # Redelivery after a failure depends on a persistent session and on acknowledging ourselves.
        self.mqtt = replace(mqtt, manual_ack=True, clean_start=False)
        self.filters = subscription_filters(share_group)
        self._ingestor = ingestor
        self._concurrency = concurrency
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._on_outcome = on_outcome
        self._on_outcomes = on_outcomes
        self._clock = clock
        self._backoff = backoff or Backoff(initial_s=0.5, maximum_s=30.0)
        self.connected = asyncio.Event()
        """Set while subscribed (tests and health checks wait on it)."""
        self.acknowledged = 0
        """Messages acknowledged to the broker since start-up."""
        self.reconnects = 0
        self._progress = asyncio.Event()

    async def wait_acknowledged(self, count: int) -> None:
        """Return once at least ``count`` messages have been acknowledged in total."""
        while self.acknowledged < count:
            self._progress.clear()
            await self._progress.wait()

    async def run(self) -> None:
        """Connect, consume, and reconnect after failures, until the task is cancelled."""
        while True:
            try:
                await self.run_connection()
            except ConnectFailed as exc:
                logger.warning("cannot reach the broker at %s:%d: %s", self.mqtt.host, self.mqtt.port, exc)
            except MqttError as exc:
                logger.warning("broker connection lost: %s", exc)
            except StorageUnavailable as exc:
                logger.error("database unavailable, disconnecting so the broker redelivers: %s", exc)
            self.reconnects += 1
            await asyncio.sleep(self._backoff.next_delay())

    async def run_connection(self) -> None:
        """One connection: subscribe and store messages until it ends; raises why it ended."""
        async with MqttClient(self.mqtt) as client:
            await client.subscribe(*self.filters, qos=1)
            logger.info("ingest subscribed to %s", ", ".join(self.filters))
            self.connected.set()
            try:
                await self._consume(client)
            finally:
                self.connected.clear()

    async def _consume(self, client: MqttClient) -> None:
        # Arrivals wait in ``inbox`` (None there only wakes the batcher: a batch ended), then in ``held``
        # until a batch takes them; ``order`` keeps every unacknowledged one in arrival order for the PUBACKs.
        inbox: asyncio.Queue[_Arrival | None] = asyncio.Queue()  # bounded by the receive maximum
        held: deque[_Arrival] = deque()
        order: deque[_Arrival] = deque()
        busy: dict[str, int] = {}  # gateway -> its messages in batches being stored
        slots = asyncio.Semaphore(self._concurrency)  # transactions at once
        pending = asyncio.Semaphore(self._max_pending)  # batches not yet through their handlers
        failed = False

        async def receive() -> None:
            async for message in client.messages():
                arrival = _Arrival(message, _gateway_of(message.topic))
                order.append(arrival)
                inbox.put_nowait(arrival)

        def take() -> list[_Arrival]:
            """The next batch: waiting messages in arrival order, up to max_batch, except those of a
            gateway with a batch being stored. That batch holds the gateway's row lock until it commits:
            a second batch would wait for it inside the database while holding the locks of all its
            other gateways, and every batch touching one of those would queue behind it in turn. Left
            here, such a message keeps its place in its gateway's order and goes in the next batch."""
            batch: list[_Arrival] = []
            left: list[_Arrival] = []
            while held and len(batch) < self._max_batch:
                arrival = held.popleft()
                (left if arrival.gateway in busy else batch).append(arrival)
            held.extendleft(reversed(left))
            return batch

        async def next_batch() -> list[_Arrival]:
            while True:
                while not inbox.empty():
                    if (arrival := inbox.get_nowait()) is not None:
                        held.append(arrival)
                batch = take()
                if batch:
                    return batch
                if (arrival := await inbox.get()) is not None:  # a message, or a batch ended
                    held.append(arrival)

        def settle(batch: list[_Arrival], stored: asyncio.Future[None]) -> None:
            nonlocal failed
            for arrival in batch:
                if arrival.gateway is not None:
                    busy[arrival.gateway] -= 1
                    if not busy[arrival.gateway]:
                        del busy[arrival.gateway]
            inbox.put_nowait(None)  # messages held for these gateways may go now
            if failed or stored.cancelled():
                failed = True  # nothing after a failure is acknowledged on this connection
                return
            for arrival in batch:
                arrival.stored = True
            acknowledged = 0
            while order and order[0].stored:  # PUBACKs in arrival order, as MQTT requires
                order.popleft().message.ack()
                acknowledged += 1
            if acknowledged:
                self.acknowledged += acknowledged
                self._progress.set()

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(receive(), name=f"mqtt receive {self.mqtt.client_id}")
                loop = asyncio.get_running_loop()
                while True:
                    await pending.acquire()
                    await slots.acquire()
                    batch = await next_batch()
                    for arrival in batch:
                        if arrival.gateway is not None:
                            busy[arrival.gateway] = busy.get(arrival.gateway, 0) + 1
                    stored: asyncio.Future[None] = loop.create_future()
                    stored.add_done_callback(partial(settle, batch))
                    messages = [arrival.message for arrival in batch]
                    group.create_task(
                        self._store(messages, stored, slots, pending),
                        name=f"ingest {len(batch)} from {batch[0].message.topic}",
                    )
        except ExceptionGroup as group_error:
            # Report the root cause: a storage failure first, then the broker connection.
            for kind in (StorageUnavailable, MqttError):
                matched = group_error.subgroup(kind)
                if matched is not None:
                    raise matched.exceptions[0] from group_error
            raise

    async def _store(
        self,
        batch: list[Message],
        stored: asyncio.Future[None],
        slots: asyncio.Semaphore,
        pending: asyncio.Semaphore,
    ) -> None:
        try:
            try:
                outcomes = await self._ingestor.ingest_many(
                    [(message.topic, message.payload) for message in batch], self._clock()
                )
            except BaseException:
                stored.cancel()  # not stored: neither this batch nor any after it is acknowledged
                raise
            finally:
                slots.release()
            stored.set_result(None)  # acknowledged now (in arrival order), whatever the handlers do
            await self._handle(batch, outcomes)
        finally:
            pending.release()

    async def _handle(self, batch: list[Message], outcomes: list[IngestOutcome]) -> None:
        if self._on_outcomes is not None:
            try:
                await self._on_outcomes(outcomes)
            except Exception:
                logger.exception(
                    "outcome handler failed for %d messages from %.200r", len(batch), batch[0].topic
                )
        if self._on_outcome is None:
            return
        for outcome in outcomes:
            try:
                await self._on_outcome(outcome)
            except Exception:
                logger.exception("outcome handler failed for a message on %.200r", outcome.topic)


@dataclass(slots=True)
class _Arrival:
    """A message between its arrival and its PUBACK."""

    message: Message
    gateway: str | None
    """The gateway id in its topic (``wardwatch/v1/gw/{id}/...``), None for another topic."""
    stored: bool = False


def _gateway_of(topic: str) -> str | None:
    """Only to keep one gateway's messages out of concurrent batches: ingest validates the topic."""
    levels = topic.split("/")
    return levels[-2] if len(levels) == 5 and levels[2] == "gw" else None
